"""One topology (tools/cluster/topology.py) for every test of this package: it takes about a
minute to start, so the tests share it, and it goes when the package's last test is done (not
at the end of the session, where it would take CPUs from the other system tests).

Its DAG folder holds the project's example DAGs, the chaos test's and the queue test's DAGs and the DAG of
``bench/cluster.py``, whose smoke run uses this topology. Airflow gives up on a
lost worker sooner than by default, so that the chaos test's retries come within it: a try
without a heartbeat for 40 s is retried (more than the api-server's restart keeps heartbeats
away: a shorter timeout would fail running tries while it restarts), and a task a lost worker
had taken but not started is queued again after 90 s.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.system.cluster.observe import EngineEvents
from tools.cluster.topology import Cluster, ClusterSpec
from tools.local_airflow import REPO

pytestmark = pytest.mark.system

CHAOS_DAG = REPO / "tests" / "system" / "dags" / "chaos_counter.py"
BENCH_DAG = REPO / "bench" / "dags" / "cluster_job.py"
QUEUE_DAG = REPO / "tests" / "system" / "dags" / "queue_jobs.py"


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    dags = tmp_path_factory.mktemp("cluster-dags")
    for src in [*(REPO / "dags").glob("*.py"), CHAOS_DAG, BENCH_DAG, QUEUE_DAG]:
        shutil.copy(src, dags / src.name)
    with Cluster(ClusterSpec(tag="gdt", heartbeat_timeout_s=40, queued_timeout_s=90), dags_folder=dags) as c:
        yield c


@pytest.fixture(scope="package")
def events(cluster: Cluster) -> Iterator[EngineEvents]:
    watcher = EngineEvents(cluster.engines)
    watcher.start()
    yield watcher
    watcher.stop()
