"""The public runtime API (TEMPORARY API SHIM on the serve branch: lazy re-exports of solve.py)."""
from .errors import InputError, QueueFull, RuntimeClosed, SeadError  # noqa: F401


def __getattr__(name: str):
    if name in ("Runtime", "Result"):
        from . import solve
        return getattr(solve, name)
    raise AttributeError(name)
