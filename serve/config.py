"""What a `sead serve` process is started with: the model, its runtime's bounds and the request limits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sead.runtime.errors import SeadError


@dataclass(frozen=True)
class ServeConfig:
    """Fixed at start: a request never names a model or a file."""

    model: str = "addition"  # a shipped model's name or a path to an exported .onnx
    engine: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_cells: int | None = None  # None: the runtime's default
    max_wait_ms: float = 2.0
    max_queue_cells: int = 1 << 24
    workers: int | None = None  # the runtime's worker threads; None: one per core
    max_line_length: int = 1_000_000  # characters per problem
    max_problems: int = 100_000  # problems per request (JSON) or per stream (NDJSON)
    max_body_bytes: int = 64 << 20
    drain_seconds: float = 30.0  # on SIGTERM, how long in-flight requests may take to finish

    def __post_init__(self) -> None:
        for name in ("max_queue_cells", "max_line_length", "max_problems", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise SeadError(f"{name} must be at least 1")
        # a problem has at most as many cells as characters; one that could never fit the queue
        # would be refused with 429 forever
        if self.max_line_length > self.max_queue_cells:
            raise SeadError(f"max_line_length ({self.max_line_length}) must not exceed max_queue_cells "
                            f"({self.max_queue_cells}): a problem that long could never be queued")

    @property
    def model_name(self) -> str:
        """The name responses carry: a shipped model's name, or the file's stem (never its path)."""
        return Path(self.model).stem

    def runtime_kwargs(self) -> dict:
        """Keyword arguments for sead.Runtime(model, engine, **kwargs)."""
        kwargs = dict(max_wait_ms=self.max_wait_ms, max_queue_cells=self.max_queue_cells, workers=self.workers)
        if self.max_batch_cells is not None:
            kwargs["max_batch_cells"] = self.max_batch_cells
        return kwargs
