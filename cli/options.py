"""What several commands share: the choice types, the options spelled once, the parsing of list
values, and the texts that name the registry's tasks and models.

Task and model names come from the registries (sead.runtime.tasks.TASKS, the shipped
DEFAULT_MODELS), so a new task appears in every choice and help text without an edit here.
"""
from __future__ import annotations

from enum import Enum

import typer
from typer.models import OptionInfo

from sead.runtime.errors import SeadError
from sead.runtime.model_file import DEFAULT_MODELS
from sead.runtime.tasks import TASKS


class Engine(str, Enum):
    auto = "auto"
    ort = "ort"
    ort_cuda = "ort-cuda"
    trt = "trt"


TaskName = Enum("TaskName", {name: name for name in TASKS}, type=str)  # the registry's tasks, as choices

TASK_NAMES = ", ".join(TASKS)
SHIPPED_MODELS = ", ".join(DEFAULT_MODELS)
EVAL_SIZES = "; ".join(f"{name} {','.join(map(str, task.eval_sizes))}" for name, task in TASKS.items())


def model_option(help_more: str = "") -> OptionInfo:
    """--model: a shipped model's name or an .onnx path (default: addition)."""
    return typer.Option("addition", help=f"A shipped model ({SHIPPED_MODELS}) or an .onnx path{help_more}.")


def engine_option() -> OptionInfo:
    return typer.Option(Engine.auto, help="auto picks trt, then ort-cuda, then ort.")


def parse_lengths(text: str) -> list[int]:
    """'16,1_000,100000' -> [16, 1000, 100000]; usage error unless positive integers."""
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("lengths must be positive")
    return values


def need_torch(command: str) -> None:
    try:
        import torch  # noqa: F401  # torch-ok: lazy, only to say it is missing
    except ImportError:
        raise SeadError(f"sead {command} needs PyTorch: pip install -c constraints.txt 'sead[train]'") from None


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
