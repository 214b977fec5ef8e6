"""Airflow provider: run deep-learning training containers on the best GPU host of a pool.

Airflow discovers this package through the ``apache_airflow_provider`` entry point, which
calls :func:`get_provider_info`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_HOST_FIELDS: dict[str, Any] = {
    "agent_url": {
        "label": "Node agent URL",
        "description": "http://HOST:PORT or https://HOST:PORT of `python -m provider.agent` on this host (optional).",
        "schema": {"type": ["string", "null"]},
    },
    "agent_ca_cert": {
        "label": "Node agent CA certificate file",
        "description": "CA that signed an https agent's certificate (--tls-cert); empty: the system's trust store.",
        "schema": {"type": ["string", "null"]},
    },
    "labels": {
        "label": "Labels (JSON)",
        "description": 'Placement labels of this host, e.g. {"zone": "a"}.',
        "schema": {"type": ["object", "null"]},
    },
    "tls_ca_cert": {"label": "TLS CA certificate file", "schema": {"type": ["string", "null"]}},
    "tls_client_cert": {"label": "TLS client certificate file", "schema": {"type": ["string", "null"]}},
    "tls_client_key": {"label": "TLS client key file", "schema": {"type": ["string", "null"]}},
    "tls_verify": {"label": "Verify the engine's TLS certificate", "schema": {"type": ["boolean", "null"], "default": True}},
    "insecure": {
        "label": "Allow tcp:// without verified TLS",
        "description": "Speak to a tcp:// engine in clear or unverified: anyone on the network can then read the "
        "registry credentials and take the host (root). Leave off; give the TLS files instead.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "allow_root_user": {
        "label": "Allow tasks to run as root",
        "description": "Tasks may set user=0 on this host (default: refused).",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "allow_host_network": {
        "label": "Allow the host's network",
        "description": 'Tasks may set network_mode="host" on this host (default: refused).',
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider's hooks, operators and connection types to Airflow."""
    return {
        "package-name": "airflow-provider-gpu-docker",
        "name": "GPU Docker",
        "description": __doc__.splitlines()[0],
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "GPU Docker",
                "external-doc-url": "https://docs.docker.com/engine/containers/resource_constraints/#gpu",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "GPU Docker",
                "python-modules": ["provider.hooks.docker_host", "provider.hooks.node_metrics"],
            },
        ],
        "operators": [
            {"integration-name": "GPU Docker", "python-modules": ["provider.operators.gpu_docker"]},
        ],
        "sensors": [
            {"integration-name": "GPU Docker", "python-modules": ["provider.sensors.gpu_available"]},
        ],
        # @task.gpu_docker, beside Airflow's own @task decorators.
        "task-decorators": [{"name": "gpu_docker", "class-name": "provider.decorators.gpu_docker.gpu_docker_task"}],
        "triggers": [
            {"integration-name": "GPU Docker", "python-modules": ["provider.triggers.gpu_available"]},
        ],
        # Remote task logs on ObjectStoragePath; needs [logging] logging_config_class =
        # provider.logs.remote_logging.LOGGING_CONFIG (see that module).
        "remote-logging": [{"classpath": "provider.logs.remote_logging.ObjectStorageRemoteLogIO", "scheme": "file"}],
        # The api-server rebuilds operator links from serialized DAGs only for registered classes.
        "extra-links": ["provider.operators.links.ContainerLogLink"],
        "connection-types": [
            {
                "connection-type": "gpu_docker_host",
                "hook-class-name": "provider.hooks.docker_host.GpuDockerHook",
                "hook-name": "GPU Docker host",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Docker URL", "password": "Agent token"},
                    "placeholders": {"host": "unix:///var/run/docker.sock"},
                },
                "conn-fields": _HOST_FIELDS,
            },
            {
                "connection-type": "gpu_docker_pool",
                "hook-class-name": "provider.hooks.node_metrics.NodeMetricsHook",
                "hook-name": "GPU Docker pool",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port"],
                    "relabeling": {},
                    "placeholders": {},
                },
                "conn-fields": {
                    "hosts": {
                        "label": "Host connections",
                        "description": 'Ids of the pool\'s "GPU Docker host" connections, '
                        'e.g. ["gpu_host_a", "gpu_host_b"].',
                        "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    },
                },
            },
        ],
    }
