"""`sead serve`: the HTTP service (sead.serve) for one model. Needs the 'serve' extra."""
from __future__ import annotations

import typer

from .options import Engine, engine_option, model_option


def serve(
    model: str = model_option("; fixed for the life of the server"),
    engine: Engine = engine_option(),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the server to the network)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind."),
    max_batch_cells: int = typer.Option(None, min=1, help="Cells per engine batch (default: the runtime's)."),
    max_wait_ms: float = typer.Option(2.0, min=0, help="How long a batch waits for more requests to coalesce."),
    max_queue_cells: int = typer.Option(1 << 24, min=1, help="Queued cells before requests get 429."),
    max_line_length: int = typer.Option(1_000_000, min=1, help="Characters per problem (413 above)."),
    max_problems: int = typer.Option(100_000, min=1, help="Problems per request or stream (413 above)."),
    max_body_bytes: int = typer.Option(64 << 20, min=1, help="Bytes per request body (413 above)."),
    workers: int = typer.Option(None, min=1, help="Runtime worker threads (default: one per core)."),
    drain_seconds: float = typer.Option(30.0, min=0, help="On SIGTERM, how long in-flight requests may finish."),
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
        max_problems=max_problems, max_body_bytes=max_body_bytes, workers=workers, drain_seconds=drain_seconds))
