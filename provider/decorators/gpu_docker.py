"""``@task.gpu_docker``: a TaskFlow function that runs inside an image on the chosen GPU host.

Like the Docker provider's ``@task.docker``, the decorated function is called in a container,
its arguments come from upstream XComs and its return value becomes the task's XCom. Unlike
it, nothing travels in environment variables or on a command line (whose sizes are capped),
nothing is pickled (which ties the image's Python to the worker's) and no shell runs: the
function's source, the call and a small standard-library program
(:mod:`provider.decorators.call_in_container`) are copied into the created container through
the engine's archive API, the image's ``python3`` runs it, and the return value comes back in
the result file the operator already reads. Arguments and results are JSON; ``docs/taskflow.md``
says what an image must have and what may be passed.

Everything else is :class:`GpuDockerOperator`'s: placement, queues, waiting, logs, retries and
the adoption of a lost worker's container; every argument of the operator is accepted, except
``command`` and ``entrypoint``, which the call takes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from provider.errors import ResultFileError, SpecError
from provider.hooks.docker_host import GpuDockerHook
from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling.waiting import Waiter

TASK_DIR = "/gpu-docker-task"
"""Where the function, the call and the program that runs them are placed in the container."""
PROGRAM = "call_in_container.py"
PROGRAM_TEXT = (Path(__file__).with_name(PROGRAM)).read_bytes()


class GpuDockerDecoratedOperator(DecoratedOperator, GpuDockerOperator):
    """The operator behind ``@task.gpu_docker``.

    :param python_command: the image's Python interpreter (default ``python3``, found on the
        image's PATH); it runs the call, so the image's ENTRYPOINT and CMD are not used.
    """

    custom_operator_name = "@task.gpu_docker"
    template_fields: Sequence[str] = (*GpuDockerOperator.template_fields, "op_args", "op_kwargs")
    template_fields_renderers = {"op_args": "py", "op_kwargs": "py"}

    def __init__(self, *, python_command: str = "python3", **kwargs: Any) -> None:
        taken = sorted({"command", "entrypoint"} & set(kwargs))
        if taken:
            raise SpecError(
                f"@task.gpu_docker takes no {' or '.join(taken)}: the container runs the decorated function "
                f"with {python_command!r}. To run the image's own program, use GpuDockerOperator instead."
            )
        self.python_command = python_command
        self._call: bytes | None = None
        super().__init__(entrypoint=[python_command], command=[f"{TASK_DIR}/{PROGRAM}"], **kwargs)

    def _execute(self, context: Context, waiter: Waiter | None) -> Any:
        """The call is made (and checked: JSON only) before anything is reserved; the task's XCom
        is the function's return value, and where and how it ran goes to the XCom ``container``."""
        self._call = call_document(self.python_callable, self.op_args, self._keyword_arguments(context))
        record = super()._execute(context, waiter)
        result = record.pop("result", None)
        context["ti"].xcom_push(key="container", value=record)
        if not isinstance(result, dict) or "return_value" not in result:
            raise ResultFileError(
                f"The container exited 0 but left no return value in {self.result_path}: the function's "
                "result is written there by the program @task.gpu_docker runs, so leave RESULT_PATH and "
                "result_path to it, and do not end the function with sys.exit or os._exit."
            )
        return result["return_value"]

    def _keyword_arguments(self, context: Context) -> Mapping[str, Any]:
        """``op_kwargs``, and the values of Airflow's context the function names as parameters
        (``run_id``, ``ds``...); a ``**kwargs`` parameter gets no context, whose objects (the task
        instance, the DAG) cannot travel into a container."""
        parameters = inspect.signature(self.python_callable).parameters
        named = {name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        asked = {key: value for key, value in context.items() if key in named}
        return self.determine_kwargs({**asked, **self.op_kwargs})

    def _prepare(self, hook: GpuDockerHook, container_id: str) -> None:
        """Copy the function, its call and the program that makes it into the created container."""
        assert self._call is not None  # made by _execute before the container was created
        hook.put_files(container_id, TASK_DIR, {
            PROGRAM: PROGRAM_TEXT,
            "function.py": str(self.get_python_source()).encode(),  # type: ignore[no-untyped-call]
            "call.json": self._call,
        })


def call_document(function: Callable[..., Any], args: Collection[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The call as ``call.json``: the function's name and its arguments, in JSON.

    JSON, not pickle, so the image's Python need not match the worker's and no Airflow object
    travels by accident; a value JSON cannot carry fails here, naming the argument, before any
    GPU is reserved.
    """
    named = inspect.signature(function).bind_partial(*args, **kwargs).arguments
    for name, value in named.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SpecError(
                f"Argument {name!r} of {function.__name__}() cannot be passed into the container ({exc}): "
                "@task.gpu_docker passes arguments as JSON (str, int, float, bool, None, and lists and dicts "
                "of them). Pass a path or URL for large or binary data, and read Airflow's context in the "
                "worker (a @task upstream) rather than in the container."
            ) from None
    return json.dumps({"function": function.__name__, "args": list(args), "kwargs": dict(kwargs)}).encode()


def gpu_docker_task(
    python_callable: Callable[..., Any] | None = None, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator:
    """``@task.gpu_docker(image=..., gpus=..., gpu_pool=...)``: run the function in ``image`` on the
    host and GPUs placement chooses; takes every :class:`GpuDockerOperator` argument but
    ``command`` and ``entrypoint`` (docs/taskflow.md)."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=GpuDockerDecoratedOperator,
        **kwargs,
    )
