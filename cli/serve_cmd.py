"""`sead serve`: the HTTP service (sead.serve) for one model. Needs the 'serve' extra."""
from __future__ import annotations

import typer

from sead.runtime.tasks import MAX_STEPS
from .options import Engine, engine_option, model_option


def serve(
    model: str = model_option("; fixed for the life of the server"),
    engine: Engine = engine_option(),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the server to the network)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind."),
    max_batch_cells: int = typer.Option(None, min=1, help="Cells per engine batch (default: the runtime's)."),
    max_wait_ms: float = typer.Option(2.0, min=0, help="How long a batch waits for more requests to coalesce."),
    max_queue_cells: int = typer.Option(1 << 24, min=1, help="Queued cells before requests get 429."),
    max_line_length: int = typer.Option(1_000_000, min=1, help="Characters per problem (413 above; less where the "
                                                               "model's verified size bounds its problems)."),
    max_problems: int = typer.Option(100_000, min=1, help="Problems per request or stream (413 above)."),
    max_body_bytes: int = typer.Option(64 << 20, min=1, help="Bytes per request body (413 above)."),
    max_steps: int = typer.Option(1_000_000, min=0, max=MAX_STEPS, help="The most steps a client may ask for "
                                  "(422 above); also rule110's generations when it names none."),
    max_request_work: int = typer.Option(10**11, min=1, help="Cell-steps (cells x step cap) one request or stream "
                                         "may cost at most (413 above)."),
    max_inflight_work: int = typer.Option(4 * 10**11, min=1, help="Cell-steps of all unfinished requests "
                                          "(429 above)."),
    max_large_bodies: int = typer.Option(2, min=1, help="JSON bodies over 1 MiB read at once (429 above)."),
    max_connections: int = typer.Option(256, min=1, help="Open connections (503 and closed above)."),
    header_timeout: float = typer.Option(10.0, min=0.001, help="Seconds for a request's headers to arrive."),
    keep_alive_timeout: float = typer.Option(5.0, min=0.001, help="Seconds an idle connection is kept open."),
    body_timeout: float = typer.Option(30.0, min=0.001, help="Seconds for a JSON body to arrive whole, and the "
                                       "longest pause in an NDJSON body (408 or a fatal record)."),
    workers: int = typer.Option(None, min=1, help="Runtime worker threads (default: one per core)."),
    drain_seconds: float = typer.Option(30.0, min=0, help="On SIGTERM, how long in-flight requests may finish; "
                                        "then their work is stopped and they get 503."),
) -> None:
    """Serve a model over HTTP: POST /v1/solve, GET /v1/models, /healthz, /readyz, /metrics; docs at /docs.

    Example: sead serve --model addition --port 8000 &
             curl -s localhost:8000/v1/solve -H 'content-type: application/json' -d '{"problems": ["12+30"]}'
    """
    from sead.serve.config import ServeConfig
    from sead.serve.server import serve as run_server

    run_server(ServeConfig(
        model=model, engine=engine.value, host=host, port=port, max_batch_cells=max_batch_cells,
        max_wait_ms=max_wait_ms, max_queue_cells=max_queue_cells, max_line_length=max_line_length,
        max_problems=max_problems, max_body_bytes=max_body_bytes, max_steps=max_steps,
        max_request_work=max_request_work, max_inflight_work=max_inflight_work, max_large_bodies=max_large_bodies,
        max_connections=max_connections, header_timeout=header_timeout, keep_alive_timeout=keep_alive_timeout,
        body_timeout=body_timeout, workers=workers, drain_seconds=drain_seconds))
