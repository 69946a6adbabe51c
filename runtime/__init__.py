"""sead's runtime: numpy and an engine, no torch. The public API for services and scripts:

    from sead.runtime import Runtime, Result, Results, Answered
    from sead.runtime.errors import SeadError, InputError, ModelFileError, QueueFull, RuntimeClosed
"""
from .api import Answered, Runtime
from .engines import ENGINES, make_engine
from .errors import EngineUnavailable, InputError, InternalError, ModelFileError, QueueFull, RuntimeClosed, SeadError
from .loop import Result, Results

__all__ = ["Runtime", "Result", "Results", "Answered", "make_engine", "ENGINES", "SeadError", "InputError", "ModelFileError",
           "EngineUnavailable", "InternalError", "QueueFull", "RuntimeClosed"]
