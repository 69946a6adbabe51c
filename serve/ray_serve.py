"""The HTTP service as a Ray Serve deployment: replicas of the same app, each with a Runtime of its
own (and so its own batching front); Ray Serve's proxy spreads requests over them.

    from sead.serve.ray_serve import deployment
    serve.run(deployment(ServeConfig(model="addition"), replicas=2), route_prefix="/")

or, from a shell on a cluster (`serve run` passes key=value arguments to `app`):

    serve run sead.serve.ray_serve:app model=addition replicas=4
"""
from __future__ import annotations

import dataclasses

from ray import serve

from .app import create_app
from .config import ServeConfig


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress()
class SeadReplica:
    """One replica: the model loaded once (sessions cannot be pickled, so never shipped), then the app."""

    def __init__(self, config: dict):
        from sead import Runtime

        self.config = ServeConfig(**config)
        self.runtime = Runtime(self.config.model, self.config.engine, **self.config.runtime_kwargs())

    def __serve_build_asgi_app__(self):
        return create_app(self.config, self.runtime)  # the app closes the runtime when the replica stops


def deployment(config: ServeConfig, replicas: int = 2, cpus_per_replica: float = 1):
    """-> a bound Ray Serve application of `replicas` replicas of the service for `config`."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    workers = config.workers or max(1, int(cpus_per_replica))
    config = dataclasses.replace(config, workers=workers)
    return SeadReplica.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica}).bind(
        dataclasses.asdict(config))


def app(args: dict):
    """The builder for `serve run sead.serve.ray_serve:app model=NAME engine=E replicas=N ...`: every
    key is a ServeConfig field (host and port are Ray Serve's own) or `replicas`."""
    fields = {f.name: f.type for f in dataclasses.fields(ServeConfig)}
    args = dict(args)
    replicas = int(args.pop("replicas", 2))
    unknown = set(args) - set(fields)
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: replicas, {', '.join(fields)}")
    convert = {k: (float if "float" in fields[k] else int if "int" in fields[k] else str) for k in args}
    return deployment(ServeConfig(**{k: convert[k](v) for k, v in args.items()}), replicas)
