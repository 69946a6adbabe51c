"""sead.serve: the toolkit as a service, built on the public runtime API only (`sead.Runtime`).

    app.py        the HTTP service (FastAPI): POST /v1/solve (JSON or NDJSON), /v1/models, health, metrics
    server.py     uvicorn around the app: bind, load the model, drain on SIGTERM (`sead serve`)
    ray_data.py   `sead run --ray`: a problem file through Ray Data map_batches, one Runtime per actor
    ray_serve.py  the same HTTP service as a Ray Serve deployment (replicas)
"""
