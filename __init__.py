"""sead: train, export and deploy SEAD models (neural cellular automata that iterate one local rule
until the state settles).

    sead.train    PyTorch: the model, data and training loop, checkpoints, evaluation
    sead.export   checkpoint -> one-step ONNX graph, verified against PyTorch
    sead.runtime  numpy + engines: task codecs, tiles, the convergence loop, the batching front (no torch)
    sead.cli      the `sead` command line

`from sead import Runtime, Result` is the runtime's public entry point (imported on first use).
"""
__version__ = "0.1.0"
__all__ = ["Runtime", "Result", "__version__"]


def __getattr__(name: str):
    if name in ("Runtime", "Result"):
        from . import runtime
        return getattr(runtime, name)
    raise AttributeError(f"module 'sead' has no attribute {name!r}")
