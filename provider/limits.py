"""Timeouts and limits of every read of a pool, defined once.

Pure constants, importable from every layer. Each names what it bounds and why it has its
value; a caller that needs another value takes it as an argument, never a copy of its own.
"""

from __future__ import annotations

AGENT_TIMEOUT_S = 2.0
"""Seconds a node agent may take for ``/v1/node``, connect and read together: an agent answers
from a sample it keeps, so a slower answer means a host in trouble, and placement must not wait
on it."""

ENGINE_TIMEOUT_S = 10.0
"""Seconds a Docker engine may take for each phase of a call on a task's path (connect, head,
body): engines answer slower than agents under load, and a task would rather wait than fail."""

BACKGROUND_ENGINE_TIMEOUT_S = 5.0
"""Seconds an engine may take for a background read nobody's task waits on (the cluster page,
the orphan sweep): a host that slow is shown or skipped now and read again on the next round."""

MAX_CONCURRENT_HOSTS = 256
"""Hosts read at once, which bounds the sockets a read of a large pool holds open."""
