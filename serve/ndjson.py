"""POST /v1/solve with Content-Type: application/x-ndjson: problems stream in, results stream out.

In: one JSON string per line ("123+877"); empty lines are skipped. Out: one JSON object per problem,
in input order: {"index", "output", "steps", "converged"}, or {"index", "error"} for a line that is
not a JSON string or not a valid problem (`error` is the reason `sead run` prints). An invalid
problem does not stop the stream: the status line (200) went out with the first answers, and the
other problems are independent, so they are answered, as `sead run --skip-invalid --format jsonl`
does.

A limit ends the stream instead: a body over max_body_bytes, a line over max_line_length (+2 bytes
for the JSON quotes), more than max_problems problems. The last record is then
{"index", "error", "fatal": true}, and nothing after that index is read. A client that sees no
`fatal` record got one record for every problem.

The body is read as it arrives (never blocked by answers the client has not read yet, so a client
that sends everything before reading cannot deadlock), cut into groups of the lines of each
arriving chunk (at most GROUP_LINES), and at most PIPELINE groups are in the runtime at once. A
group that finds the runtime's queue full waits and retries rather than failing.
"""
from __future__ import annotations

import asyncio
import collections
import json
import time

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from sead.runtime.errors import InputError, QueueFull, RuntimeClosed, SeadError

from .service import OFFLOAD_CHARS, ApiError, Service, result_dict

NDJSON = "application/x-ndjson"
GROUP_LINES = 4096
PIPELINE = 4
BODY_DOC = 'One JSON string per line, e.g. "123+877"; the step cap goes in the max_steps query parameter.'
RESPONSE_DOC = ('One JSON object per problem, in order: {"index","output","steps","converged"}, or '
                '{"index","error"} for an invalid one; a last {"index","error","fatal":true} if a limit cut the stream.')
_END = object()


class _Fatal(Exception):
    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index, self.message = index, message

    def record(self) -> str:
        return _dumps({"index": self.index, "error": self.message, "fatal": True}) + "\n"


class DuplexStream(StreamingResponse):
    """Starlette's StreamingResponse, except that it never reads `receive` itself: under ASGI < 2.4
    (uvicorn's HTTP) that one listens for a disconnect there, and would take the chunks of the
    request body that this stream is still reading. A disconnect reaches the body reader instead."""

    async def __call__(self, scope, receive, send) -> None:
        await self.stream_response(send)


def response(service: Service, request, max_steps: int | None, start: float) -> DuplexStream:
    cfg = service.config
    runtime = service.ready_runtime()
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cfg.max_body_bytes:
        raise ApiError(413, "too_large", f"the body has {length} bytes; the limit is {cfg.max_body_bytes}")
    return DuplexStream(_records(service, runtime, request, max_steps, start), media_type=NDJSON)


class _GroupReader:
    """The request body -> groups of [index, text, error] entries on `queue`, then _END or a _Fatal."""

    def __init__(self, cfg, queue: asyncio.Queue):
        self.cfg, self.queue = cfg, queue
        self.group: list = []
        self.chars = self.sent = 0  # characters in the group; problems in groups already queued

    @property
    def index(self) -> int:
        return self.sent + len(self.group)

    async def run(self, request) -> None:
        cfg, buf, size = self.cfg, bytearray(), 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cfg.max_body_bytes:
                    raise _Fatal(self.index, f"the body is over the limit of {cfg.max_body_bytes} bytes")
                buf += chunk
                *lines, rest = buf.split(b"\n")
                buf = bytearray(rest)
                for raw in lines:
                    if raw.strip():
                        self.add(raw.strip())
                self.flush()  # answer what has arrived before waiting for more
                if len(buf) > cfg.max_line_length + 2:
                    self.add(bytes(buf))  # fails: the line is already too long
            if buf.strip():  # a last line without a newline
                self.add(bytes(buf.strip()))
            self.flush()
            self.queue.put_nowait(_END)
        except _Fatal as fatal:
            self.flush()
            self.queue.put_nowait(fatal)
        except ClientDisconnect:
            self.queue.put_nowait(_END)

    def add(self, raw: bytes) -> None:
        cfg, index = self.cfg, self.index
        if len(raw) > cfg.max_line_length + 2:  # + the JSON quotes
            raise _Fatal(index, f"problem {index} is over the limit of {cfg.max_line_length} characters")
        if index >= cfg.max_problems:
            raise _Fatal(index, f"more than {cfg.max_problems} problems; the limit is per stream")
        self.group.append(_entry(index, raw))
        self.chars += len(raw)
        if len(self.group) >= GROUP_LINES or self.chars >= cfg.max_queue_cells // 4:
            self.flush()

    def flush(self) -> None:
        if self.group:
            self.queue.put_nowait(self.group)
            self.sent += len(self.group)
            self.group, self.chars = [], 0


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


def _entry(index: int, raw: bytes) -> list:
    try:
        text = json.loads(raw)
    except ValueError:
        text = None
    if not isinstance(text, str):
        return [index, None, 'not a JSON string; send one problem per line, e.g. "123+877"']
    return [index, text, None]


async def _submit(runtime, group: list, max_steps: int | None):
    """Queue a group's valid problems -> a Future, or None if it has none. Invalid ones get their
    reason in place; a full queue is waited out."""
    delay = 0.001
    while True:
        texts = [e[1] for e in group if e[2] is None]
        if not texts:
            return None
        try:
            if sum(map(len, texts)) > OFFLOAD_CHARS:
                return await asyncio.to_thread(runtime.submit, texts, max_steps)
            return runtime.submit(texts, max_steps)
        except InputError:  # rare: give each invalid problem its reason, then submit the rest
            pending = [entry for entry in group if entry[2] is None]
            invalid = runtime.invalid([entry[1] for entry in pending], max_steps)
            for exc in invalid:
                pending[exc.line - 1][2] = exc.reason
            if not invalid:
                raise
        except QueueFull:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.05)


async def _records(service: Service, runtime, request, max_steps: int | None, start: float):
    metrics = service.metrics
    groups: asyncio.Queue = asyncio.Queue()
    reader = asyncio.create_task(_GroupReader(service.config, groups).run(request))
    inflight: collections.deque = collections.deque()
    reading, fatal, outcome = True, None, "ok"
    try:
        while True:
            while reading and len(inflight) < PIPELINE and not (inflight and groups.empty()):
                item = await groups.get()
                if item is _END or isinstance(item, _Fatal):
                    reading, fatal = False, (item if item is not _END else None)
                    break
                inflight.append((item, await _submit(runtime, item, max_steps)))
            if not inflight:
                break
            group, future = inflight.popleft()
            results = iter(await asyncio.wrap_future(future) if future is not None else ())
            out = []
            for index, _, error in group:
                if error is not None:
                    metrics.problems.labels("invalid").inc()
                    out.append(_dumps({"index": index, "error": error}))
                else:
                    r = next(results)
                    metrics.problems.labels("converged" if r.converged else "not_converged").inc()
                    out.append(_dumps({"index": index, **result_dict(r)}))
            yield "\n".join(out) + "\n"
        if fatal is not None:
            outcome = "too_large"
            yield fatal.record()
    except SeadError as exc:  # the status line is gone: the error can only be the last record
        closed = isinstance(exc, RuntimeClosed)
        outcome = "unavailable" if closed else "internal"
        yield _dumps({"error": "the server is shutting down" if closed else str(exc), "fatal": True}) + "\n"
    finally:
        reader.cancel()
        metrics.requests.labels("ndjson", outcome).inc()
        metrics.latency.labels("ndjson").observe(time.perf_counter() - start)
