"""sead.serve: the toolkit as a service, built on the public runtime API only (`sead.Runtime`).

    app.py        the HTTP service (FastAPI): POST /v1/solve, /v1/models, /healthz, /readyz, /metrics
    ndjson.py     POST /v1/solve as a stream: one problem per line in, one record per problem out
    service.py    the loaded runtime and its metrics; runtime errors -> HTTP errors
    schemas.py    the JSON shapes (pydantic), metrics.py (Prometheus), config.py (ServeConfig)
    server.py     uvicorn around the app: bind, load the model, drain on SIGTERM (`sead serve`)
    ray_data.py   `sead run --ray`: a problem file through Ray Data map_batches, one Runtime per actor
    ray_serve.py  the same HTTP service as a Ray Serve deployment (replicas)
"""
