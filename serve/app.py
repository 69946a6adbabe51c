"""The HTTP service: FastAPI routes over one `sead.Runtime` (the public runtime API, nothing else).

    POST /v1/solve   {"problems": [...], "max_steps": N?} -> {"model", "results": [...]}
                     or, with Content-Type: application/x-ndjson, a stream (see ndjson.py)
    GET  /v1/models  the model's metadata          GET /metrics   Prometheus text
    GET  /healthz    the process answers           GET /readyz    the model is loaded (503 until then)

Every error is one JSON object {"error": code, "message": one line, ...} (codes and statuses: the
docs/serving.md). Solving never runs on the event loop: small requests are validated and
queued on it, large ones on a thread. A JSON request is bounded before it is parsed (bytes,
strings, time to arrive, large bodies at once) and before it is queued (step cap, work, in-flight
work: service.py); a client that leaves has its problems cancelled and counts as "disconnected".
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from sead.runtime.tasks import MAX_STEPS

from . import ndjson
from .config import ServeConfig
from .schemas import ErrorBody, ModelInfo, SolveRequest, SolveResponse
from .service import (OFFLOAD_CHARS, ApiError, ClientLeft, Flag, Service, result_dict, submit, validated_work,
                      watch_disconnect)

JSON, NDJSON = "application/json", ndjson.NDJSON
LARGE_BODY = 1 << 20  # bytes: a JSON body past this takes one of max_large_bodies slots
_ESCAPES = re.compile(rb"\\.", re.DOTALL)
GONE = 499  # nginx's "client closed request": never sent, the connection is gone


class StringCount:
    """The JSON strings in a body so far, counted as it arrives at C speed: once escapes are
    dropped, every quote opens or closes one. A valid request holds its problems and at most two
    keys, so more than max_problems + 2 strings is refused before the body is parsed (13 million
    one-character problems are 64 MiB of body but hundreds of MB once parsed into Python objects)."""

    def __init__(self):
        self.quotes, self.escaped = 0, False  # escaped: the last piece ended inside an escape

    def feed(self, chunk: bytes) -> int:
        if self.escaped:
            chunk, self.escaped = chunk[1:], False
        if b"\\" in chunk:
            chunk = _ESCAPES.sub(b"", chunk)  # only a lone backslash at the very end is left
            self.escaped = chunk.endswith(b"\\")
        self.quotes += chunk.count(b'"')
        return self.quotes // 2


async def read_body(service: Service, request: Request, held: contextlib.ExitStack) -> bytearray:
    """The whole JSON body, within body_timeout; refused (413) as soon as it is too long or holds
    too many strings, and (429) when it is large and max_large_bodies others are being read."""
    cfg = service.config
    limit, length = cfg.max_body_bytes, request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"the body has {length} bytes; the limit is {limit}")
    body, strings, large = bytearray(), StringCount(), False
    deadline = asyncio.get_running_loop().time() + cfg.body_timeout
    more = True
    while more:
        try:
            message = await service.wait(request.receive(), timeout=deadline - asyncio.get_running_loop().time())
        except TimeoutError:
            raise ApiError(408, "timeout", f"the body did not arrive within {cfg.body_timeout:g} s "
                                           "(sead serve --body-timeout)") from None
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if len(body) + len(chunk) > limit:
            raise ApiError(413, "too_large", f"the body is over the limit of {limit} bytes")
        if strings.feed(chunk) > cfg.max_problems + 2:
            raise ApiError(413, "too_large", f"more than {cfg.max_problems} problems; the limit is per request")
        if not large and (len(body) + len(chunk) > LARGE_BODY or (length.isdigit() and int(length) > LARGE_BODY)):
            service.take_large_body()
            held.callback(service.give_large_body)
            large = True
        body += chunk
    return body


def parse_request(body: bytes, cfg: ServeConfig, line_limit: int) -> SolveRequest:
    try:
        req = SolveRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {errors[0]['msg']}") from None
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors[:20]]
        where = ".".join(map(str, errors[0]["loc"])) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {errors[0]['msg']}", details=details) from None
    if len(req.problems) > cfg.max_problems:
        raise ApiError(413, "too_large", f"{len(req.problems)} problems; the limit is {cfg.max_problems} per request")
    chars = 0
    for index, line in enumerate(req.problems):
        if len(line) > line_limit:
            raise ApiError(413, "too_large", f"problem {index} has {len(line)} characters; "
                                             f"the limit is {line_limit}", index=index)
        chars += len(line)
    if chars > cfg.max_queue_cells:  # a problem has at most as many cells as characters
        raise ApiError(413, "too_large", f"the problems total {chars} characters, more than the queue holds "
                                         f"({cfg.max_queue_cells} cells): split the request")
    return req


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def create_app(config: ServeConfig, runtime=None) -> FastAPI:
    """The service for `config.model`. With `runtime` (a loaded sead.Runtime) it is ready at once;
    without, the model loads in the background at startup and /readyz says when. Either way the
    app closes the runtime at shutdown, after in-flight requests."""
    service = Service(config, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.load()) if service.runtime is None else None
        yield
        if loading is not None:
            await loading
        await service.close()

    app = FastAPI(title="sead", version="1", lifespan=lifespan,
                  description="Problems in, answers out: a SEAD model iterated to its fixed point. "
                              f"This server runs the model '{config.model_name}'.")
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return ApiError(422, "invalid_request", f"{'.'.join(map(str, first['loc']))}: {first['msg']}").response()

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and the server takes requests",
             responses={503: {"description": "loading, failed or shutting down"}})
    async def readyz():
        if service.runtime is None:
            status = "failed" if service.load_error else "loading"
            return JSONResponse({"status": status, "message": service.load_error or "loading"}, 503)
        return {"status": "ready", "model": config.model_name, "engine": service.runtime.engine_name}

    @app.get("/v1/models", response_model=ModelInfo, summary="The model this server runs",
             responses={503: {"model": ErrorBody}})
    async def models():
        try:
            rt = service.ready_runtime()
        except ApiError as exc:
            return exc.response()
        return {"model": config.model_name, "engine": rt.engine_name, "metadata": dataclasses.asdict(rt.metadata)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/solve", summary="Solve problems", response_model=SolveResponse,
        openapi_extra={"requestBody": {"required": True, "content": {
            JSON: {"schema": SolveRequest.model_json_schema()},
            NDJSON: {"schema": {"type": "string", "description": ndjson.BODY_DOC}}}}},
        responses={200: {"content": {NDJSON: {"schema": {"type": "string", "description": ndjson.RESPONSE_DOC}}}},
                   **{s: {"model": ErrorBody} for s in (400, 408, 413, 415, 422, 429, 503)}})
    async def solve(request: Request, max_steps: int | None = Query(
            None, ge=0, le=MAX_STEPS, description="The step cap per problem (a JSON body's max_steps wins); "
                                                  "at most the server's --max-steps")):
        """JSON: every problem is validated first; one invalid problem -> 400 listing each, nothing solved.
        NDJSON: one JSON string per line in, one record per problem out, in order."""
        mode = "ndjson" if media_type(request) == NDJSON else "json"
        start, outcome = time.perf_counter(), "ok"
        try:
            if mode == "ndjson":
                outcome = None  # a stream counts itself when it ends
                return ndjson.response(service, request, max_steps, start)
            return await solve_json(service, request, max_steps)
        except ClientLeft:
            outcome = "disconnected"
            return Response(status_code=GONE)
        except ApiError as exc:
            outcome = exc.code
            return exc.response()
        finally:
            if outcome is not None:
                service.metrics.requests.labels(mode, outcome).inc()
                service.metrics.latency.labels(mode).observe(time.perf_counter() - start)

    return app


async def solve_json(service: Service, request: Request, max_steps: int | None) -> Response:
    """max_steps: the query parameter's; the body's wins."""
    cfg, metrics = service.config, service.metrics
    rt = service.ready_runtime()
    if media_type(request) not in ("", JSON):
        raise ApiError(415, "unsupported_media_type", f"send {JSON} or {NDJSON}, not {media_type(request)!r}")
    with contextlib.ExitStack() as held:
        body = await read_body(service, request, held)
        big = len(body) > OFFLOAD_CHARS
        req = await asyncio.to_thread(parse_request, body, cfg, service.line_limit) if big \
            else parse_request(body, cfg, service.line_limit)
        del body  # a large request's problems are in memory once, not twice, while it runs
        cap = service.step_cap(req.max_steps if req.max_steps is not None else max_steps)
        ticket = None
        try:
            parsed, work = await asyncio.to_thread(validated_work, rt, req.problems, cap) if big \
                else validated_work(rt, req.problems, cap)
            service.check_work(work)
            ticket = service.admit(work)
            future = await asyncio.to_thread(submit, rt, parsed, cap) if big else submit(rt, parsed, cap)
        except BaseException as exc:  # cancelled too: the share taken must come back
            if ticket is not None:
                ticket.release()
            if isinstance(exc, ApiError):
                invalid = len(exc.extra.get("invalid", ()))
                if invalid:
                    metrics.problems.labels("invalid").inc(invalid)
                if len(req.problems) > invalid:
                    metrics.problems.labels("refused").inc(len(req.problems) - invalid)
            raise
        ticket.attach(future)
        left = Flag()
        watch = asyncio.create_task(watch_disconnect(request, left))
        try:
            results = await service.results(future, left)
        finally:
            watch.cancel()
    metrics.count_results(results)
    payload = {"model": cfg.model_name, "results": [result_dict(r) for r in results]}
    return Response(json.dumps(payload, separators=(",", ":")), media_type=JSON)

