"""Which Airflow deployment this process belongs to: the ``deployment`` label's value.

Two Airflow deployments may share GPU hosts, and even a ``dag_id``. Every container the
provider makes carries its deployment's id (:data:`~provider.labels.DEPLOYMENT_LABEL`), so that
adoption, the orphan sweep and the tidying of stale reservations act only on their own
deployment's containers, while placement still counts every deployment's claims as used.

The id is ``[gpu_docker] deployment_id`` when set; otherwise it is derived from the address of
the deployment's execution API (``[core] execution_api_server_url``, else ``[api] base_url`` plus
``/execution/``, resolved as Airflow resolves it), without any password in it. That address is
what every task process and triggerer must reach and what the api-server serves. The metadata
database's address would identify a deployment better, but Airflow 3 hides it from task and
trigger processes (they see ``airflow-db-not-allowed:///``), and those make most containers.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from provider.errors import HostConfigError

SETTING = "[gpu_docker] deployment_id"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""What a deployment id may be: a Docker label value that is also safe in a filter and a log line."""


def derived_id(url: str) -> str:
    """A short, stable id for the service at ``url``, any password left out.

    The scheme, user, host, port, path and query identify it; a password does not (it may be
    rotated without the deployment changing), and must not be hashed into a label that anyone
    who can list the host's containers reads.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise HostConfigError(f"The execution API's address {parts.scheme}://{host}... has no valid port, so no "
                              f"deployment id can be derived from it: fix [core] execution_api_server_url or "
                              f"[api] base_url, or set {SETTING}.") from None
    user = f"{parts.username}@" if parts.username else ""
    scheme = parts.scheme.lower()
    identity = f"{scheme}://{user}{host}{port}{parts.path.rstrip('/')}?{parts.query}"
    return "api-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def checked_id(value: str) -> str:
    """``value`` as a deployment id; :class:`HostConfigError` naming the setting when it is not one."""
    if not ID_PATTERN.fullmatch(value):
        raise HostConfigError(
            f"{SETTING} = {value!r} is not a deployment id: use 1 to 63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, the same on every Airflow component of the deployment."
        )
    return value


def api_address() -> str:
    """The execution API's address, resolved as Airflow's executors resolve it."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="/") or "/"
    if base.startswith("/"):
        base = f"http://localhost:8080{base}"
    return conf.get("core", "execution_api_server_url", fallback="") or f"{base.rstrip('/')}/execution/"


def current_deployment() -> str:
    """This deployment's id: ``[gpu_docker] deployment_id``, else derived from the execution
    API's address (:func:`derived_id` of :func:`api_address`)."""
    from airflow.configuration import conf

    explicit = (conf.get("gpu_docker", "deployment_id", fallback="") or "").strip()
    return checked_id(explicit) if explicit else derived_id(api_address())
