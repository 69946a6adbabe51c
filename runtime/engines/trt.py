"""TensorRT engine `trt`: the channels-last graphs (runtime/graph/cl.py) as TensorRT engines,
with the state resident on the GPU between calls (TensorRT 10 or 11, cuda-python 12 or 13; both
imported lazily).

Checked only by a simulation (tests/test_trt_engine_cpu.py: a fake TensorRT and CUDA runtime
that run the graphs with ONNX Runtime on the CPU and check what TensorRT and CUDA would refuse).
Neither TensorRT nor a GPU was available where this was written: the calls follow TensorRT's
documented Python API (docs/tensorrt.md lists the names relied on), never a run on hardware.

Plans (one serialized TensorRT engine per graph): prepare (fresh, or from state codes), advance
(one per K and mode: count, budget, hot, owned) and finish. Each is built once per model, TensorRT
version, GPU and profile, and cached on disk (SEAD_TRT_CACHE, default ~/.cache/sead/trt) in an
envelope with a checksum: a damaged or stale file is rebuilt, never run. prepare, the shallowest
count advance and finish are built when the engine starts (so a model TensorRT cannot take fails
there); the others when first asked for, each announced on stderr.

One optimization profile per plan: rows of 1..max_row_cells cells, 1..rows_limit rows, so that no
tensor at the profile's largest shapes reaches 2^31 elements (TensorRT's limit). A batch is one
CUDA stream with its own device buffers, one execution context per plan it runs, and one block of
activation memory that those contexts share (they run one after another on the stream).

TensorRT has no uint16: state codes of up to 16-bit travel as int32 (every code is < 2^17).
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import graph
from ..errors import EngineUnavailable, InternalError, SeadError
from ..layout import neighbour_table
from ..model_file import StepModel
from ..rule import Rule

HINT = ("engine 'trt' needs TensorRT and a CUDA GPU: pip install 'sead[tensorrt]' "
        "(CUDA 12; 'sead[tensorrt-cu13]' for CUDA 13; docs/tensorrt.md)")
MAX_ELEMENTS = (1 << 31) - 1           # TensorRT's per-tensor element limit
MAX_ROW_CELLS = {1: 1 << 12, 2: 1 << 16}  # tapes are tiled past this; a grid is one row (200 x 200 digits fit)
OPT_CELLS = {1: 64, 2: 256}            # profile shapes where TensorRT times tactics: a typical short row ...
OPT_ROWS = 1 << 12                     # ... and the runtime's default max_batch_rows
BATCH_CELLS = 1 << 20                  # a GPU call's launch cost is worth spreading over this many cells
MAGIC = b"SEADTRT1"                    # cache envelope: MAGIC, sha256(key), sha256(plan), plan


def _modules():
    """-> (tensorrt, cuda runtime bindings), or EngineUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        raise EngineUnavailable(f"{HINT} ({type(exc).__name__}: {exc})", quiet=isinstance(exc, ImportError)) from None
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (the only place in 13)
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
    except Exception as exc:
        raise EngineUnavailable(f"{HINT} (cuda-python: {type(exc).__name__}: {exc})",
                                quiet=isinstance(exc, ImportError)) from None
    return trt, cudart


class _Cuda:
    """cu("cudaMallocAsync", n, stream): calls the CUDA runtime; SeadError naming the call on failure."""

    def __init__(self, cudart):
        self.rt = cudart

    def __call__(self, name: str, *args):
        out = getattr(self.rt, name)(*args)
        if out[0] != self.rt.cudaError_t.cudaSuccess:
            raise SeadError(f"CUDA call {name} failed: {getattr(out[0], 'name', out[0])}")
        return out[1] if len(out) == 2 else out[1:] or None


def _k_choices(k: int) -> tuple[int, ...]:
    """Powers of two below k, and k: 1 and 2 always (a generations tape's last steps need them)."""
    return tuple(sorted({1, 2, k, *(1 << i for i in range(k.bit_length()) if 1 << i < k)}))


def _trt_types(model):
    """The graph with uint16/uint32 state codes as int32 (its graph IO and the Cast that makes
    them): TensorRT has no unsigned type wider than 8 bits."""
    from onnx import TensorProto
    wide = (TensorProto.UINT16, TensorProto.UINT32)
    for io in (*model.graph.input, *model.graph.output):
        if io.type.tensor_type.elem_type in wide:
            io.type.tensor_type.elem_type = TensorProto.INT32
    for node in model.graph.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i in wide:
                a.i = TensorProto.INT32
    return model


class _Plan:
    """One built graph: its ICudaEngine and IO, {name: (is_input, dims, numpy dtype)}; dims hold
    "batch" and "cells" where a batch's B and L go."""

    def __init__(self, name: str, engine, io: dict, memory_bound: int):
        self.name, self.engine, self.io, self.memory_bound = name, engine, io, memory_bound

    def shape(self, tensor: str, b: int, cells: int) -> tuple[int, ...]:
        return tuple(b if d == "batch" else cells if d == "cells" else d for d in self.io[tensor][1])

    def inputs(self) -> list[str]:
        return [n for n, (is_input, _, _) in self.io.items() if is_input]


class TrtEngine:
    """Engine `trt` (runtime/engines/protocol.py) for one exported step. k: the deepest number of
    steps per call (k_choices: the powers of two below it, and k). max_row_cells: the longest row
    (default by rank: MAX_ROW_CELLS); the profile's rows limit follows from it."""

    name = "trt"

    def __init__(self, step: StepModel, k: int = 8, cache_dir: str | None = None, max_row_cells: int | None = None):
        self.trt, self.cudart = _modules()
        self.cu = _Cuda(self.cudart)
        self.device = self._device()
        self.step, self.rule = step, Rule.from_step(step)
        r = self.rule
        if k < 1:
            raise SeadError(f"engine 'trt' needs k >= 1 steps per call, not {k}")
        self.k_choices = _k_choices(k)
        self.workers = 2  # one batch computes while the other's counts cross the bus
        self.batch_cells = BATCH_CELLS
        self.max_row_cells = max_row_cells or MAX_ROW_CELLS[r.rank]
        readout = r.read_in.shape[0] if r.read_in is not None else 1
        # the most values any tensor of a call holds per cell (the cl gathers hold taps x H), as engine 'ort'
        self.elements_per_cell = max(r.taps * r.hidden, r.taps * r.state_channels, r.input_channels + r.state_channels,
                                     readout, r.classes, 1)
        self.rows_limit = MAX_ELEMENTS // (self.elements_per_cell * self.max_row_cells)
        if self.rows_limit < 1:
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: one row of {self.max_row_cells:,} "
                                    f"cells passes TensorRT's {MAX_ELEMENTS:,}-element limit")
        cache = Path(cache_dir or os.environ.get("SEAD_TRT_CACHE") or Path.home() / ".cache" / "sead" / "trt")
        self.loader = PlanLoader(self.trt, self.device, cache, step.metadata.task)
        self.h2d = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._plans: dict[tuple, _Plan] = {}
        self._lock = threading.RLock()
        try:  # the plans every solve needs, now: a model TensorRT cannot take fails here, not mid-solve
            for key in (("prepare", True), ("advance", self.k_choices[0], "count"), ("finish",)):
                self.plan(key)
        except EngineUnavailable:
            raise
        except SeadError as exc:
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: {exc}") from None

    def _device(self) -> str:
        """The GPU, as the cache keys name it; EngineUnavailable without one, or without
        stream-ordered allocation (batches allocate on their streams: cudaFree would stall every
        stream of the device)."""
        rt = self.cudart
        try:
            if self.cu("cudaGetDeviceCount") < 1:
                raise SeadError("no CUDA device")
            props = self.cu("cudaGetDeviceProperties", 0)
            pools = self.cu("cudaDeviceGetAttribute", rt.cudaDeviceAttr.cudaDevAttrMemoryPoolsSupported, 0)
        except SeadError as exc:
            raise EngineUnavailable(f"{HINT} ({exc})") from None
        if not pools:
            raise EngineUnavailable("engine 'trt' needs a GPU with stream-ordered allocation (cudaMallocAsync)")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return f"{name.rstrip(chr(0))} (sm_{props.major}{props.minor})"

    # -- the protocol ---------------------------------------------------------------------------------
    def max_rows(self, row_cells: int) -> int:
        return self.rows_limit if row_cells <= self.max_row_cells else 0

    def start(self, codes: np.ndarray, wrap: bool = False, generations: bool = False,
              state_codes: np.ndarray | None = None) -> "TrtBatch":
        return self._batch(codes, state_codes, wrap, "budget" if generations else "count")

    def run_windows(self, codes: np.ndarray, state_codes: np.ndarray | None, k: int,
                    owned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | int]:
        batch = self._batch(codes, state_codes, False, "hot" if owned is None else "owned", owned)
        try:
            out = batch.advance(k)
            return batch.state_codes(), (batch.hot() if owned is None else int(out.max(initial=0)))
        finally:
            batch.close()

    def classify(self, codes: np.ndarray, state_codes: np.ndarray | None) -> np.ndarray:
        batch = self._batch(codes, state_codes, False, "count")
        try:
            return batch.classes()
        finally:
            batch.close()

    def close(self) -> None:
        with self._lock:
            self._plans.clear()

    def _batch(self, codes, state_codes, wrap: bool, mode: str, owned=None):
        codes = np.ascontiguousarray(codes, np.uint8)
        if codes.ndim != 1 + self.rule.rank:
            raise InternalError(f"engine 'trt' takes codes (B, {'L' if self.rule.rank == 1 else 'H, W'}), "
                                f"got shape {codes.shape}")
        if not len(codes):
            return _EmptyBatch(self, codes.shape[1:], mode)
        row_cells = math.prod(codes.shape[1:])
        if len(codes) > self.max_rows(row_cells):
            raise InternalError(f"engine 'trt' takes rows of at most {self.max_row_cells:,} cells, at most "
                                f"{self.rows_limit:,} of them: got {len(codes):,} rows of {row_cells:,} cells")
        return TrtBatch(self, codes, state_codes, wrap, mode, owned)

    # -- plans: load or build -------------------------------------------------------------------------
    def plan(self, key: tuple) -> _Plan:
        """key: ("prepare", fresh) | ("advance", k, mode) | ("finish",) -> its plan, from memory, the
        disk cache or a build."""
        with self._lock:
            if key not in self._plans:
                try:
                    model = self._graph(key)
                    kind = "-".join(map(str, key)).replace("True", "fresh").replace("False", "codes")
                    self._plans[key] = self.loader.load(kind, model, self.profile(model))
                except SeadError:
                    raise
                except Exception as exc:  # TensorRT's bindings raise RuntimeError/TypeError
                    raise SeadError(f"TensorRT failed on the {key[0]} graph: {type(exc).__name__}: {exc}") from exc
            return self._plans[key]

    def _graph(self, key: tuple):
        r = self.rule
        if key[0] == "prepare":
            model = graph.cl_prepare(r, fresh=key[1])
        elif key[0] == "advance":
            model = graph.cl_advance(r, key[1], mode=key[2])
        else:
            model = graph.cl_finish(r)
        return _trt_types(model)

    def profile(self, model) -> dict[str, tuple[tuple, tuple, tuple]]:
        """{input: (min, opt, max) shape} of the one optimization profile: rows 1..rows_limit,
        cells 1..max_row_cells."""
        cells = (1, min(OPT_CELLS[self.rule.rank], self.max_row_cells), self.max_row_cells)
        rows = (1, min(OPT_ROWS, self.rows_limit), self.rows_limit)
        out = {}
        for io in model.graph.input:
            dims = [d.dim_param or d.dim_value for d in io.type.tensor_type.shape.dim]
            if any(isinstance(d, str) and d not in ("batch", "cells") for d in dims):
                raise InternalError(f"graph input {io.name!r} has a dimension the profile does not know: {dims}")
            out[io.name] = tuple(tuple(rows[i] if d == "batch" else cells[i] if d == "cells" else d for d in dims)
                                 for i in range(3))
        return out

    def activation_bytes(self, plan: _Plan, context) -> int:
        """Activation memory a context needs for the input shapes set on it. 0 is a valid answer
        (a graph TensorRT runs without scratch, e.g. one Identity), so it is never an error here;
        update_device_memory_size_for_shapes also answers 0 on failure, so its 0 takes the
        profile's bound instead."""
        if plan.memory_bound == 0:
            return 0
        need = int(context.update_device_memory_size_for_shapes())
        return need if need > 0 else plan.memory_bound


class PlanLoader:
    """Builds TensorRT plans from ONNX graphs and caches them on disk, apart from running them.
    A cache file is MAGIC, sha256 of its key, sha256 of the plan, then the plan; the key covers the
    graph, TensorRT's version, the GPU, the profile and the build flags. A file that fails a check,
    or that TensorRT will not load, or whose engine's IO differs from its graph's, is rebuilt."""

    def __init__(self, trt, device: str, cache_dir: Path, label: str):
        self.trt, self.device, self.cache_dir, self.label = trt, device, cache_dir, label
        self.opt_level = os.environ.get("SEAD_TRT_OPT_LEVEL")  # builder_optimization_level 0..5 (TensorRT's default: 3)
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(self.logger)
        self.dtypes = {trt.DataType.FLOAT: np.dtype(np.float32), trt.DataType.INT32: np.dtype(np.int32),
                       trt.DataType.INT64: np.dtype(np.int64), trt.DataType.BOOL: np.dtype(np.bool_),
                       trt.DataType.UINT8: np.dtype(np.uint8)}

    @staticmethod
    def io(model) -> dict:
        """{name: (is_input, dims, numpy dtype)} of a graph's inputs and outputs."""
        from onnx import helper
        io = {}
        for is_input, values in ((True, model.graph.input), (False, model.graph.output)):
            for v in values:
                t = v.type.tensor_type
                io[v.name] = (is_input, tuple(d.dim_param or d.dim_value for d in t.shape.dim),
                              np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
        return io

    def io_problem(self, engine, io: dict) -> str | None:
        """Why a deserialized engine does not fit its graph's IO (names, directions, dtypes), or None."""
        trt, found = self.trt, {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            found[name] = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                           self.dtypes.get(engine.get_tensor_dtype(name)))
        want = {n: (is_input, dtype) for n, (is_input, _, dtype) in io.items()}
        return None if found == want else f"its tensors are {found}, expected {want}"

    @staticmethod
    def memory_bound(engine) -> int:
        """The activation memory a context of this engine needs at most (any shapes of its profile).
        0 is valid: TensorRT may run a graph without scratch. TensorRT >= 10.1 has the _v2 names;
        10.0 only the first ones; 11 only _v2."""
        for name in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
            if hasattr(engine, name):
                return int(getattr(engine, name)(0))
        for name in ("device_memory_size_v2", "device_memory_size"):
            if hasattr(engine, name):
                return int(getattr(engine, name))
        raise SeadError("this TensorRT reports no device memory size (device_memory_size_v2)")

    def load(self, kind: str, model, profile: dict) -> _Plan:
        """The plan of an ONNX graph with the one optimization profile {input: (min, opt, max)}:
        from the disk cache, or built (announced on stderr) and cached."""
        trt = self.trt
        onnx_bytes, io = model.SerializeToString(), self.io(model)
        digest = hashlib.sha256()
        flags = f"no-tf32 {self.opt_level}"
        for part in (onnx_bytes, trt.__version__, self.device, repr(sorted(profile.items())), flags):
            digest.update(hashlib.sha256(part if isinstance(part, bytes) else part.encode()).digest())
        path = self.cache_dir / f"{self.label}-{kind}-{digest.hexdigest()[:32]}.engine"
        engine, why = self._read(path, digest.digest(), io)
        if engine is None:
            if why:
                print(f"sead: the cached TensorRT {kind} engine {path} is {why}; rebuilding it (a while, once)",
                      file=sys.stderr, flush=True)
            else:
                print(f"sead: building the TensorRT {kind} engine for {self.label} on {self.device} "
                      f"(a while, once; then cached in {self.cache_dir})", file=sys.stderr, flush=True)
            blob = self.build(kind, onnx_bytes, profile)
            self._write(path, digest.digest(), blob)
            engine = self.runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise SeadError(f"TensorRT could not load the {kind} engine it just built")
            problem = self.io_problem(engine, io)
            if problem:
                raise SeadError(f"TensorRT's {kind} engine does not match its graph: {problem}")
        return _Plan(kind, engine, io, self.memory_bound(engine))

    def _read(self, path: Path, key: bytes, io: dict):
        """-> (ICudaEngine, None) from a sound cache file; (None, None) if there is none; (None, why)
        for a damaged or stale one, which is never run."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"unreadable ({exc})"
        head = len(MAGIC) + 64
        if data[: len(MAGIC)] != MAGIC or data[len(MAGIC): len(MAGIC) + 32] != key \
                or hashlib.sha256(data[head:]).digest() != data[len(MAGIC) + 32: head]:
            return None, "damaged (truncated, or not this plan)"
        engine = self.runtime.deserialize_cuda_engine(data[head:])
        if engine is None:
            return None, "stale (this TensorRT or GPU cannot load it)"
        problem = self.io_problem(engine, io)
        return (engine, None) if problem is None else (None, f"stale ({problem})")

    def _write(self, path: Path, key: bytes, blob: bytes) -> None:
        try:  # atomic: a concurrent reader sees the old file or the whole new one
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + key + hashlib.sha256(blob).digest() + blob)
            os.replace(tmp, path)
        except OSError as exc:
            print(f"sead: could not cache the TensorRT engine in {self.cache_dir}: {exc}", file=sys.stderr, flush=True)

    def build(self, kind: str, onnx_bytes: bytes, profile: dict) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10 and 11
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: TensorRT's ONNX parser refused "
                                    f"the {kind} graph: {errors}")
        config = builder.create_builder_config()
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 products: decisions must agree with the other engines
        if self.opt_level is not None:
            config.builder_optimization_level = int(self.opt_level)
        shapes = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            shapes.set_shape(name, low, opt, high)
        if config.add_optimization_profile(shapes) < 0:  # -1: TensorRT found the profile invalid
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: TensorRT refused the optimization "
                                    f"profile of the {kind} graph ({profile})")
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise SeadError(f"TensorRT could not build the {kind} engine (its errors are above)")
        return bytes(blob)


class TrtBatch:
    """Whole problems (modes count and budget) or tile windows (hot, owned) on the GPU. Device
    buffers by name, each (B, L[, C]) with L = a row's cells: codes uint8, neighbours (L, taps)
    int64, prepare's outputs, state0/state1 (the state, ping-ponged), budget (B,) float32, owned
    (B, L) float32, last (B,) float32 or hot (B, L) bool, state_codes, classes uint8."""

    def __init__(self, engine: TrtEngine, codes: np.ndarray, state_codes: np.ndarray | None, wrap: bool,
                 mode: str, owned: np.ndarray | None = None):
        self.engine, self.cu, self.mode, self.wrap = engine, engine.cu, mode, wrap
        self.shape, self.b = codes.shape[1:], len(codes)
        self.cells = math.prod(self.shape)
        if not wrap and codes.reshape(self.b, -1)[:, -1].any():
            raise InternalError("a row handed to the engine does not end in an empty cell")
        self.codes, self.live, self.current = codes, np.arange(self.b), 0
        self.finished: tuple[np.ndarray, np.ndarray] | None = None  # finish's outputs, until the state moves
        self.buffers: dict[str, tuple[int, tuple, np.dtype]] = {}  # name -> (device pointer, shape, dtype)
        self.contexts: dict[str, object] = {}  # plan name -> its IExecutionContext in this batch
        self.scratch, self.scratch_bytes = 0, 0
        self.pending: list[np.ndarray] = []  # host arrays a queued copy reads or writes: alive until _sync
        self.closed, self.stream = False, None
        try:
            self.stream = self.cu("cudaStreamCreateWithFlags", engine.cudart.cudaStreamNonBlocking)
            self._prepare(state_codes, owned)
        except BaseException:
            self.close()
            raise

    # -- device work ----------------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple, dtype) -> int:
        """The device pointer of buffer `name`, made on first use (stream-ordered)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        if name not in self.buffers:
            nbytes = max(1, math.prod(shape) * dtype.itemsize)
            self.buffers[name] = (self.cu("cudaMallocAsync", nbytes, self.stream), shape, dtype)
        elif self.buffers[name][1:] != (shape, dtype):
            raise InternalError(f"buffer {name!r} is {self.buffers[name][1:]}, asked for {(shape, dtype)}")
        return self.buffers[name][0]

    def _upload(self, name: str, host: np.ndarray) -> None:
        ptr, shape, dtype = self.buffers[name]
        host = np.ascontiguousarray(host, dtype).reshape(shape)
        self.cu("cudaMemcpyAsync", ptr, host.ctypes.data, host.nbytes, self.engine.h2d, self.stream)
        self.pending.append(host)

    def _download(self, name: str) -> np.ndarray:
        """The buffer's contents once _sync() has returned (the copy is queued on the stream)."""
        ptr, shape, dtype = self.buffers[name]
        host = np.empty(shape, dtype)
        self.cu("cudaMemcpyAsync", host.ctypes.data, ptr, host.nbytes, self.engine.d2h, self.stream)
        self.pending.append(host)
        return host

    def _sync(self) -> None:
        self.cu("cudaStreamSynchronize", self.stream)
        self.pending.clear()

    def _context(self, plan: _Plan):
        """The batch's execution context for a plan: input shapes set once (they never change in a
        batch), its activation memory counted into the batch's shared block."""
        if plan.name not in self.contexts:
            trt = self.engine.trt
            ctx = plan.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if ctx is None:
                raise SeadError("TensorRT could not create an execution context")
            for name in plan.inputs():
                shape = plan.shape(name, self.b, self.cells)
                if not ctx.set_input_shape(name, shape):
                    raise SeadError(f"TensorRT refused shape {shape} for {name!r} of the {plan.name} engine "
                                    f"(its profile: {self.engine.rows_limit:,} rows of {self.engine.max_row_cells:,} "
                                    "cells at most)")
            need = self.engine.activation_bytes(plan, ctx)
            if need > self.scratch_bytes:  # stream-ordered: the old block is freed after the work queued on it
                if self.scratch:
                    self.cu("cudaFreeAsync", self.scratch, self.stream)
                    self.scratch, self.scratch_bytes = 0, 0
                self.scratch, self.scratch_bytes = self.cu("cudaMallocAsync", need, self.stream), need
            self.contexts[plan.name] = ctx
        return self.contexts[plan.name]

    def _run(self, plan: _Plan, rename: dict[str, str]) -> None:
        """Queue the plan on the stream: IO tensor t reads or writes buffer rename.get(t, t);
        output buffers are made here."""
        ctx = self._context(plan)
        for tensor, (is_input, _, dtype) in plan.io.items():
            name = rename.get(tensor, tensor)
            if is_input and name not in self.buffers:
                raise InternalError(f"the {plan.name} engine reads {tensor!r}, which the batch does not hold")
            ptr = self._buffer(name, plan.shape(tensor, self.b, self.cells), dtype)
            if not ctx.set_tensor_address(tensor, ptr):
                raise SeadError(f"TensorRT refused the address of {tensor!r} ({plan.name} engine)")
        if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1; a null block is documented valid for size 0
            ctx.set_device_memory(self.scratch, self.scratch_bytes)
        else:
            ctx.device_memory = self.scratch
        if not ctx.execute_async_v3(int(self.stream)):
            raise SeadError(f"TensorRT could not enqueue the {plan.name} engine")

    def _prepare(self, state_codes, owned) -> None:
        e = self.engine
        plan = e.plan(("prepare", state_codes is None))
        cells = (self.b, self.cells)
        table = neighbour_table(tuple(self.shape), self.wrap)
        host = {"codes": self.codes.reshape(cells), "neighbours": table}
        if state_codes is not None:
            host["state_codes"] = np.asarray(state_codes).reshape(cells)
        for name, array in host.items():
            self._buffer(name, plan.shape(name, self.b, self.cells), plan.io[name][2])
            self._upload(name, array)
        self._run(plan, {"state": "state0"})
        _, shape, dtype = self.buffers["state0"]
        self._buffer("state1", shape, dtype)
        if self.mode == "budget":
            self._buffer("budget", (self.b,), np.float32)
        if self.mode == "owned":
            self._buffer("owned", cells, np.float32)
            self._upload("owned", np.asarray(owned, np.float32).reshape(cells))
        self._sync()  # the host sources must outlive their copies; prepare's errors surface here

    # -- the protocol ---------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return len(self.live)

    def advance(self, k: int, budget: np.ndarray | None = None) -> np.ndarray:
        plan = self.engine.plan(("advance", k, self.mode))
        if self.mode == "budget":
            full = np.zeros(self.b, np.float32)  # rows that left the batch hold their state
            full[self.live] = budget
            self._upload("budget", full)
        self._run(plan, {"state": f"state{self.current}", "state_out": f"state{1 - self.current}"})
        self.current ^= 1
        self.finished = None
        if self.mode == "hot":
            self._sync()
            return np.zeros(0, np.int64)
        last = self._download("last")
        self._sync()
        return last[self.live].astype(np.int64)

    def hot(self) -> np.ndarray:
        """(B, *S) bool: the cells that changed at the last step (mode hot)."""
        hot = self._download("hot")
        self._sync()
        return hot.reshape(self.b, *self.shape)

    def _finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(state codes, classes) of every row: retiring rows reads the classes, and moving the
        rest to a smaller batch the state codes of the same state, from one call."""
        if self.finished is not None:
            return self.finished
        self._run(self.engine.plan(("finish",)), {"state": f"state{self.current}"})
        codes, classes = self._download("state_codes"), self._download("classes")
        self._sync()
        shape = (self.b, *self.shape)
        self.finished = codes.astype(self.engine.rule.code_dtype).reshape(shape), classes.reshape(shape)
        return self.finished

    def state_codes(self) -> np.ndarray:
        return self._finish()[0][self.live]

    def classes(self) -> np.ndarray:
        return self._finish()[1][self.live]

    def keep(self, rows: np.ndarray) -> None:
        self.live = self.live[np.asarray(rows, np.int64)]  # the rest run on, idle

    def close(self) -> None:
        """Free the batch's device memory (stream-ordered, after its queued work) and its stream."""
        if self.closed:
            return
        self.closed = True
        failed = []

        def call(name, *args):  # best effort: release everything, then report what failed
            try:
                self.cu(name, *args)
            except SeadError as exc:
                failed.append(str(exc))

        if self.stream is not None:
            try:
                self._sync()
            except SeadError as exc:
                failed.append(str(exc))
        self.contexts.clear()  # contexts go before the memory they use
        for ptr in [p for p, _, _ in self.buffers.values()] + ([self.scratch] if self.scratch else []):
            call("cudaFreeAsync", ptr, self.stream)
        self.buffers, self.scratch, self.scratch_bytes = {}, 0, 0
        if self.stream is not None:
            call("cudaStreamDestroy", self.stream)  # its queued work (the frees) still completes
            self.stream = None
        self.pending.clear()  # only now: a copy still queued may read or write these
        if failed:
            raise SeadError(f"CUDA failed while releasing a TensorRT batch: {'; '.join(failed)}")

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass  # at interpreter exit the CUDA runtime may already be gone


class _EmptyBatch:
    """A batch of no rows: nothing to run (a profile starts at one row)."""

    def __init__(self, engine: TrtEngine, shape: tuple, mode: str):
        self.engine, self.shape, self.mode, self.rows = engine, shape, mode, 0

    def advance(self, k: int, budget=None) -> np.ndarray:
        return np.zeros(0, np.int64)

    def hot(self) -> np.ndarray:
        return np.zeros((0, *self.shape), bool)

    def state_codes(self) -> np.ndarray:
        return np.zeros((0, *self.shape), self.engine.rule.code_dtype)

    def classes(self) -> np.ndarray:
        return np.zeros((0, *self.shape), np.uint8)

    def keep(self, rows) -> None:
        pass

    def close(self) -> None:
        pass
