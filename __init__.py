"""sead: train, export and deploy SEAD models (neural cellular automata that iterate one local rule
until the state settles).

    sead.train    PyTorch: the model, data and training loop, checkpoints, evaluation
    sead.export   checkpoint -> one-step ONNX graph, verified against PyTorch
    sead.runtime  numpy + engines: task codecs, the convergence loop (no torch)
    sead.cli      the `sead` command line
"""
__version__ = "0.1.0"


def __getattr__(name: str):  # TEMPORARY API SHIM (serve branch): `from sead import Runtime, Result`
    if name in ("Runtime", "Result"):
        from . import runtime
        return getattr(runtime, name)
    raise AttributeError(name)
