"""sead.serve: the toolkit as a service, built on the public runtime API only (`sead.Runtime`).

    app.py        the HTTP service (FastAPI): POST /v1/solve, /v1/models, /healthz, /readyz, /metrics
    ndjson.py     POST /v1/solve as a stream: one problem per line in, one record per problem out
    service.py    the loaded runtime and its metrics; runtime errors -> HTTP errors
    schemas.py    the JSON shapes (pydantic), metrics.py (Prometheus), config.py (ServeConfig)
    server.py     `sead serve`: bind, load the model, serve until SIGTERM
    http_server.py uvicorn with bounds on slow and idle clients, a connection cap, a drain that ends
    ray_data.py   `sead run --ray`: a problem file through Ray Data map_batches, one Runtime per actor
    ray_serve.py  the same HTTP service as a Ray Serve deployment (replicas)
"""
