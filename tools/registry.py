"""A private image registry for tests: Distribution's ``docker-registry`` on 127.0.0.1, or on an
address inside a network namespace of the caller's own.

Trainer images come from private registries that ask for a login, so pulls with and without
credentials are tested against a real one: TLS with a certificate from :mod:`tools.pki`, and
htpasswd logins with a bcrypt hash (the only kind Distribution accepts). The port is chosen by
the kernel and read back from the registry's log, so parallel registries never collide. Images
are stored in the registry's own temporary directory; the registry is stopped by the pid it was
started with, and that directory is removed.

Engines need no CA for it: dockerd always counts loopback registries (127.0.0.0/8) as insecure,
trying HTTPS without verifying the certificate and then plain HTTP, and reads
``/etc/docker/certs.d`` only for the others. A registry on another address (``ip``, served in
the namespace ``netns``, see :mod:`tools.netns`) is verified by every engine with the CA in
``/etc/docker/certs.d/ADDRESS/ca.crt``: with ``trusted=True`` the registry puts its CA there for
its own address (a port no other registry has) and removes exactly that directory when it
stops. dockerd has no per-daemon setting for it, and reads the directory on every pull, so no
engine needs a restart. Without ``trusted``, engines refuse its certificate, or must be started
with ``--insecure-registry ADDRESS``. The CA also serves our own clients (:meth:`start` checks
the registry with it).
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tools.dockerd import PrivateDockerd
from tools.pki import make_pki
from tools.polling import NotWithin, eventually

CERTS_D = Path("/etc/docker/certs.d")
"""Where every dockerd on the machine looks for the CA of a registry, per ``HOST:PORT``."""


class PrivateRegistry:
    """A registry of our own. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self, user: str = "trainer", password: str | None = None, ip: str = "127.0.0.1", netns: str | None = None,
        trusted: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gd-registry-"))
        self.user = user
        self.password = secrets.token_urlsafe(16) if password is None else password
        self.ip = ip
        self.netns = netns  # serve inside this network namespace, where ``ip`` is
        self.trusted = trusted
        self.certs_d: list[Path] = []  # what it made in /etc/docker/certs.d, innermost last
        self.pki = make_pki(self.root, server_ip=ip)
        # The registry's log line once it accepts connections, with the port the kernel chose.
        self._listening = re.compile(rf"listening on {re.escape(ip)}:(\d+)")
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``IP:PORT``: the registry part of the references pushed here. It stays set
        after :meth:`stop`, for tests of a registry that is down."""
        if self.port is None:
            raise RuntimeError("the registry has not been started")
        return f"{self.ip}:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The login as the Engine API takes it (``X-Registry-Auth``, docker-py's ``auth_config``)."""
        return {"username": self.user, "password": self.password, "serveraddress": self.address}

    def start(self, timeout: float = 30) -> PrivateRegistry:
        """Start the registry; return once it asks for a login over TLS. On failure it is
        stopped (and its directory removed) before the error is raised."""
        config = self.root / "config.yml"
        # JSON is YAML, and needs no YAML writer.
        config.write_text(json.dumps(self._config(), indent=2))
        log = open(self.root / "registry.log", "wb")  # noqa: SIM115 - the child owns it
        # `ip netns exec` replaces itself with the registry, so the pid is the registry's.
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*inside, "docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc = self.proc

        def asks_for_login() -> bool:
            if proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"docker-registry exited: {tail}")
            if self.port is None and (found := self._listening.search(self.log_tail(200))):
                self.port = int(found.group(1))
            return self.port is not None and self._asks_for_login()

        try:
            eventually(asks_for_login, timeout, interval_s=0.1, what="docker-registry asking for a login")
        except NotWithin:
            tail = self.log_tail()
            self.stop()
            raise TimeoutError(f"docker-registry did not answer within {timeout} s: {tail}") from None
        if self.trusted:
            self._trust()
        return self

    def _trust(self) -> None:
        """Put the CA where engines look for this registry's, making only what did not exist."""
        entry = CERTS_D / self.address
        self.certs_d = [d for d in (CERTS_D.parent, CERTS_D, entry) if not d.exists()]
        entry.mkdir(parents=True)
        shutil.copyfile(self.pki.ca, entry / "ca.crt")

    def _config(self) -> dict[str, Any]:
        htpasswd = self.root / "htpasswd"
        # -i reads the password from stdin, so it never shows in a process list.
        hashed = subprocess.run(["htpasswd", "-niB", self.user], input=self.password.encode(),
                                capture_output=True, check=True)
        htpasswd.write_bytes(hashed.stdout)
        return {
            "version": "0.1",
            "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
            "http": {
                "addr": f"{self.ip}:0",
                "tls": {"certificate": str(self.pki.server_cert), "key": str(self.pki.server_key)},
            },
            "auth": {"htpasswd": {"realm": "gpu-docker-tests", "path": str(htpasswd)}},
        }

    def _asks_for_login(self) -> bool:
        """True once ``GET /v2/`` answers 401 over TLS verified with our CA: up, with logins."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        conn = http.client.HTTPSConnection(self.ip, self.port, context=context, timeout=5)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status == 401
        except OSError:
            return False
        finally:
            conn.close()

    def push(self, engine: PrivateDockerd, image: str, repository: str) -> str:
        """Tag ``image`` (present on ``engine``) as ``ADDRESS/REPOSITORY`` and push it with this
        registry's login; the pushed reference. ``repository`` may end in ``:tag`` (else latest)."""
        name, _, tag = repository.partition(":")
        target, tag = f"{self.address}/{name}", tag or "latest"
        with engine.client() as c:
            c.api.tag(image, target, tag)
            for doc in c.api.push(target, tag, auth_config=self.credentials, stream=True, decode=True):
                if doc.get("error"):
                    raise RuntimeError(f"pushing {target}:{tag} from engine {engine.name} failed: {doc['error']}")
        return f"{target}:{tag}"

    def lose_blobs(self, repository: str) -> None:
        """Forget the blobs (image configuration and layers) of ``repository``, a name without
        tag, but keep its manifests, as a registry with damaged storage does: a pull finds the
        image, then fails on its blobs.

        Distribution links each repository to its blobs under ``_layers``; other repositories
        holding the same blobs keep theirs.
        """
        shutil.rmtree(self.root / "data" / "docker" / "registry" / "v2" / "repositories" / repository / "_layers")

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "registry.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """Stop the registry by its pid and delete its directory (images, keys, logins)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        for made in reversed(self.certs_d):  # ours, and any parent that did not exist before
            shutil.rmtree(made, ignore_errors=True)
        self.certs_d = []
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
