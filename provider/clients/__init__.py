"""Low-level I/O: the Docker engine client, the node agent reader, host configuration, TLS.

The bottom of the provider beside :mod:`provider.scheduling`: it imports nothing of the
provider but :mod:`provider.errors` and :mod:`provider.limits`, so every layer above (the
reservations, the log pipeline, the Airflow hooks) can use it without a cycle.
"""
