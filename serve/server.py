"""`sead serve`: the app on uvicorn (http_server.py). It binds first, then loads the model (GET /readyz
says when); if the model cannot load, it stops and the command fails with one line. On SIGTERM or
Ctrl-C, uvicorn stops accepting connections and lets in-flight requests finish for up to
drain_seconds; what is still running then is cancelled between engine calls and its clients get
503; the app closes the runtime, and the process exits 0."""
from __future__ import annotations

import logging
import sys

from sead.runtime.errors import SeadError

from .config import ServeConfig


def require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SeadError(f"sead serve needs the 'serve' extra ({exc.name} is missing): pip install 'sead[serve]'") from None


def serve(config: ServeConfig) -> None:
    """Serve until SIGTERM / Ctrl-C; raises SeadError if the model cannot be loaded."""
    require_serve_extra()

    # The event loop shares the GIL with the runtime's workers, whose Python parts (encoding,
    # decoding, the loop) would hold it for up to the default 5 ms switch interval each time. At
    # 0.5 ms, 64 clients of 32 problems got 1.5x the requests/s on 2 cores (bench/load.py).
    sys.setswitchinterval(0.0005)

    from .app import create_app
    from .http_server import make_server

    app = create_app(config)
    service = app.state.service
    server = make_server(config, app)
    log = logging.getLogger("uvicorn.error")

    def failed() -> None:
        log.error("cannot load the model: %s", service.load_error)
        server.should_exit = True

    service.on_load_error = failed
    service.on_loaded = lambda: log.info("model %s loaded on engine %s: ready (OpenAPI docs at /docs)",
                                         config.model_name, service.runtime.engine_name)
    server.run()
    if service.load_error:
        raise SeadError(service.load_error)
