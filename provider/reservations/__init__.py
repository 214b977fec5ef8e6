"""Reservations end to end: who holds which resources on which host, kept on the hosts.

Read from the bottom up, which is also the order of the imports:

* :mod:`~provider.labels`: the names written on containers;
* :mod:`~provider.reservations.rules`: pure rules: what a claim records, how a host's
  allocation is the fold of its claims through :func:`provider.scheduling.apply`, which claim
  is stale, which hold has lapsed;
* :mod:`~provider.reservations.room`: the one pure decision "fits / wait / never";
* :mod:`~provider.reservations.store`: claims, holds and the lock as containers on an engine;
* :mod:`~provider.reservations.pool`: the one pool reader (agents + engines), tidying or
  looking only.

Hooks, operators, sensors, triggers, the cluster page and the benchmarks import from here.
``docs/reservations.md`` tells the design.
"""
