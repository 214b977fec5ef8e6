"""A StatsD server for the tests: a UDP socket on loopback that a thread reads, keeping what arrives.

Airflow's StatsD client (``[metrics] statsd_on``) sends one datagram per metric, in the StatsD
line format, with InfluxDB tags when ``statsd_influxdb_enabled`` is set:
``airflow.gpu_docker.room_wait,dag_id=d,task_id=t:1234.5|ms``. Nothing is mocked: the tests
point a real Airflow, or Airflow's own StatsD logger, at this socket.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Metric:
    """One metric as it arrived: its name (with Airflow's prefix), tags, value and type
    (``ms`` a timing in milliseconds, ``c`` a counter, ``g`` a gauge)."""

    name: str
    tags: dict[str, str]
    value: float
    kind: str


def parse(line: str) -> Metric:
    """One StatsD line; a sample rate (``|@0.5``) after the type is left out."""
    head, _, rest = line.partition(":")
    value, kind = rest.split("|")[:2]
    name, *pairs = head.split(",")
    return Metric(name, dict(pair.split("=", 1) for pair in pairs), float(value), kind)


class StatsdReceiver:
    """Receives StatsD datagrams on ``127.0.0.1:port`` until stopped; ``with`` stops it."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-receiver", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self._lines.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def metrics(self, name: str) -> list[Metric]:
        """Every metric named ``name`` received so far, in order of arrival."""
        with self._lock:
            lines = list(self._lines)
        return [parse(line) for line in lines if line.partition(":")[0].split(",")[0] == name]

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()

    def __enter__(self) -> StatsdReceiver:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
