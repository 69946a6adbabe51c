"""POST /v1/solve with Content-Type: application/x-ndjson: problems stream in, results stream out.

In: one JSON string per line ("123+877"); empty lines are skipped. Out: one JSON object per problem,
in input order: {"index", "output", "steps", "converged"}, or {"index", "error"} for a line that is
not a JSON string or not a valid problem (`error` is the reason `sead run` prints). An invalid
problem does not stop the stream: the status line (200) went out with the first answers, and the
other problems are independent, so they are answered, as `sead run --skip-invalid --format jsonl`
does.

A limit ends the stream instead: a body over max_body_bytes, a line over the line limit (+2 bytes
for the JSON quotes), more than max_problems problems, problems whose work passes
max_request_work (the bound is per stream), a body that stops arriving for body_timeout, the
server's drain period ending, an internal error. The last record is then {"index", "error",
"fatal": true} (no index when the server stopped), and nothing after that index is answered. A
client that sees no `fatal` record got one record for every problem. Every stream ends.

The body is read as it arrives (never blocked by answers the client has not read yet, so a client
that sends everything before reading cannot deadlock), cut into groups of the lines of each
arriving chunk (at most GROUP_LINES), and at most PIPELINE groups are in the runtime at once. A
group that finds the runtime's queue or the in-flight work bound full waits and retries rather
than failing. A client that leaves has its groups cancelled in the runtime; the stream then
counts as "disconnected".
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from json.encoder import encode_basestring_ascii as _string  # json.dumps's own quoting of a str

from starlette.responses import StreamingResponse

from sead.runtime.errors import InputError, QueueFull, RuntimeClosed, SeadError

from .service import OFFLOAD_CHARS, ApiError, ClientLeft, Flag, Service, watch_disconnect

NDJSON = "application/x-ndjson"
GROUP_LINES = 4096
PIPELINE = 4
BODY_DOC = 'One JSON string per line, e.g. "123+877"; the step cap goes in the max_steps query parameter.'
RESPONSE_DOC = ('One JSON object per problem, in order: {"index","output","steps","converged"}, or '
                '{"index","error"} for an invalid one; a last {"index","error","fatal":true} if a limit cut the stream.')
NOT_A_STRING = 'not a JSON string; send one problem per line, e.g. "123+877"'
# lines (joined by b"\n") that are each a JSON string with nothing to unescape: no quote, backslash
# or control character inside. json.loads gives such a string's characters as they are.
_PLAIN_LINES = re.compile(rb'(?:"[^"\\\x00-\x1f]*"\n)*"[^"\\\x00-\x1f]*"')
# answers that json's string quoting leaves as they are between the quotes (ASCII, nothing to escape)
_PLAIN_TEXT = re.compile(r'[^"\\\x00-\x1f\x7f-\U0010ffff]*')
_END = object()
log = logging.getLogger("sead.serve")


class _Fatal(Exception):
    """What ends a stream early: the last record, and the request outcome it counts as."""

    def __init__(self, index: int | None, message: str, code: str):
        super().__init__(message)
        self.index, self.message, self.code = index, message, code

    def record(self) -> str:
        head = {} if self.index is None else {"index": self.index}
        return _dumps({**head, "error": self.message, "fatal": True}) + "\n"


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
    cap = service.step_cap(max_steps)
    return DuplexStream(_records(service, runtime, request, cap, start), media_type=NDJSON)


class _GroupReader:
    """The request body -> groups of [index, text, error] entries on `queue`, then _END or a _Fatal;
    after the body, it watches for the client leaving (`left`)."""

    def __init__(self, service: Service, queue: asyncio.Queue, left: Flag):
        self.service, self.cfg, self.queue, self.left = service, service.config, queue, left
        self.line_limit = service.line_limit
        self.group: list = []
        self.chars = self.sent = 0  # characters in the group; problems in groups already queued

    @property
    def index(self) -> int:
        return self.sent + len(self.group)

    async def run(self, request) -> None:
        try:
            await self.read(request)
        except _Fatal as fatal:
            self.flush()
            self.queue.put_nowait(fatal)
        except ClientLeft:
            self.left.set()
        except ApiError:  # the server stopped: the stream's own wait says so
            pass
        except Exception as exc:  # a bug here must still end the stream, with a record that says so
            log.exception("reading an NDJSON body failed")
            self.queue.put_nowait(_Fatal(self.index, f"internal error reading the body: {type(exc).__name__}",
                                         "internal"))
        else:
            self.queue.put_nowait(_END)
            await watch_disconnect(request, self.left)

    async def read(self, request) -> None:
        cfg, buf, size, more = self.cfg, bytearray(), 0, True
        while more:
            try:
                message = await self.service.wait(request.receive(), timeout=cfg.body_timeout)
            except TimeoutError:
                raise _Fatal(self.index, f"the body stopped: nothing arrived for {cfg.body_timeout:g} s "
                                         "(sead serve --body-timeout)", "timeout") from None
            if message["type"] == "http.disconnect":
                raise ClientLeft
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise _Fatal(self.index, f"the body is over the limit of {cfg.max_body_bytes} bytes", "too_large")
            buf += chunk
            *lines, rest = buf.split(b"\n")
            buf = bytearray(rest)
            self.add_lines([raw for raw in (line.strip() for line in lines) if raw])
            self.flush()  # answer what has arrived before waiting for more
            if len(buf) > self.line_limit + 2:
                self.add(bytes(buf))  # fails: the line is already too long
        if buf.strip():  # a last line without a newline
            self.add(bytes(buf.strip()))
        self.flush()

    def add_lines(self, lines: list[bytes]) -> None:
        """add() each of these (stripped, non-empty) lines; where none of them meets a limit or
        fills a group, as one (what add() would do, decoded in bulk by _entries)."""
        cfg = self.cfg
        while lines:
            take, lines = lines[: GROUP_LINES - len(self.group)], lines[GROUP_LINES - len(self.group):]
            chars = sum(map(len, take))
            if max(map(len, take)) > self.line_limit + 2 or self.index + len(take) > cfg.max_problems \
                    or self.chars + chars >= cfg.max_queue_cells // 4:
                for raw in take:
                    self.add(raw)
                continue
            self.group += _entries(self.index, take)
            self.chars += chars
            if len(self.group) >= GROUP_LINES:
                self.flush()

    def add(self, raw: bytes) -> None:
        cfg, index = self.cfg, self.index
        if len(raw) > self.line_limit + 2:  # + the JSON quotes
            raise _Fatal(index, f"problem {index} is over the limit of {self.line_limit} characters", "too_large")
        if index >= cfg.max_problems:
            raise _Fatal(index, f"more than {cfg.max_problems} problems; the limit is per stream", "too_large")
        self.group += _entries(index, [raw])
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


_ANSWERED = '{{"index":{},"output":"{}","steps":{},"converged":true}}'.format


def _group_records(group: list, results) -> str:
    """The records of one group, in order: each line `_dumps` would write for it (tested), made
    without a dict per problem. group: [index, text, error] entries; results: the Results of
    those without an error, in order (None if every entry has one)."""
    out, k = [], 0
    answers, steps, converged = (results.answers, results.steps.tolist(), results.converged.tolist()) \
        if results is not None else ((), (), ())
    if len(answers) == len(group) and all(converged) and _PLAIN_TEXT.fullmatch("".join(answers)):
        # every problem answered, and no answer with anything to escape: one format per record
        return "\n".join(map(_ANSWERED, [entry[0] for entry in group], answers, steps)) + "\n"
    for index, _, error in group:
        if error is not None:
            out.append(f'{{"index":{index},"error":{_string(error)}}}')
            continue
        answer = answers[k]
        out.append(f'{{"index":{index},"output":{"null" if answer is None else _string(answer)},'
                   f'"steps":{steps[k]},"converged":{"true" if converged[k] else "false"}}}')
        k += 1
    return "\n".join(out) + "\n"


def _entries(start: int, raws: list[bytes]) -> list:
    """The [index, text, error] entry of each line (stripped, non-empty), numbered from start:
    as _entry gives it (tested), decoded at once where every line is a plain JSON string."""
    joined = b"\n".join(raws)
    if _PLAIN_LINES.fullmatch(joined):
        try:
            text = joined.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return [[index, line[1:-1], None] for index, line in zip(range(start, start + len(raws)), text.split("\n"))]
    return [_entry(start + k, raw) for k, raw in enumerate(raws)]


def _entry(index: int, raw: bytes) -> list:
    if not raw.startswith(b'"'):  # not a string: never decoded, so no nesting can reach the parser
        return [index, None, NOT_A_STRING]
    try:
        text = json.loads(raw.decode("utf-8"))  # NDJSON is UTF-8 (json.loads on bytes would guess)
    except (ValueError, RecursionError):  # every way decoding and json.loads fail
        text = None
    if not isinstance(text, str):
        return [index, None, NOT_A_STRING]
    return [index, text, None]


class _Submitter:
    """A stream's groups into the runtime, within its work bound and the server's in-flight bound."""

    def __init__(self, service: Service, runtime, max_steps: int | None, left: Flag):
        self.service, self.runtime, self.max_steps, self.left = service, runtime, max_steps, left
        self.work = 0  # of the stream's problems so far

    async def submit(self, group: list):
        """Queue a group's valid problems -> a Future, or None if it has none. Invalid ones get
        their reason in place; a full queue or in-flight bound is waited out."""
        runtime, cap = self.runtime, self.max_steps
        texts = [e[1] for e in group if e[2] is None]
        if not texts:
            return None
        offload = sum(map(len, texts)) > OFFLOAD_CHARS
        try:
            problems, evaluations, _ = await self._call(offload, runtime.validate, texts, cap)
        except InputError:  # rare: give each invalid problem its reason, then take the rest
            pending = [entry for entry in group if entry[2] is None]
            _, errors = await self._call(offload, runtime.split_invalid, texts, cap)
            for offset, exc in errors.items():
                pending[offset][2] = exc.reason
            texts = [e[1] for e in group if e[2] is None]
            if not texts:
                return None
            problems, evaluations, _ = await self._call(offload, runtime.validate, texts, cap)
        work = runtime.work_of(problems, evaluations)
        self.work += work
        try:
            self.service.check_work(self.work, "stream")
        except ApiError as exc:
            raise _Fatal(group[0][0], exc.message, exc.code) from None
        delay = 0.001
        while True:
            try:
                ticket = self.service.admit(work)
            except ApiError:  # the in-flight bound is full: wait for others' work to finish
                ticket = None
            if ticket is not None:
                try:
                    future = await self._call(offload, runtime.submit_parsed, problems, cap)
                except BaseException as exc:  # QueueFull is waited out; anything else (cancelled too) ends it
                    ticket.release()
                    if not isinstance(exc, QueueFull):
                        raise
                else:
                    ticket.attach(future)
                    return future
            await self.service.wait(asyncio.sleep(delay), left=self.left)
            delay = min(2 * delay, 0.05)

    @staticmethod
    async def _call(offload: bool, fn, *args):
        return await asyncio.to_thread(fn, *args) if offload else fn(*args)


async def _records(service: Service, runtime, request, max_steps: int | None, start: float):
    metrics = service.metrics
    groups: asyncio.Queue = asyncio.Queue()
    left = Flag()
    reader = asyncio.create_task(_GroupReader(service, groups, left).run(request))
    submitter = _Submitter(service, runtime, max_steps, left)
    inflight: collections.deque = collections.deque()
    reading, fatal, outcome = True, None, "ok"
    try:
        while True:
            while reading and len(inflight) < PIPELINE and not (inflight and groups.empty()):
                item = await service.wait(groups.get(), left=left)
                if item is _END or isinstance(item, _Fatal):
                    reading, fatal = False, (item if item is not _END else None)
                    break
                try:
                    inflight.append((item, await submitter.submit(item)))
                except _Fatal as exc:  # the stream's work bound: answer what is in flight, then stop
                    reading, fatal = False, exc
            if not inflight:
                break
            group, future = inflight.popleft()
            results = await service.results(future, left) if future is not None else None
            yield _group_records(group, results)
            invalid = len(group) - (len(results) if results is not None else 0)
            if invalid:
                metrics.problems.labels("invalid").inc(invalid)
            if results is not None:
                metrics.count_results(results)
        if fatal is not None:
            outcome = fatal.code
            yield fatal.record()
    except ClientLeft:  # nothing can reach it: end without a word
        outcome = "disconnected"
    except ApiError as exc:  # the drain period ended, or the runtime failed; the status line is gone,
        outcome = exc.code  # so the error can only be the last record
        yield _Fatal(None, exc.message, exc.code).record()
    except SeadError as exc:  # from submit() or work()
        closed = isinstance(exc, RuntimeClosed)
        outcome = "unavailable" if closed else "internal"
        yield _Fatal(None, "the server is shutting down" if closed else str(exc), outcome).record()
    except Exception as exc:  # a bug must still end the stream, with a record that says so
        log.exception("an NDJSON stream failed")
        outcome = "internal"
        yield _Fatal(None, f"internal error: {type(exc).__name__}", outcome).record()
    finally:
        reader.cancel()
        for _, future in inflight:  # a stream cut short: its problems still queued go
            if future is not None:
                future.cancel()
        metrics.requests.labels("ndjson", outcome).inc()
        metrics.latency.labels("ndjson").observe(time.perf_counter() - start)
