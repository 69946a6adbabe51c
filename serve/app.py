"""The HTTP service: FastAPI routes over one `sead.Runtime` (the public runtime API, nothing else).

    POST /v1/solve   {"problems": [...], "max_steps": N?} -> {"model", "results": [...]}
                     or, with Content-Type: application/x-ndjson, a stream (see ndjson.py)
    GET  /v1/models  the model's metadata          GET /metrics   Prometheus text
    GET  /healthz    the process answers           GET /readyz    the model is loaded (503 until then)

Every error is one JSON object {"error": code, "message": one line, ...} (codes and statuses: the
README's Serving section). Runtime
work never runs on the event loop: small requests await `solve_async`, large ones are validated and
submitted on a thread.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from . import ndjson
from .config import ServeConfig
from .schemas import ErrorBody, ModelInfo, SolveRequest, SolveResponse
from .service import OFFLOAD_CHARS, ApiError, Service, result_dict, submit

JSON, NDJSON = "application/json", ndjson.NDJSON


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"the body has {length} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, cfg: ServeConfig) -> SolveRequest:
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
        if len(line) > cfg.max_line_length:
            raise ApiError(413, "too_large", f"problem {index} has {len(line)} characters; "
                                             f"the limit is {cfg.max_line_length}", index=index)
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
                   **{s: {"model": ErrorBody} for s in (400, 413, 415, 422, 429, 503)}})
    async def solve(request: Request, max_steps: int | None = Query(
            None, ge=0, le=2**31 - 1, description="The step cap per problem (a JSON body's max_steps wins)")):
        """JSON: every problem is validated first; one invalid problem -> 400 listing each, nothing solved.
        NDJSON: one JSON string per line in, one record per problem out, in order."""
        mode = "ndjson" if media_type(request) == NDJSON else "json"
        start, outcome = time.perf_counter(), "ok"
        try:
            if mode == "ndjson":
                outcome = None  # a stream counts itself when it ends
                return ndjson.response(service, request, max_steps, start)
            return await solve_json(service, request, max_steps)
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
    body = await read_body(request, cfg.max_body_bytes)
    big = len(body) > OFFLOAD_CHARS
    req = await asyncio.to_thread(parse_request, body, cfg) if big else parse_request(body, cfg)
    try:
        results = await submit(rt, req.problems, req.max_steps if req.max_steps is not None else max_steps, big)
    except ApiError as exc:
        invalid = len(exc.extra.get("invalid", ()))
        if invalid:
            metrics.problems.labels("invalid").inc(invalid)
        if len(req.problems) > invalid:
            metrics.problems.labels("refused").inc(len(req.problems) - invalid)
        raise
    metrics.count_results(results)
    payload = {"model": cfg.model_name, "results": [result_dict(r) for r in results]}
    return Response(json.dumps(payload, separators=(",", ":")), media_type=JSON)
