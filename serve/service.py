"""What the routes share: the loaded runtime, its metrics, the request bounds (step cap, work,
in-flight work, large bodies), the wait that every route does on a client or the runtime, and
runtime calls turned into HTTP errors.

Work is a request's cells x step cap (x generations for rule110): `Runtime.work()`, an upper bound
on what solving it may cost. A request over max_request_work is refused (413); one that would take
the work accepted and unfinished past max_inflight_work is refused at once (429), as for a full
queue (an NDJSON stream waits instead). Every wait on a client or the runtime gives way when the
client leaves (its problems are cancelled in the runtime) and when the drain period ends (the
server stops: 503).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

from fastapi.responses import JSONResponse

from sead.runtime.errors import InputError, QueueFull, RuntimeClosed, SeadError
from sead.runtime.lines import line_limit

from .config import ServeConfig
from .metrics import Metrics

RETRY_AFTER = "1"  # seconds, on 429 and 503
OFFLOAD_CHARS = 1 << 16  # requests with more text than this are validated on a thread, not the loop
STOPPED = "the server is shutting down; this request was stopped unfinished"
log = logging.getLogger("sead.serve")


class ApiError(Exception):
    """An HTTP error with one line of text; `extra` goes into the JSON body."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> JSONResponse:
        headers = {"Retry-After": RETRY_AFTER} if self.status in (429, 503) else None
        if self.status == 408:  # the rest of the body may still come: this connection cannot go on
            headers = {"Connection": "close"}
        return JSONResponse({"error": self.code, "message": self.message, **self.extra}, self.status, headers)


class ClientLeft(Exception):
    """The client closed its connection: nothing more can reach it, and its work is cancelled."""


class Flag:
    """A one-shot flag that asyncio.wait() watches as a future: an Event would need a task of its
    own for each wait, and every request waits several times. Set it on the loop's thread."""

    def __init__(self):
        self._set, self._future = False, None

    def set(self) -> None:
        self._set = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def future(self) -> asyncio.Future:
        if self._future is None:  # made on first use, in the loop that serves
            self._future = asyncio.get_running_loop().create_future()
            if self._set:
                self._future.set_result(None)
        return self._future


class Ticket:
    """A request's share of the in-flight work, given back once: when its runtime future is done
    (answered, failed or cancelled), or by release() when it never got one."""

    def __init__(self, service: "Service", work: int):
        self.service, self.work, self.future = service, work, None

    def attach(self, future: Future) -> None:
        self.future = future
        with self.service.lock:
            self.service.futures.add(future)
        future.add_done_callback(lambda _: self.release())  # on a worker thread, or here if done

    def release(self) -> None:
        with self.service.lock:
            self.service.inflight_work -= self.work
            self.work = 0
            self.service.futures.discard(self.future)


class Service:
    """One model, loaded once at start; what every route reads."""

    def __init__(self, config: ServeConfig, runtime=None):
        self.config, self.runtime = config, runtime
        self.metrics = Metrics(self)
        self.load_error: str | None = None
        self.on_load_error = None  # the server's hooks: stop serving when the model cannot load,
        self.on_loaded = None  # and say when it can
        self.stopping = Flag()  # set when the drain period ends: every wait gives up
        self.lock = threading.Lock()  # runtime futures finish on worker threads
        self.inflight_work = 0
        self.futures: set[Future] = set()  # of admitted requests, for stop() to cancel
        self.large_bodies = 0
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
        if self.stopping.is_set():
            raise ApiError(503, "unavailable", "the server is shutting down")
        if self.runtime is None:
            raise ApiError(503, "unavailable", self.load_error or "the model is still loading")
        return self.runtime

    def stop(self) -> None:
        """The drain period is over: cancel every admitted request's work, between engine calls,
        and make every wait give up (its client gets 503 or a last fatal record)."""
        self.stopping.set()
        with self.lock:
            futures = list(self.futures)
        for future in futures:
            future.cancel()

    async def close(self) -> None:
        if self.runtime is not None:
            # at shutdown every request has been answered or stopped: what is left has no client
            await asyncio.to_thread(self.runtime.close, True)

    # -- request bounds ----------------------------------------------------------------------------
    @property
    def line_limit(self) -> int:
        """Characters per problem: max_line_length, or less where the model's verified size says no
        problem is that long (the bound `sead run` reads with)."""
        return min(self.config.max_line_length, line_limit(self.runtime.size_limit))

    def step_cap(self, requested: int | None) -> int | None:
        """The max_steps a request runs with: what it asked, if the server allows that; else a
        generations task's default (max_steps), or None (the model's own cap per problem)."""
        cfg = self.config
        if requested is None:
            return cfg.max_steps if self.runtime.metadata.convergence == "generations" else None
        if requested > cfg.max_steps:
            raise ApiError(422, "invalid_request", f"max_steps: {requested:,} is more than this server allows "
                                                   f"({cfg.max_steps:,}; sead serve --max-steps)")
        return requested

    def check_work(self, work: int, what: str = "request") -> None:
        cfg = self.config
        if work > cfg.max_request_work:
            raise ApiError(413, "too_much_work", f"the {what}'s problems may take up to {work:,} cell-steps (cells x "
                                                 f"step cap); the limit is {cfg.max_request_work:,} per {what} "
                                                 f"(sead serve --max-request-work): lower max_steps or split it")

    def admit(self, work: int) -> Ticket:
        """Take `work` from the in-flight bound, or raise 429; any request runs when none is in flight."""
        cfg = self.config
        with self.lock:
            if self.inflight_work and self.inflight_work + work > cfg.max_inflight_work:
                raise ApiError(429, "queue_full", f"{self.inflight_work:,} cell-steps of work are in flight; "
                                                  f"{work:,} more would pass the limit of {cfg.max_inflight_work:,}")
            self.inflight_work += work
        return Ticket(self, work)

    def take_large_body(self) -> None:
        if self.large_bodies >= self.config.max_large_bodies:
            raise ApiError(429, "busy", f"{self.large_bodies} large request bodies are being read; "
                                        f"the limit is {self.config.max_large_bodies} at once")
        self.large_bodies += 1

    def give_large_body(self) -> None:
        self.large_bodies -= 1

    # -- waiting -----------------------------------------------------------------------------------
    async def wait(self, awaitable, *, left: Flag | None = None, timeout: float | None = None):
        """-> awaitable's result, unless first the drain period ends (ApiError 503), `left` is set
        (ClientLeft) or `timeout` seconds pass (TimeoutError). Then the awaitable is cancelled, and
        with it the runtime's work when it wraps a submit() future."""
        task = asyncio.ensure_future(awaitable)
        watches = [flag.future() for flag in (self.stopping, left) if flag is not None]
        try:
            await asyncio.wait([task, *watches], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this coroutine is cancelled itself
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if left is not None and left.is_set():
            raise ClientLeft
        if self.stopping.is_set():
            raise ApiError(503, "unavailable", STOPPED)
        raise TimeoutError

    async def results(self, future: Future, left: Flag):
        """A submit() future's Results; what the runtime raised instead -> ApiError (503, or 500
        for a failure that is sead's, logged with its traceback)."""
        try:
            return await self.wait(asyncio.wrap_future(future), left=left)
        except (ApiError, ClientLeft):
            raise
        except RuntimeClosed:
            raise ApiError(503, "unavailable", STOPPED) from None
        except Exception as exc:  # an engine or codec failure: the client gets one line, the log the rest
            log.error("solving a request failed", exc_info=exc)
            raise ApiError(500, "internal", f"internal error: {type(exc).__name__}: {exc}") from None


async def watch_disconnect(request, left: Flag) -> None:
    """Set `left` when the client goes. Only once the body is read: then the next ASGI message
    is the disconnect (or the end of the response, when this has been cancelled)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    left.set()


def submit(runtime, problems, max_steps: int | None) -> Future:
    """runtime.submit_parsed of the Problems validated_work returned, with runtime errors as
    ApiErrors."""
    try:
        return runtime.submit_parsed(problems, max_steps)
    except QueueFull as exc:
        raise ApiError(429, "queue_full", str(exc)) from None
    except RuntimeClosed:
        raise ApiError(503, "unavailable", "the server is shutting down") from None


def validated_work(runtime, problems: list[str], max_steps: int | None) -> tuple:
    """Parse once -> (the Problems to submit, their work: Runtime.work); a request with invalid
    problems -> ApiError 400 listing each."""
    try:
        parsed, evaluations, _ = runtime.validate(problems, max_steps)
    except InputError:
        invalid = invalid_lines(runtime, problems, max_steps)
        raise ApiError(400, "invalid_problems", f"{len(invalid)} invalid problem(s); nothing was solved",
                       invalid=invalid) from None
    return parsed, runtime.work_of(parsed, evaluations)


def invalid_lines(runtime, problems: list[str], max_steps: int | None) -> list[dict]:
    """Every invalid problem with its 0-based index and the reason `sead run` gives."""
    return [{"index": exc.line - 1, "reason": exc.reason} for exc in runtime.invalid(problems, max_steps)]


def result_dict(r) -> dict:
    return {"output": r.answer, "steps": r.steps, "converged": r.converged}
