"""``@task.gpu_docker`` without an engine: what it refuses, the call it makes, and the program
that makes the call in the container, run here by this Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, task

from provider.decorators.gpu_docker import PROGRAM, PROGRAM_TEXT, GpuDockerDecoratedOperator, call_document
from provider.errors import SpecError

IMAGE = "gpu-docker-trainer:0.1"


def train_task(**kwargs: Any) -> GpuDockerDecoratedOperator:
    """The operator of a decorated function that takes a positional argument, a context key
    (``run_id``) and ``**extra``."""
    with DAG("taskflow_unit", schedule=None) as dag:
        @task.gpu_docker(image=IMAGE, **kwargs)
        def train(epochs: int, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
            return {"epochs": epochs, "run_id": run_id, **extra}

        train(3, rate=0.5)
    op = dag.get_task("train")
    assert isinstance(op, GpuDockerDecoratedOperator)
    return op


def test_the_decorator_runs_the_function_with_python_instead_of_the_images_program() -> None:
    op = train_task(python_command="python3.11", gpus=1)
    assert op.entrypoint == ["python3.11"] and op.command == [f"/gpu-docker-task/{PROGRAM}"]
    assert op.gpus == 1 and op.image == IMAGE
    source = op.get_python_source()
    assert source.startswith("def train(") and "@task" not in source


@pytest.mark.parametrize("taken", ["command", "entrypoint"])
def test_command_and_entrypoint_are_refused_with_the_alternative(taken: str) -> None:
    with pytest.raises(SpecError, match=f"takes no {taken}.*use GpuDockerOperator"):
        train_task(**{taken: ["sh"]})


def test_the_function_gets_op_kwargs_and_the_context_values_it_names_but_no_context_in_kwargs() -> None:
    op = train_task()
    context: Any = {"run_id": "manual__1", "ti": object(), "ds": "2026-12-07"}
    kwargs = op._keyword_arguments(context)
    assert dict(kwargs) == {"run_id": "manual__1", "rate": 0.5}  # no ``ti`` nor ``ds`` through **extra
    call = json.loads(call_document(op.python_callable, op.op_args, kwargs))
    assert call == {"function": "train", "args": [3], "kwargs": {"run_id": "manual__1", "rate": 0.5}}


@pytest.mark.parametrize("value", [object(), float("nan"), {"when": b"bytes"}])
def test_an_argument_json_cannot_carry_is_refused_naming_it(value: Any) -> None:
    def train(epochs: int, data: Any) -> None: ...

    with pytest.raises(SpecError, match=r"Argument 'data' of train\(\) cannot be passed into the container"):
        call_document(train, [3], {"data": value})


def run_program(tmp_path: Path, source: str, call: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The program as the container runs it: beside the function and the call, with RESULT_PATH."""
    (tmp_path / PROGRAM).write_bytes(PROGRAM_TEXT)
    (tmp_path / "function.py").write_text(source)
    (tmp_path / "call.json").write_text(json.dumps(call))
    env = {"RESULT_PATH": str(tmp_path / "out" / "result.json"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(tmp_path / PROGRAM)], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def test_the_program_writes_the_return_value_and_ignores_annotations_it_cannot_resolve(tmp_path: Path) -> None:
    source = "def mean(values: list[Number], scale: Any = 1) -> Result:\n    return sum(values) * scale / len(values)\n"
    done = run_program(tmp_path, source, {"function": "mean", "args": [[1, 2, 3]], "kwargs": {"scale": 2}})
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == {"return_value": 4.0}


def test_the_program_lets_the_functions_traceback_through_with_its_source_line(tmp_path: Path) -> None:
    source = "def fails(batch):\n    raise ValueError(f'batch {batch} has no labels')\n"
    done = run_program(tmp_path, source, {"function": "fails", "args": [7], "kwargs": {}})
    assert done.returncode == 1 and not (tmp_path / "out").exists()
    assert "Traceback" in done.stderr and "raise ValueError(f'batch {batch} has no labels')" in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: batch 7 has no labels")


def test_a_return_value_json_cannot_carry_fails_with_what_to_return(tmp_path: Path) -> None:
    done = run_program(tmp_path, "def f():\n    return {1, 2}\n", {"function": "f", "args": [], "kwargs": {}})
    assert done.returncode == 3 and "returned a value that JSON cannot carry" in done.stderr
    assert not (tmp_path / "out").exists()

