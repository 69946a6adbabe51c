"""The engines, by name: one registry of what each is called, what it needs, and how to make one.

    make_engine(step, "auto")   trt, then ort-cuda, then ort: the first that starts here

The GPU engines run their small tile windows on `ort` (host_windows.py).

Each engine implements runtime/engines/protocol.py and lives in its own module, imported only
when that engine is asked for (onnxruntime, tensorrt and CUDA are optional).
"""
from __future__ import annotations

import sys
from typing import Callable, NamedTuple

from ..errors import EngineUnavailable, SeadError


class EngineSpec(NamedTuple):
    name: str
    needs: str                                # what a machine must have, for help texts
    make: Callable[..., object]               # make(step, k=None) -> Engine


def _ort(step, k=None):
    from .ort import K_CHOICES, OrtEngine
    return OrtEngine(step, "cpu", k_choices=_ks(K_CHOICES, k))


# The GPU engines run a tape's small tile windows on the host (with_host_windows), and a tile holds
# as many cells as the deepest K: so they take the CPU's K, up to 128 unless k says otherwise. Through
# the split, 10^6 nines took 1.35x as long with K up to 256 (parity 0.93x) and 4.4x with up to 8
# (parity 9.5x) (bench/host_tiles.py, bench/results/host_tiles_ort_cpu.json).

def _ort_cuda(step, k=None):
    from .ort import K_CHOICES, OrtEngine
    return with_host_windows(step, OrtEngine(step, "cuda", k_choices=_ks(K_CHOICES, k)))


def _trt(step, k=None):
    from .ort import K_CHOICES
    from .trt import TrtEngine
    return with_host_windows(step, TrtEngine(step, k or K_CHOICES[-1]))


def with_host_windows(step, device):
    """A GPU engine whose small tile windows run on `ort` on the CPU (runtime/engines/host_windows.py)."""
    from .host_windows import HostWindows
    from .ort import OrtEngine
    return HostWindows(device, lambda: OrtEngine(step, "cpu", k_choices=device.k_choices, workers=1))


def _ks(default: tuple[int, ...], k: int | None) -> tuple[int, ...]:
    """k fixes the deepest call; the engine still offers the shallower powers of two."""
    return default if k is None else tuple(c for c in default if c < k) + (k,)


ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec("ort", "onnxruntime (pip install 'sead[cpu]')", _ort),
    EngineSpec("ort-cuda", "onnxruntime-gpu and an NVIDIA GPU (pip install 'sead[cuda]')", _ort_cuda),
    EngineSpec("trt", "TensorRT, cuda-python and an NVIDIA GPU (pip install 'sead[tensorrt]')", _trt),
)}
AUTO_ORDER = ("trt", "ort-cuda", "ort")
ENGINE_CHOICES = ("auto", *ENGINES)


def make_engine(step, engine: str = "auto", k: int | None = None):
    """-> an engine for the step. `auto` tries AUTO_ORDER and says on stderr why it passed over an
    engine whose package is installed. k: the deepest number of steps per call."""
    if engine == "auto":
        for name in AUTO_ORDER:
            try:
                return ENGINES[name].make(step, k)
            except EngineUnavailable as exc:
                if not exc.quiet:
                    print(f"sead: engine '{name}' unavailable ({exc}); trying the next", file=sys.stderr, flush=True)
        raise EngineUnavailable("no engine is available: pip install 'sead[cpu]' for ONNX Runtime on the CPU")
    if engine not in ENGINES:
        raise SeadError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    return ENGINES[engine].make(step, k)
