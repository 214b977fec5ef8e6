"""Which Airflow deployment this process belongs to: the ``deployment`` label's value.

Two Airflow deployments may share GPU hosts, and even a ``dag_id``. Every container the
provider makes carries its deployment's id (:data:`~provider.labels.DEPLOYMENT_LABEL`), so that
adoption, the orphan sweep and the tidying of stale reservations act only on their own
deployment's containers, while placement still counts every deployment's claims as used.

The id is ``[gpu_docker] deployment_id`` when set; otherwise it is derived from the metadata
database's address (``[database] sql_alchemy_conn`` without its password), the one thing every
scheduler, triggerer and api-server of a deployment shares and two deployments do not.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from provider.errors import HostConfigError

SETTING = "[gpu_docker] deployment_id"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""What a deployment id may be: a Docker label value that is also safe in a filter and a log line."""


def derived_id(database_url: str) -> str:
    """A short, stable id for the metadata database at ``database_url``, password left out.

    The user, host, port and database name identify the database; the password does not (it
    may be rotated without the deployment changing), and must not be hashed into a label that
    anyone who can list the host's containers reads.
    """
    parts = urlsplit(database_url.strip())
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    scheme = parts.scheme.lower().split("+")[0]  # postgresql+psycopg2 and postgresql name one database
    identity = f"{scheme}://{user}{host}{port}{parts.path}?{parts.query}"
    return "db-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def checked_id(value: str) -> str:
    """``value`` as a deployment id; :class:`HostConfigError` naming the setting when it is not one."""
    if not ID_PATTERN.fullmatch(value):
        raise HostConfigError(
            f"{SETTING} = {value!r} is not a deployment id: use 1 to 63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, the same on every Airflow component of the deployment."
        )
    return value


def current_deployment() -> str:
    """This deployment's id: ``[gpu_docker] deployment_id``, else derived from the metadata
    database's address (:func:`derived_id`)."""
    from airflow.configuration import conf

    explicit = (conf.get("gpu_docker", "deployment_id", fallback="") or "").strip()
    if explicit:
        return checked_id(explicit)
    url = conf.get("database", "sql_alchemy_conn", fallback="") or ""
    if not url:
        raise HostConfigError(
            f"Neither {SETTING} nor [database] sql_alchemy_conn is set, so this process cannot tell which "
            f"deployment's containers are its own: set {SETTING} to the same value on every Airflow component."
        )
    return derived_id(url)
