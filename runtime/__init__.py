"""sead's runtime: numpy and an engine, no torch. The public API for services and scripts:

    from sead.runtime import Runtime, Result
    from sead.runtime.errors import SeadError, InputError, ModelFileError, QueueFull, RuntimeClosed
"""
from .api import Runtime, make_engine
from .errors import EngineUnavailable, InputError, ModelFileError, QueueFull, RuntimeClosed, SeadError
from .loop import Result

__all__ = ["Runtime", "Result", "make_engine", "SeadError", "InputError", "ModelFileError", "EngineUnavailable",
           "QueueFull", "RuntimeClosed"]
