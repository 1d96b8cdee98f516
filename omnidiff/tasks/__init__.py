"""Tasks: one file per task, all in one explicit dict (DESIGN.md section 3)."""

from omnidiff.tasks.base import Task, pad_answer
from omnidiff.tasks.text import TextTask

TASKS: dict[str, Task] = {"text": TextTask()}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "get_task", "pad_answer"]
