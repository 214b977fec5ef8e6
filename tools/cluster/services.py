"""The control machine's services: PostgreSQL (metadata database), Redis (Celery broker) and an
S3-protocol object store (the container-log archive), each on the machine's LAN address.

They are Debian's ``postgresql`` and ``redis-server`` (installed by ``./run``) and ``moto``'s
S3 server (a test dependency; a real deployment uses its own S3 or a compatible store). Each
runs as a program of :class:`~tools.processes.Processes` and keeps its data under the
topology's work directory, which goes with it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tools.cluster.lan import Lan
from tools.local_airflow import venv_env
from tools.polling import eventually
from tools.processes import Processes

POSTGRES_PORT = 5432
REDIS_PORT = 6379
S3_PORT = 5000
SERVICES = ("postgres", "redis", "s3")
"""The names these services run under in :class:`~tools.processes.Processes`: stopped after
the programs that use them."""


def wait_port(ip: str, port: int, procs: Processes, timeout: float = 60) -> None:
    """Wait until ``ip:port`` accepts a connection; fail early when a program has died."""
    def answers() -> bool:
        procs.check_alive()
        try:
            with socket.create_connection((ip, port), timeout=1):
                return True
        except OSError:
            return False

    eventually(answers, timeout, what=f"something answering on {ip}:{port}")


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [p for p in [shutil.which(name)] if p]
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} is missing: install Debian's `postgresql` (./run does).")
    return found[-1]


def start_postgres(lan: Lan, machine: str, procs: Processes, workdir: Path, password: str) -> str:
    """A fresh PostgreSQL cluster on ``machine`` with a database and user ``airflow``; returns
    the SQLAlchemy URL the other machines use. It runs as the ``postgres`` user, which owns its
    data directory; connections from the LAN need the password (scram-sha-256)."""
    m = lan[machine]
    data, sock = workdir / "pgdata", workdir / "pgsock"
    for d in (data, sock):
        d.mkdir(parents=True)
        shutil.chown(d, "postgres", "postgres")
    pwfile = workdir / "pgpass"
    pwfile.write_text(password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    subprocess.run([*as_postgres, _postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}"], check=True, capture_output=True)
    subnet = m.ip.rsplit(".", 1)[0] + ".0/24"
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {subnet} scram-sha-256\n")
    procs.start("postgres", [*lan.wrap(machine), *as_postgres, _postgres_bin("postgres"), "-D", str(data),
                             "-c", f"listen_addresses={m.ip}", "-c", f"unix_socket_directories={sock}",
                             "-c", "max_connections=300", "-p", str(POSTGRES_PORT)])
    wait_port(m.ip, POSTGRES_PORT, procs)
    sql = f"CREATE USER airflow PASSWORD '{password}'; CREATE DATABASE airflow OWNER airflow;"
    for statement in sql.split("; "):
        subprocess.run(["psql", "-h", m.ip, "-p", str(POSTGRES_PORT), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                        "-c", statement], check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password})
    return f"postgresql+psycopg2://airflow:{password}@{m.name}:{POSTGRES_PORT}/airflow"


def start_redis(lan: Lan, machine: str, procs: Processes, workdir: Path, password: str) -> str:
    """Redis on ``machine`` with a password and no persistence; returns the broker URL."""
    m = lan[machine]
    (workdir / "redis").mkdir()
    procs.start("redis", [*lan.wrap(machine), "redis-server", "--bind", m.ip, "--port", str(REDIS_PORT),
                          "--requirepass", password, "--save", "", "--appendonly", "no",
                          "--dir", str(workdir / "redis")])
    wait_port(m.ip, REDIS_PORT, procs)
    return f"redis://:{password}@{m.name}:{REDIS_PORT}/0"


def start_s3(lan: Lan, machine: str, procs: Processes) -> str:
    """An S3-protocol server on ``machine`` (moto, objects in memory); returns its endpoint."""
    m = lan[machine]
    procs.start("s3", [*lan.wrap(machine), sys.executable, "-m", "moto.server", "-H", m.ip, "-p", str(S3_PORT)],
                env={**os.environ, **venv_env()})
    wait_port(m.ip, S3_PORT, procs)
    return f"http://{m.name}:{S3_PORT}"
