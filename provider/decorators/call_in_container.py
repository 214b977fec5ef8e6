"""The program ``@task.gpu_docker`` runs in the task container: call the function, keep its result.

It is not imported by the provider: the decorator copies this file, the function's source and
the call (``call.json``) into the created container, and the image's own Python runs it. So it
uses the standard library only and runs on any Python 3.7 or later: the image needs Python, not
Airflow, not bash and not the worker's Python version.

The function is compiled with postponed annotations (PEP 563), so an annotation naming what the
DAG file imported (``Any``, a class) needs no import in the container.

The function's exception is left to propagate: Python prints its traceback, with the lines of
the function's source, to stderr, which the task log shows, and the non-zero exit fails the task.
"""

import __future__
import json
import os
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT_EXIT = 3
"""The exit code when the function returned, but a value JSON cannot carry."""


def main() -> int:
    with open(os.path.join(HERE, "call.json")) as f:
        call = json.load(f)
    source_path = os.path.join(HERE, "function.py")
    with open(source_path) as f:
        source = f.read()
    namespace = {"__name__": "__gpu_docker_task__", "__file__": source_path}  # type: Dict[str, Any]
    code = compile(source, source_path, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)
    value = namespace[call["function"]](*call["args"], **call["kwargs"])
    try:
        document = json.dumps({"return_value": value}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        sys.stderr.write(
            "The function returned a value that JSON cannot carry (%s): return str, int, float, bool, None, "
            "and lists and dicts of them; write larger artefacts to a mounted volume or object storage.\n" % exc
        )
        return RESULT_EXIT
    result_path = os.environ["RESULT_PATH"]
    os.makedirs(os.path.dirname(result_path) or ".", exist_ok=True)
    with open(result_path, "w") as f:
        f.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
