"""A task's priority as Airflow computes it, for the order of a queue's line.

Airflow orders its own scheduler queue by a task instance's *effective* priority: the task's
``priority_weight``, plus, by its ``weight_rule``, those of every task downstream
(``downstream``, the default) or upstream (``upstream``) of it, or alone (``absolute``). A
waiting GPU task is ordered within its queue by the same number, so a DAG author raises a
task's place in line the way they already raise it in Airflow's, and changes nothing else.
"""

from __future__ import annotations

from typing import Any


def effective_priority(task: Any) -> int:
    """``task``'s priority weight under its weight rule, summed as Airflow sums it. A custom
    priority strategy (a class, not one of the three rules) counts as ``absolute``: its code
    runs in the scheduler, not here."""
    rule = str(getattr(task.weight_rule, "value", task.weight_rule))
    if rule not in ("downstream", "upstream") or not task.has_dag():
        return int(task.priority_weight)
    dag = task.dag
    relatives = task.get_flat_relative_ids(upstream=rule == "upstream")
    return int(task.priority_weight) + sum(int(dag.task_dict[i].priority_weight) for i in relatives)
