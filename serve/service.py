"""What the routes share: the loaded runtime, its metrics, and runtime calls turned into HTTP errors."""
from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

from sead.runtime.errors import InputError, QueueFull, RuntimeClosed, SeadError

from .config import ServeConfig
from .metrics import Metrics

RETRY_AFTER = "1"  # seconds, on 429 and 503
OFFLOAD_CHARS = 1 << 16  # requests with more text than this are validated on a thread, not the loop


class ApiError(Exception):
    """An HTTP error with one line of text; `extra` goes into the JSON body."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> JSONResponse:
        headers = {"Retry-After": RETRY_AFTER} if self.status in (429, 503) else None
        return JSONResponse({"error": self.code, "message": self.message, **self.extra}, self.status, headers)


class Service:
    """One model, loaded once at start; what every route reads."""

    def __init__(self, config: ServeConfig, runtime=None):
        self.config, self.runtime = config, runtime
        self.metrics = Metrics()
        self.load_error: str | None = None
        self.on_load_error = None  # the server's hooks: stop serving when the model cannot load,
        self.on_loaded = None  # and say when it can
        if runtime is not None:
            self.metrics.attach(runtime)

    async def load(self) -> None:
        from sead import Runtime

        cfg = self.config
        try:
            runtime = await asyncio.to_thread(Runtime, cfg.model, cfg.engine, **cfg.runtime_kwargs())
        except Exception as exc:  # the server must stop, not wait for a model that never comes
            self.load_error = str(exc) if isinstance(exc, SeadError) else f"{type(exc).__name__}: {exc}"
            if self.on_load_error:
                self.on_load_error()
            return
        self.metrics.attach(runtime)
        self.runtime = runtime
        if self.on_loaded:
            self.on_loaded()

    def ready_runtime(self):
        if self.runtime is None:
            raise ApiError(503, "unavailable", self.load_error or "the model is still loading")
        return self.runtime

    async def close(self) -> None:
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)  # waits for work in flight


async def submit(runtime, problems: list[str], max_steps: int | None, big: bool) -> list:
    """Solve on the runtime's batching front; runtime errors become ApiErrors."""
    try:
        if big:  # validating many lines takes a while: do it on a thread
            return await asyncio.wrap_future(await asyncio.to_thread(runtime.submit, problems, max_steps))
        return await runtime.solve_async(problems, max_steps)
    except InputError:
        invalid = await asyncio.to_thread(invalid_lines, runtime, problems, max_steps) if big \
            else invalid_lines(runtime, problems, max_steps)
        raise ApiError(400, "invalid_problems", f"{len(invalid)} invalid problem(s); nothing was solved",
                       invalid=invalid) from None
    except QueueFull as exc:
        raise ApiError(429, "queue_full", str(exc)) from None
    except RuntimeClosed:
        raise ApiError(503, "unavailable", "the server is shutting down") from None


def invalid_lines(runtime, problems: list[str], max_steps: int | None) -> list[dict]:
    """Every invalid problem with its 0-based index and the reason `sead run` gives."""
    return [{"index": exc.line - 1, "reason": exc.reason} for exc in runtime.invalid(problems, max_steps)]


def result_dict(r) -> dict:
    return {"output": r.answer, "steps": r.steps, "converged": r.converged}
