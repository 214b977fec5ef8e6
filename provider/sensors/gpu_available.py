"""GpuAvailableSensor: succeed once a GPU request fits on the pool; XCom: the fitting host.

It reserves nothing (a downstream ``GpuDockerOperator`` does, and waits itself with
``wait_for_resources=True`` if someone else was faster); it gates work that should start
only when the pool has room, e.g. a data-preparation step before a long training run.
All three modes read the pool the same way (:mod:`provider.reservations.pool`) and ask the
same decision (:func:`provider.reservations.room.room`): ``poke`` and ``reschedule`` from a
worker, ``deferrable=True`` from :class:`GpuAvailableTrigger` in the triggerer. Hosts held for
long-waiting tasks (:mod:`provider.scheduling.waiting`) do not count as room. A request no host
could take even empty fails at once instead of waiting out the timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseHook, BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from provider.clients.engine_sync import run_sync
from provider.clients.hosts import HostConfig, resolve_pool
from provider.reservations.pool import read_pool_view
from provider.reservations.room import Verdict, room
from provider.scheduling.policy_names import check_placement_policy
from provider.scheduling import PlacementContext, PlacementRequest, get_policy
from provider.scheduling.arguments import number, placement_request
from provider.scheduling.model import MILLI_PER_GPU
from provider.reservations.rules import request_document
from provider.triggers.gpu_available import GpuAvailableTrigger
from provider.limits import AGENT_TIMEOUT_S


class GpuAvailableSensor(BaseSensorOperator):
    """Wait until ``gpus`` GPUs (with ``gpu_memory_mb`` free each, …) fit on ``gpu_pool``.

    :param gpu_pool: a ``gpu_docker_pool`` connection id, a host connection id, or a list of
        host connection ids.
    :param gpus: whole GPUs wanted (with ``gpu_milli`` < 1000: one share of one GPU).
    :param gpu_memory_mb: measured free memory each GPU must have.
    :param gpu_model: GPU model the host must have (``"A|B"`` accepts either).
    :param required_labels: labels the host connection must carry.
    :param placement_policy: the policy whose choice is returned as the fitting host; checked
        when the task runs, after rendering, so it may be a template such as
        ``"{{ params.policy }}"``.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param agent_timeout: seconds each node agent may take to answer.
    """

    template_fields: Sequence[str] = ("gpu_pool", "gpus", "gpu_memory_mb", "gpu_model", "placement_policy")
    ui_color = "#d9ecc6"

    def __init__(
        self,
        *,
        gpu_pool: str | Sequence[str],
        gpus: int = 1,
        gpu_milli: int = MILLI_PER_GPU,
        gpu_memory_mb: int = 0,
        gpu_model: str | None = None,
        required_labels: Mapping[str, str] | None = None,
        placement_policy: str = "least_loaded",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        agent_timeout: float = AGENT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gpu_pool = gpu_pool
        self.gpus = gpus
        self.gpu_milli = gpu_milli
        self.gpu_memory_mb = gpu_memory_mb
        self.gpu_model = gpu_model
        self.required_labels = required_labels
        self.placement_policy = placement_policy
        self.deferrable = deferrable
        self.agent_timeout = agent_timeout

    def _request(self) -> PlacementRequest:
        """Every argument, rendered and checked before the pool is read (:class:`SpecError` names
        a bad one); the request they make."""
        check_placement_policy(self.placement_policy)
        number("agent_timeout", self.agent_timeout, minimum=0.0, above=True)
        return placement_request(gpus=self.gpus, gpu_milli=self.gpu_milli, gpu_memory_mb=self.gpu_memory_mb,
                                 gpu_model=self.gpu_model, required_labels=self.required_labels)

    def _hosts(self) -> list[HostConfig]:
        return resolve_pool(self.gpu_pool, BaseHook.get_connection)

    def poke(self, context: Context) -> PokeReturnValue:
        request = self._request()
        view = run_sync(read_pool_view(self._hosts(), agent_timeout=self.agent_timeout))
        answer = room(request, view, get_policy(self.placement_policy), PlacementContext(rng=random.Random()))
        if answer.placement is None:
            if answer.verdict is Verdict.NEVER:
                raise AirflowFailException(str(answer.no_fit))
            self.log.info("Not yet: %s", answer.no_fit)
            return PokeReturnValue(is_done=False)
        self.log.info("Fits on %s (GPUs %s)", answer.placement.node, list(answer.placement.gpu_indices))
        return PokeReturnValue(is_done=True, xcom_value=answer.placement.node)

    def execute(self, context: Context) -> Any:
        self._request()  # rendered now: checked before any pool is read
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self.defer(
            trigger=GpuAvailableTrigger(
                pool=self.gpu_pool, request=request_document(self._request()),
                policy=self.placement_policy, deadline=time.time() + float(self.timeout),
                poll_interval=float(self.poke_interval), agent_timeout=self.agent_timeout,
                wait_timeout=float(self.timeout),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> str:
        status = event.get("status")
        if status == "fits":
            self.log.info("Fits on %s (GPUs %s)", event["host"], event["gpu_ids"])
            return str(event["host"])
        if status == "timeout":
            raise AirflowSensorTimeout(str(event["message"]))
        raise AirflowFailException(str(event.get("message") or event))
