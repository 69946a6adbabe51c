"""TensorRT engine `trt` (TensorRT >= 10 and cuda-python; both imported lazily).

The advance and readout graphs are built into serialized engines once per model, TensorRT
version and GPU, and cached on disk. A batch keeps the problem and the state on the device; each
advance() is one CUDA graph launch (budget upload, the K steps, step-count download) once the batch
shape has run once, and the state ping-pongs between two buffers by swapping tensor addresses.

Shape classes: TensorRT's convolutions index tensors with int32, so no tensor may reach 2**31-1
elements, and a profile's max corner must respect that too. One profile over (1..max_batch) x
(1..max_length) cannot, so there are up to two: `wide` (many short tapes) and `long` (few long
ones), each a separate single-profile engine built on first use. `max_rows(length)` says how many
problems of a length one batch may hold; start() raises SeadError beyond it.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import EngineUnavailable, SeadError
from ..graph import advance_graph, readout_graph
from ..model_file import StepModel

HINT = "engine 'trt' needs TensorRT and a CUDA GPU: pip install 'sead[tensorrt]'"
MAX_ELEMENTS = 2**31 - 1  # TensorRT's per-tensor element limit for convolutions
OPT_CELLS = 1 << 20  # tactics are timed at about this many cells (the loop's default batch)
DEVICE_RUNS = 64  # keep(): at most this many row runs are copied on the device, else via the host


def _modules():
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        raise EngineUnavailable(f"{HINT} ({type(exc).__name__}: {exc})") from None
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
    except Exception as exc:
        raise EngineUnavailable(f"{HINT} (cuda-python: {type(exc).__name__}: {exc})") from None
    return trt, cudart


class _Cuda:
    """cu("cudaMalloc", n): calls the runtime API, raises SeadError naming the call on failure."""

    def __init__(self, cudart):
        self.rt = cudart

    def __call__(self, name: str, *args):
        out = getattr(self.rt, name)(*args)
        if out[0] != self.rt.cudaError_t.cudaSuccess:
            raise SeadError(f"CUDA call {name} failed: {getattr(out[0], 'name', out[0])}")
        return out[1] if len(out) == 2 else out[1:] or None


def _max_channels(step: StepModel) -> int:
    """The widest channel axis of any tensor: conv weights are (out, in, width)."""
    dims = {t.name: list(t.dims) for t in step.proto.graph.initializer}
    widths = [d for n in step.proto.graph.node if n.op_type == "Conv" for d in dims.get(n.input[1], [])[:2]]
    meta = step.metadata
    return max(widths + [meta.input_channels + meta.state_channels, meta.classes])


class TrtEngine:
    name = "trt"

    def __init__(self, step: StepModel, k: int = 8, cache_dir: str | None = None,
                 max_batch: int = 4096, max_length: int = 1 << 21):
        self.trt, self.cudart = _modules()
        self.cu = _Cuda(self.cudart)
        try:
            count = self.cu("cudaGetDeviceCount")
            if count < 1:
                raise SeadError("no CUDA device")
            props = self.cu("cudaGetDeviceProperties", 0)
        except SeadError as exc:
            raise EngineUnavailable(f"{HINT} ({exc})") from None
        gpu = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        self.device = f"{gpu.rstrip(chr(0))} (sm_{props.major}{props.minor})"
        self.step, self.k = step, k
        self.k_choices = (k,)  # each depth is an engine build (minutes): one depth only
        meta = step.metadata
        self.max_channels = _max_channels(step)
        self.pad = 2 if meta.boundary == "ring" else 0  # a ring is wrapped to L + 2 cells before its conv
        self.max_batch_cells = MAX_ELEMENTS // self.max_channels  # rows * (length + pad) stays below this
        wide = min(max_length, self.max_batch_cells // max_batch - self.pad)
        if wide < 1:
            raise SeadError(f"max_batch={max_batch} leaves no room below TensorRT's {MAX_ELEMENTS}-element limit")
        self.profiles = [(max_batch, wide)]  # (max rows, max length) per shape class
        if wide < max_length:
            self.profiles.append((max(1, min(max_batch, self.max_batch_cells // (max_length + self.pad))), max_length))
        self.cache_dir = Path(cache_dir or os.environ.get("SEAD_TRT_CACHE") or Path.home() / ".cache" / "sead" / "trt")
        self.opt_level = os.environ.get("SEAD_TRT_OPT_LEVEL")  # builder_optimization_level 0..5 (default 3)
        self.cuda_graphs = os.environ.get("SEAD_TRT_CUDA_GRAPHS", "1") != "0"  # cleared once a capture fails
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)
        self.runtime = self.trt.Runtime(self.logger)
        self.graphs = {"advance": advance_graph(step, k).SerializeToString(),
                       "readout": readout_graph(step).SerializeToString()}
        self._engines: dict = {}
        self._lock = threading.Lock()
        try:  # build (or load) the wide class now, so a graph TensorRT cannot take fails here, not mid-solve
            for graph in self.graphs:
                self.engine(graph, 0)
        except SeadError as exc:
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: {exc}") from None

    def max_rows(self, length: int) -> int:
        """The most problems of `length` cells one batch may hold (0: the length is too long)."""
        return max([rows for rows, most in self.profiles if length <= most], default=0)

    def profile_for(self, rows: int, length: int) -> int:
        for i, (most_rows, most_length) in enumerate(self.profiles):
            if rows <= most_rows and length <= most_length:
                return i
        limit = self.max_rows(length)
        raise SeadError(f"engine 'trt' cannot take {rows} problems of {length} cells in one batch "
                        + (f"(at most {limit} at this length)" if limit else f"(tapes of at most {self.profiles[-1][1]} cells)"))

    def start(self, problem: np.ndarray, exclusive: bool = False) -> "TrtBatch":
        problem = np.ascontiguousarray(problem, np.float32)
        if problem.ndim != 3 or problem.shape[1] != self.step.metadata.input_channels:
            raise SeadError(f"expected a (B, {self.step.metadata.input_channels}, L) problem, got {problem.shape}")
        return TrtBatch(self, problem, self.profile_for(problem.shape[0], problem.shape[2]))

    # -- engines --------------------------------------------------------------------------------
    def _shapes(self, graph: str, index: int) -> dict:
        """{input: (min, opt, max)} for a shape class; opt is where tactics are timed."""
        rows, length = self.profiles[index]
        opt_rows = rows if index == 0 else 1
        opt = (opt_rows, max(1, min(length, OPT_CELLS // opt_rows)))
        meta = self.step.metadata
        channels = {"problem": meta.input_channels, "state": meta.state_channels, "budget": 1}
        dims = lambda n, b, cells: (b, channels[n], 1 if n == "budget" else cells)
        names = ("problem", "state", "budget") if graph == "advance" else ("problem", "state")
        return {n: (dims(n, 1, 1), dims(n, *opt), dims(n, rows, length)) for n in names}

    def engine(self, graph: str, index: int):
        """The ICudaEngine for a graph and shape class: from memory, the disk cache, or a build."""
        with self._lock:
            key = (graph, index)
            if key not in self._engines:
                try:
                    self._engines[key] = self._load_or_build(graph, index)
                except SeadError:
                    raise
                except Exception as exc:  # TensorRT's bindings raise RuntimeError/TypeError
                    raise SeadError(f"TensorRT failed on the {graph} engine: {type(exc).__name__}: {exc}") from exc
            return self._engines[key]

    def _load_or_build(self, graph: str, index: int):
        trt, onnx_bytes, shapes = self.trt, self.graphs[graph], self._shapes(graph, index)
        digest = hashlib.sha256()
        for part in (onnx_bytes, trt.__version__, self.device, repr(sorted(shapes.items())), f"no-tf32 {self.opt_level}"):
            digest.update(hashlib.sha256(part if isinstance(part, bytes) else part.encode()).digest())
        path = self.cache_dir / f"{self.step.metadata.task}-{graph}-{digest.hexdigest()[:32]}.engine"
        try:
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                return engine  # else a stale or damaged file: rebuild and overwrite it
        except OSError:
            pass  # not cached yet (or unreadable): build
        rows, length = self.profiles[index]
        print(f"sead: building the TensorRT {graph} engine for {self.step.metadata.task} (up to {rows} problems x "
              f"{length} cells) on {self.device}; this takes a while once, then it is cached in {self.cache_dir}",
              file=sys.stderr, flush=True)
        blob = self._build(graph, onnx_bytes, shapes)
        try:  # atomic: a concurrent reader sees the old file or the whole new one
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except OSError as exc:
            print(f"sead: could not cache the TensorRT engine in {self.cache_dir}: {exc}", file=sys.stderr)
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise SeadError(f"TensorRT could not load the {graph} engine it just built")
        return engine

    def _build(self, graph: str, onnx_bytes: bytes, shapes: dict) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise SeadError(f"TensorRT could not parse the {graph} graph: {errors}")
        config = builder.create_builder_config()
        config.clear_flag(trt.BuilderFlag.TF32)  # exact fp32: the sign test must agree with the other engines
        if self.opt_level is not None:
            config.builder_optimization_level = int(self.opt_level)
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise SeadError(f"TensorRT could not build the {graph} engine (see the TensorRT errors above)")
        return bytes(blob)


class _Context:
    """An execution context whose activation memory is ours, sized for the current shapes
    (the default would reserve it for the profile's max corner)."""

    def __init__(self, engine: TrtEngine, trt_engine):
        self.cu = engine.cu
        self.ctx = trt_engine.create_execution_context(engine.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.ctx is None:
            raise SeadError("TensorRT could not create an execution context")
        self.memory, self.capacity = 0, 0

    def set_shapes(self, shapes: dict) -> None:
        for name, shape in shapes.items():
            if not self.ctx.set_input_shape(name, shape):
                raise SeadError(f"TensorRT rejected shape {shape} for {name!r}")
        need = max(256, self.ctx.update_device_memory_size_for_shapes())
        if need > self.capacity:
            if self.memory:
                self.cu("cudaFree", self.memory)
                self.memory = 0
            self.memory, self.capacity = self.cu("cudaMalloc", need), need
        if hasattr(self.ctx, "set_device_memory"):  # TensorRT >= 10.1
            self.ctx.set_device_memory(self.memory, self.capacity)
        else:
            self.ctx.device_memory = self.memory

    def run(self, stream, **addresses) -> None:
        for name, ptr in addresses.items():
            if not self.ctx.set_tensor_address(name, ptr):
                raise SeadError(f"TensorRT rejected the address of {name!r}")
        if not self.ctx.execute_async_v3(int(stream)):
            raise SeadError("TensorRT execute_async_v3 failed")


class TrtBatch:
    def __init__(self, engine: TrtEngine, problem: np.ndarray, profile: int):
        self.engine, self.cu, rt = engine, engine.cu, engine.cudart
        self.closed, self.stream, self.graphs, self.device, self.pinned, self.contexts = False, None, [], [], [], []
        meta = engine.step.metadata
        b, _, self.length = problem.shape
        self.host_problem = problem  # the problem never changes on the device: keep() re-uploads rows
        self.c_in, self.c_s, self.classes = meta.input_channels, meta.state_channels, meta.classes
        self.row_state = self.c_s * self.length * 4  # bytes per problem; rows are contiguous blocks
        self.h2d, self.d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            self.stream = self.cu("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking)
            self.problem = self._malloc(problem.nbytes)
            self.state = [self._malloc(b * self.row_state), self._malloc(b * self.row_state)]
            self.budget, self.changed = self._malloc(b * 4), self._malloc(b * 4)
            self.host_budget, self.host_changed = self._pinned(b), self._pinned(b)
            self.logits, self.logits_bytes = 0, 0
            self.current = 0  # state[current] holds the state
            self.cu("cudaMemcpyAsync", self.problem, problem.ctypes.data, problem.nbytes, self.h2d, self.stream)
            self.cu("cudaMemsetAsync", self.state[0], 0, b * self.row_state, self.stream)  # zeros at step 0
            self.advance_ctx = _Context(engine, engine.engine("advance", profile))
            self.readout_ctx = _Context(engine, engine.engine("readout", profile))
            self.contexts = [self.advance_ctx, self.readout_ctx]
            self._resize(b)
            self.cu("cudaStreamSynchronize", self.stream)
        except BaseException:
            self.close()
            raise

    def _malloc(self, nbytes: int) -> int:
        ptr = self.cu("cudaMalloc", max(nbytes, 4))
        self.device.append(ptr)
        return ptr

    def _pinned(self, n: int) -> np.ndarray:
        """Page-locked floats: copies from and to them can be captured in a CUDA graph."""
        ptr = self.cu("cudaMallocHost", max(n, 1) * 4)
        self.pinned.append(ptr)
        return np.ctypeslib.as_array((ctypes.c_float * max(n, 1)).from_address(ptr))

    def _resize(self, b: int) -> None:
        self.b = b
        problem, state = (b, self.c_in, self.length), (b, self.c_s, self.length)
        self.advance_ctx.set_shapes({"problem": problem, "state": state, "budget": (b, 1, 1)})
        self.readout_ctx.set_shapes({"problem": problem, "state": state})
        self._drop_graphs()

    @property
    def size(self) -> int:
        return self.b

    # -- advance ------------------------------------------------------------------------------
    def _enqueue(self, d: int) -> None:
        """Budget up, K steps from state[d] into state[1 - d], step counts down (all async)."""
        n = self.b * 4
        self.cu("cudaMemcpyAsync", self.budget, self.host_budget.ctypes.data, n, self.h2d, self.stream)
        self.advance_ctx.run(self.stream, problem=self.problem, state=self.state[d], state_out=self.state[1 - d],
                             budget=self.budget, changed=self.changed)
        self.cu("cudaMemcpyAsync", self.host_changed.ctypes.data, self.changed, n, self.d2h, self.stream)

    def advance(self, budget: np.ndarray, k: int | None = None) -> np.ndarray:
        """Run up to K steps per problem (budget (B,) steps allowed). -> changed counts (B,) int."""
        if k not in (None, self.engine.k):
            raise SeadError(f"engine 'trt' was built for {self.engine.k} steps per call, not {k}")
        self.host_budget[: self.b] = budget
        if self.graphs:
            self.cu("cudaGraphLaunch", self.graphs[self.current], self.stream)
        else:
            self._enqueue(self.current)
        self.cu("cudaStreamSynchronize", self.stream)
        changed = self.host_changed[: self.b].astype(np.int64)
        self.current ^= 1
        if not self.graphs and self.engine.cuda_graphs:
            self._capture()  # the plain call above was the warm-up TensorRT wants after a shape change
        return changed

    def _capture(self) -> None:
        """One graph per ping-pong direction; on any failure, stop trying for this engine."""
        rt = self.engine.cudart
        try:
            for d in (0, 1):
                self.cu("cudaStreamBeginCapture", self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
                failure = None
                try:
                    self._enqueue(d)
                except Exception as exc:
                    failure = exc
                err, graph = rt.cudaStreamEndCapture(self.stream)  # always end the capture we began
                if failure is not None or err != rt.cudaError_t.cudaSuccess:
                    if err == rt.cudaError_t.cudaSuccess:
                        rt.cudaGraphDestroy(graph)
                    raise failure or SeadError(f"CUDA call cudaStreamEndCapture failed: {getattr(err, 'name', err)}")
                try:
                    self.graphs.append(self.cu("cudaGraphInstantiate", graph, 0))
                finally:
                    self.cu("cudaGraphDestroy", graph)  # the executable graph keeps what it needs
        except Exception as exc:
            rt.cudaGetLastError()  # clear the error the failed capture left behind
            self._drop_graphs()
            self.engine.cuda_graphs = False
            print(f"sead: CUDA graph capture failed ({exc}); engine 'trt' continues without graphs",
                  file=sys.stderr, flush=True)

    def _drop_graphs(self) -> None:
        graphs, self.graphs = self.graphs, []
        for g in graphs:
            self.cu("cudaGraphExecDestroy", g)

    # -- readout and compaction ---------------------------------------------------------------
    def symbols(self) -> np.ndarray:
        """(B, L) int64: the readout's class per cell for the current state."""
        host = np.empty((self.b, self.classes, self.length), np.float32)
        if host.nbytes > self.logits_bytes:
            if self.logits:
                self.device.remove(self.logits)
                self.cu("cudaFree", self.logits)
                self.logits = 0
            self.logits, self.logits_bytes = self._malloc(host.nbytes), host.nbytes
        self.readout_ctx.run(self.stream, problem=self.problem, state=self.state[self.current], logits=self.logits)
        self.cu("cudaMemcpyAsync", host.ctypes.data, self.logits, host.nbytes, self.d2h, self.stream)
        self.cu("cudaStreamSynchronize", self.stream)
        return host.argmax(1)

    def keep(self, rows: np.ndarray) -> None:
        """Drop every problem not in `rows` (ascending, as the loop passes them) from the batch."""
        rows = np.asarray(rows, np.int64)
        n = len(rows)
        if n == self.b and (rows == np.arange(n)).all():
            return
        if n == 0:
            self.close()
            self.b = 0
            return
        self.host_problem = np.ascontiguousarray(self.host_problem[rows])
        self.cu("cudaMemcpyAsync", self.problem, self.host_problem.ctypes.data, self.host_problem.nbytes,
                self.h2d, self.stream)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # runs of consecutive rows
        src, dst, r = self.state[self.current], self.state[1 - self.current], self.row_state
        if len(starts) <= DEVICE_RUNS:  # few runs: copy them into the spare ping-pong buffer
            kind = self.engine.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            for first, end in zip(starts, list(starts[1:]) + [n]):
                self.cu("cudaMemcpyAsync", dst + int(first) * r, src + int(rows[first]) * r, int(end - first) * r,
                        kind, self.stream)
            self.current ^= 1
        else:  # many small runs: one round trip through the host is cheaper than thousands of copies
            host = np.empty((self.b, r // 4), np.float32)
            self.cu("cudaMemcpyAsync", host.ctypes.data, src, host.nbytes, self.d2h, self.stream)
            self.cu("cudaStreamSynchronize", self.stream)
            host = np.ascontiguousarray(host[rows])
            self.cu("cudaMemcpyAsync", src, host.ctypes.data, host.nbytes, self.h2d, self.stream)
        self.cu("cudaStreamSynchronize", self.stream)  # the pageable host sources must outlive the copies
        self._resize(n)

    # -- memory -------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the batch's device memory now (also done when it is garbage collected)."""
        if self.closed:
            return
        self.closed = True
        rt, failed = self.engine.cudart, []

        def call(name, arg):  # best effort: free everything, then report what failed
            if getattr(rt, name)(arg)[0] != rt.cudaError_t.cudaSuccess:
                failed.append(name)

        if self.stream is not None:
            call("cudaStreamSynchronize", self.stream)
        for g in self.graphs:
            call("cudaGraphExecDestroy", g)
        memory = [c.memory for c in self.contexts if c.memory] + self.device
        for c in self.contexts:
            c.ctx = None  # contexts go before the memory they use
        for ptr in memory:
            call("cudaFree", ptr)
        self.host_budget = self.host_changed = None  # views into the pinned memory go first
        for ptr in self.pinned:
            call("cudaFreeHost", ptr)
        if self.stream is not None:
            call("cudaStreamDestroy", self.stream)
        self.graphs, self.contexts, self.device, self.pinned, self.stream = [], [], [], [], None
        if failed:
            raise SeadError(f"CUDA calls failed while freeing a TensorRT batch: {', '.join(failed)}")

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass  # at interpreter exit the CUDA runtime may already be gone
