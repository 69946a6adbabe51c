"""What a `sead serve` process is started with: the model, its runtime's bounds, the request limits
and the connection limits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sead.runtime.errors import SeadError
from sead.runtime.tasks import MAX_STEPS


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
    max_line_length: int = 1_000_000  # characters per problem (less where the model's verified size says so)
    max_problems: int = 100_000  # problems per request (JSON) or per stream (NDJSON)
    max_body_bytes: int = 64 << 20
    drain_seconds: float = 30.0  # on SIGTERM, how long in-flight requests may take to finish
    # work: a request's cells x step cap (x generations), Runtime.work(), an upper bound on its cost.
    # max_steps is the most a client may ask for, and a rule110 problem's generations when it asks
    # nothing (the runtime's own default, 10^6); fixed-point problems that name no cap run to the
    # model's default (2 x length + 16 steps), which max_request_work bounds.
    max_steps: int = 1_000_000
    max_request_work: int = 10**11  # cell-steps per request or stream (a 100,000-digit sum is 2 x 10^10)
    max_inflight_work: int = 4 * 10**11  # cell-steps of all requests accepted and unfinished
    max_large_bodies: int = 2  # JSON bodies over LARGE_BODY read and parsed at once
    max_connections: int = 256  # open connections; more are answered 503 and closed at once
    header_timeout: float = 10.0  # seconds for a request's headers, from connecting or the last response
    keep_alive_timeout: float = 5.0  # an idle connection between requests is closed after this
    body_timeout: float = 30.0  # a JSON body must arrive whole, an NDJSON body keep coming, within this
    max_header_bytes: int = 64 << 10

    def __post_init__(self) -> None:
        for name in ("max_queue_cells", "max_line_length", "max_problems", "max_body_bytes", "max_request_work",
                     "max_inflight_work", "max_large_bodies", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise SeadError(f"{name} must be at least 1")
        for name in ("header_timeout", "keep_alive_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise SeadError(f"{name} must be more than 0 seconds")
        if not 0 <= self.max_steps <= MAX_STEPS:
            raise SeadError(f"max_steps must be from 0 to {MAX_STEPS:,}, got {self.max_steps:,}")
        # a problem has at most as many cells as characters; one that could never fit the queue
        # would be refused with 429 forever
        if self.max_line_length > self.max_queue_cells:
            raise SeadError(f"max_line_length ({self.max_line_length}) must not exceed max_queue_cells "
                            f"({self.max_queue_cells}): a problem that long could never be queued")
        if self.max_request_work > self.max_inflight_work:  # likewise, a request that could never be admitted
            raise SeadError(f"max_request_work ({self.max_request_work:,}) must not exceed max_inflight_work "
                            f"({self.max_inflight_work:,}): a request that large could never run")

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
