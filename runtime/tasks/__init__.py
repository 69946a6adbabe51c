"""The tasks: one object each (runtime/tasks/base.py's Task), one module each, and this registry.

Adding a task is its module, a registry line below (or `register(MyTask())` from anywhere), and,
to train it, a recipe in train/recipes.py. Nothing else in sead names a task.
"""
from __future__ import annotations

from ..errors import InputError
from .addition import Addition
from .base import MAX_STEPS, Parsed, Problems, Task, one_hot_cells
from .multiplication import Multiplication
from .parity import Parity
from .rule110 import Rule110, rule110_generation

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make a task known by its name: to parsing, training, export, the runtime and the CLI."""
    TASKS[task.name] = task
    return task


for _task in (Addition(), Parity(), Rule110(), Multiplication()):
    register(_task)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


__all__ = ["MAX_STEPS", "Parsed", "Problems", "Task", "TASKS", "get_task", "one_hot_cells", "register",
           "rule110_generation"]
