"""TensorRT engine `trt` (TensorRT >= 10 and cuda-python; both imported lazily).

The advance and readout graphs are built into serialized engines once per model, TensorRT
version and GPU, and cached on disk. A batch keeps the problem and the state on the device; each
advance() is one CUDA graph launch (budget upload, the K steps, step-count download) once the batch
shape has run once, and the state ping-pongs between two buffers by swapping tensor addresses.

One optimization profile: rows of at most `max_row_cells` cells (the loop cuts longer tapes into
tiles), and at most `max_rows(length)` rows, so that no tensor, not even at the profile's max
corner, reaches TensorRT's 2**31-1 element limit for convolutions. start() raises SeadError beyond.
On a grid (rank 2) the profile spans rows, height and width, each side at most GRID_SIDE cells.
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
from ..model_file import StepModel

HINT = "engine 'trt' needs TensorRT and a CUDA GPU: pip install 'sead[tensorrt]'"
MAX_ELEMENTS = 2**31 - 1  # TensorRT's per-tensor element limit for convolutions
OPT_CELLS = 1 << 20  # tactics are timed at about this many cells (the loop's default batch)
MAX_ROW_CELLS = 1 << 12  # the longest row; the loop tiles longer tapes
GRID_SIDE = 1 << 8  # a grid row's longest side (grids are not tiled): 65,536 cells at most
# what a deserialized engine must expose: {graph: {tensor: is_input}}, all float32
IO = {"advance": {"problem": True, "state": True, "budget": True, "owned": True,
                  "state_out": False, "changed_at": False, "last": False},
      "readout": {"problem": True, "state": True, "logits": False}}


def _modules():
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        raise EngineUnavailable(f"{HINT} ({type(exc).__name__}: {exc})", quiet=isinstance(exc, ImportError)) from None
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
    except Exception as exc:
        raise EngineUnavailable(f"{HINT} (cuda-python: {type(exc).__name__}: {exc})",
                                quiet=isinstance(exc, ImportError)) from None
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

    def __init__(self, step: StepModel, k: int = 8, cache_dir: str | None = None, max_row_cells: int = MAX_ROW_CELLS):
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
        self.workers = 2  # each batch has its own stream: one computes while another copies
        self.batch_cells = OPT_CELLS
        self.max_row_cells = max_row_cells
        meta = step.metadata
        self.rank = meta.rank
        if self.rank == 2:
            self.max_row_cells = GRID_SIDE * GRID_SIDE
        self.max_channels = _max_channels(step)
        self.pad = 2 if meta.boundary == "ring" else 0  # a whole ring is wrapped to L + 2 cells before its conv
        self.rows_limit = MAX_ELEMENTS // (self.max_channels * (self.max_row_cells + self.pad))
        if self.rows_limit < 1:
            raise SeadError(f"rows of {self.max_row_cells} cells pass TensorRT's {MAX_ELEMENTS}-element limit")
        self.cache_dir = Path(cache_dir or os.environ.get("SEAD_TRT_CACHE") or Path.home() / ".cache" / "sead" / "trt")
        self.opt_level = os.environ.get("SEAD_TRT_OPT_LEVEL")  # builder_optimization_level 0..5 (default 3)
        self.cuda_graphs = os.environ.get("SEAD_TRT_CUDA_GRAPHS", "1") != "0"  # cleared once a capture fails
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)
        self.runtime = self.trt.Runtime(self.logger)
        self.graphs = {("advance", False): advance_graph(step, k).SerializeToString(),
                       ("readout", False): readout_graph(step).SerializeToString()}
        if meta.boundary == "ring":  # whole short rings wrap; tiles of long rings do not
            self.graphs[("advance", True)] = advance_graph(step, k, wrap=True).SerializeToString()
        self._engines: dict = {}
        self._lock = threading.Lock()
        try:  # build (or load) every engine now, so a graph TensorRT cannot take fails here, not mid-solve
            for key in self.graphs:
                self.engine(*key)
        except SeadError as exc:
            raise EngineUnavailable(f"engine 'trt' cannot run this model here: {exc}") from None

    def max_rows(self, length: int) -> int:
        """The most rows of `length` cells one batch may hold (0: the rows are too long)."""
        return self.rows_limit if length <= self.max_row_cells else 0

    def start(self, problem: np.ndarray, state: np.ndarray | None = None, owned: np.ndarray | None = None,
              wrap: bool = False, settle: bool = False) -> "TrtBatch":
        problem = np.ascontiguousarray(problem, np.float32)
        c_in = self.step.metadata.input_channels
        if problem.ndim != 2 + self.rank or problem.shape[1] != c_in:
            layout = f"(B, {c_in}, L)" if self.rank == 1 else f"(B, {c_in}, H, W)"
            raise SeadError(f"expected a {layout} problem, got {problem.shape}")
        rows, length = problem.shape[0], int(np.prod(problem.shape[2:]))
        if self.rank == 2 and max(problem.shape[2:]) > GRID_SIDE:
            raise SeadError(f"engine 'trt' takes grids of at most {GRID_SIDE} x {GRID_SIDE} cells, "
                            f"not {problem.shape[2]} x {problem.shape[3]}")
        if rows > self.max_rows(length):
            raise SeadError(f"engine 'trt' cannot take {rows} rows of {length} cells in one batch (rows of at most "
                            f"{self.max_row_cells} cells, at most {self.rows_limit} rows)")
        return TrtBatch(self, problem, state, owned, wrap)

    def close(self) -> None:
        with self._lock:
            self._engines.clear()

    # -- engines --------------------------------------------------------------------------------
    def _shapes(self, graph: str) -> dict:
        """{input: (min, opt, max)} for the one profile; opt is where tactics are timed."""
        rows = self.rows_limit
        if self.rank == 1:
            most, typical = (self.max_row_cells,), (min(self.max_row_cells, 64),)
        else:
            most, typical = (GRID_SIDE, GRID_SIDE), (8, 8)
        opt = max(1, min(rows, OPT_CELLS // 64))  # many short rows: the common batch
        meta = self.step.metadata
        channels = {"problem": meta.input_channels, "state": meta.state_channels, "budget": 1, "owned": 1}
        dims = lambda n, b, cells: (b, channels[n], *((1,) * self.rank if n == "budget" else cells))
        names = [n for n, is_input in IO[graph].items() if is_input]
        return {n: (dims(n, 1, (1,) * self.rank), dims(n, opt, typical), dims(n, rows, most)) for n in names}

    def engine(self, graph: str, wrap: bool):
        """The ICudaEngine for a graph: from memory, the disk cache, or a build."""
        with self._lock:
            key = (graph, wrap)
            if key not in self._engines:
                try:
                    self._engines[key] = self._load_or_build(graph, wrap)
                except SeadError:
                    raise
                except Exception as exc:  # TensorRT's bindings raise RuntimeError/TypeError
                    raise SeadError(f"TensorRT failed on the {graph} engine: {type(exc).__name__}: {exc}") from exc
            return self._engines[key]

    def _io_problem(self, engine, graph: str) -> str | None:
        """Why a deserialized engine does not fit `graph`'s IO (names, directions, float32), or None."""
        trt = self.trt
        found = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            found[name] = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT, engine.get_tensor_dtype(name))
        want = {n: (is_input, trt.DataType.FLOAT) for n, is_input in IO[graph].items()}
        return None if found == want else f"its tensors are {sorted(found)}, expected {sorted(want)} (float32)"

    def _load_or_build(self, graph: str, wrap: bool):
        trt, onnx_bytes, shapes = self.trt, self.graphs[(graph, wrap)], self._shapes(graph)
        digest = hashlib.sha256()
        for part in (onnx_bytes, trt.__version__, self.device, repr(sorted(shapes.items())), f"no-tf32 {self.opt_level}"):
            digest.update(hashlib.sha256(part if isinstance(part, bytes) else part.encode()).digest())
        kind = f"{graph}{'-ring' if wrap else ''}"
        path = self.cache_dir / f"{self.step.metadata.task}-{kind}-{digest.hexdigest()[:32]}.engine"
        try:
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None and self._io_problem(engine, graph) is None:
                return engine  # else a stale or damaged file: rebuild and overwrite it
        except OSError:
            pass  # not cached yet (or unreadable): build
        print(f"sead: building the TensorRT {kind} engine for {self.step.metadata.task} (rows of up to "
              f"{self.max_row_cells} cells) on {self.device}; this takes a while once, then it is cached in "
              f"{self.cache_dir}", file=sys.stderr, flush=True)
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
            raise SeadError(f"TensorRT could not load the {kind} engine it just built")
        problem = self._io_problem(engine, graph)
        if problem:
            raise SeadError(f"TensorRT's {kind} engine does not match its graph: {problem}")
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
        need = self.ctx.update_device_memory_size_for_shapes()
        if need <= 0:  # TensorRT reports a failure to size the activations as 0
            raise SeadError(f"TensorRT could not size its activation memory for shapes {shapes}")
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
    def __init__(self, engine: TrtEngine, problem: np.ndarray, state: np.ndarray | None, owned: np.ndarray | None,
                 wrap: bool):
        self.engine, self.cu, rt = engine, engine.cu, engine.cudart
        self.closed, self.stream, self.graphs, self.device, self.pinned, self.contexts = False, None, [], [], [], []
        meta = engine.step.metadata
        b, self.cells = problem.shape[0], problem.shape[2:]  # (L,) or (H, W)
        self.length = int(np.prod(self.cells))  # cells per row
        if owned is None:
            owned = np.ones((b, 1, *self.cells), np.float32)
        # the problem and owned cells never change on the device: keep() re-uploads rows from here
        self.host_problem, self.host_owned = problem, np.ascontiguousarray(owned, np.float32)
        self.c_in, self.c_s, self.classes = meta.input_channels, meta.state_channels, meta.classes
        self.row_state = self.c_s * self.length * 4  # bytes per row; rows are contiguous blocks
        self.h2d, self.d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            self.stream = self.cu("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking)
            self.problem, self.owned = self._malloc(problem.nbytes), self._malloc(self.host_owned.nbytes)
            self.state_buffers = [self._malloc(b * self.row_state), self._malloc(b * self.row_state)]
            self.budget, self.last = self._malloc(b * 4), self._malloc(b * 4)
            self.changed_at = self._malloc(b * self.length * 4)
            self.last_budget = np.zeros(b, np.float32)
            self.host_budget, self.host_last = self._pinned(b), self._pinned(b)
            self.logits, self.logits_bytes = 0, 0
            self.current = 0  # state_buffers[current] holds the state
            self._upload(self.problem, problem)
            self._upload(self.owned, self.host_owned)
            if state is None:
                self.cu("cudaMemsetAsync", self.state_buffers[0], 0, b * self.row_state, self.stream)  # zeros at step 0
            else:
                state = np.ascontiguousarray(state, np.float32)
                self._upload(self.state_buffers[0], state)
            self.advance_ctx = _Context(engine, engine.engine("advance", wrap))
            self.readout_ctx = _Context(engine, engine.engine("readout", False))  # the readout is per cell: no wrap
            self.contexts = [self.advance_ctx, self.readout_ctx]
            self._resize(b)
            self.cu("cudaStreamSynchronize", self.stream)  # pageable host sources must outlive their copies
        except BaseException:
            self.close()
            raise

    def _upload(self, dst: int, host: np.ndarray) -> None:
        self.cu("cudaMemcpyAsync", dst, host.ctypes.data, host.nbytes, self.h2d, self.stream)

    def _download(self, shape: tuple, src: int) -> np.ndarray:
        host = np.empty(shape, np.float32)
        self.cu("cudaMemcpyAsync", host.ctypes.data, src, host.nbytes, self.d2h, self.stream)
        self.cu("cudaStreamSynchronize", self.stream)
        return host

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
        problem, state = (b, self.c_in, *self.cells), (b, self.c_s, *self.cells)
        self.advance_ctx.set_shapes({"problem": problem, "state": state, "budget": (b, 1, *(1,) * len(self.cells)),
                                     "owned": (b, 1, *self.cells)})
        self.readout_ctx.set_shapes({"problem": problem, "state": state})
        self._drop_graphs()

    @property
    def rows(self) -> int:
        return self.b

    # -- advance ------------------------------------------------------------------------------
    def _enqueue(self, d: int) -> None:
        """Budget up, K steps from state d into state 1 - d, the last steps down (all async)."""
        n = self.b * 4
        self.cu("cudaMemcpyAsync", self.budget, self.host_budget.ctypes.data, n, self.h2d, self.stream)
        self.advance_ctx.run(self.stream, problem=self.problem, state=self.state_buffers[d], owned=self.owned,
                             budget=self.budget, state_out=self.state_buffers[1 - d], last=self.last,
                             changed_at=self.changed_at)
        self.cu("cudaMemcpyAsync", self.host_last.ctypes.data, self.last, n, self.d2h, self.stream)

    def advance(self, budget: np.ndarray, k: int | None = None) -> np.ndarray:
        if k not in (None, self.engine.k):
            raise SeadError(f"engine 'trt' was built for {self.engine.k} steps per call, not {k}")
        self.host_budget[: self.b] = budget
        self.last_budget = np.asarray(budget, np.float32)
        if self.graphs:
            self.cu("cudaGraphLaunch", self.graphs[self.current], self.stream)
        else:
            self._enqueue(self.current)
        self.cu("cudaStreamSynchronize", self.stream)
        last = self.host_last[: self.b].astype(np.int64)
        self.current ^= 1
        if not self.graphs and self.engine.cuda_graphs:
            self._capture()  # the plain call above was the warm-up TensorRT wants after a shape change
        return last

    def state(self) -> np.ndarray:
        return self._download((self.b, self.c_s, *self.cells), self.state_buffers[self.current])

    def hot(self) -> np.ndarray:
        return hot_cells(self._download((self.b, *self.cells), self.changed_at), self.last_budget)

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
        """(B, *cells) int64: the readout's class per cell for the current state."""
        shape = (self.b, self.classes, *self.cells)
        nbytes = 4 * self.b * self.classes * self.length
        if nbytes > self.logits_bytes:
            if self.logits:
                self.device.remove(self.logits)
                self.cu("cudaFree", self.logits)
                self.logits = 0
            self.logits, self.logits_bytes = self._malloc(nbytes), nbytes
        self.readout_ctx.run(self.stream, problem=self.problem, state=self.state_buffers[self.current], logits=self.logits)
        return self._download(shape, self.logits).argmax(1)

    def keep(self, rows: np.ndarray) -> None:
        """Keep only `rows`. Compaction is rare (at most log2(B) times a batch), so the kept rows
        make one round trip through the host."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == self.b and (rows == np.arange(self.b)).all():
            return
        state = np.ascontiguousarray(self.state()[rows])
        self.host_problem = np.ascontiguousarray(self.host_problem[rows])
        self.host_owned = np.ascontiguousarray(self.host_owned[rows])
        for dst, host in ((self.problem, self.host_problem), (self.owned, self.host_owned),
                          (self.state_buffers[self.current], state)):
            self._upload(dst, host)
        self.cu("cudaStreamSynchronize", self.stream)  # the pageable host sources must outlive the copies
        self._resize(len(rows))

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
        self.host_budget = self.host_last = None  # views into the pinned memory go first
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
