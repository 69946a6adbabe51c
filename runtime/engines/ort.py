"""ONNX Runtime engines: `ort` (CPU provider) and `ort-cuda` (CUDA provider).

An engine loads the derived graphs once; `start(problem)` returns a Batch that owns its buffers,
so one engine serves many threads (InferenceSession.run is thread-safe; bindings are per batch).
ONNX Runtime engines offer several unroll depths K (`k_choices`): sessions are cheap to make, so
the loop can start with few steps per call and go deeper while problems keep running.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import EngineUnavailable
from ..graph import advance_graph, packed_advance_graph, readout_graph, symbols_graph
from ..model_file import StepModel

K_CHOICES = (4, 8, 16, 32, 64)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EngineUnavailable("engine 'ort' needs onnxruntime: pip install 'sead[cpu]' "
                                "(or 'sead[cuda]' for onnxruntime-gpu; never both)") from None
    return onnxruntime


class OrtCpuEngine:
    """CPU provider; host arrays are device arrays, so ping-pong buffers are numpy arrays
    wrapped (not copied) as OrtValues and bound once per call, with no per-step allocation.

    Batches of line-task problems that end in an empty cell run packed into one long tape (see
    graph.packed_advance_graph): one large convolution instead of B small ones. A long tape runs
    alone, cut into cache-sized windows that the engine's window pool (one thread per core) runs
    (OrtCpuWindowedBatch)."""

    name = "ort"
    WINDOW_MIN_CELLS = 1 << 15  # a tape at least this long runs alone, in windows

    def __init__(self, step: StepModel, k_choices: tuple[int, ...] = K_CHOICES, cores: int | None = None):
        self.ort = _onnxruntime()
        self.step, self.k_choices = step, tuple(k_choices)
        meta = step.metadata
        self.can_pack = meta.boundary == "zeros" and meta.convergence == "fixed_point"
        # Measured on 2 cores: one intra-op thread per session beat two for many short problems,
        # so the runtime solves batches side by side, one core each; a lone batch gets every core
        # as intra-op threads (a long tape gets them through its windows instead).
        self.cores = cores or max(1, len(os.sched_getaffinity(0)))
        self.parallel_batches = self.cores
        self._sessions: dict = {}
        self._lock = threading.Lock()
        self._window_pool: ThreadPoolExecutor | None = None
        self.symbols_session(1)
        self.advance_session(self.k_choices[0], False, 1)  # fail here, not mid-solve, if the graph is bad

    def _session(self, graph: bytes, threads: int):
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return self.ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    def _cached(self, key: tuple, graph, threads: int):
        """Sessions are made on first use and shared (InferenceSession.run is thread-safe)."""
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self._session(graph().SerializeToString(), threads)
            return self._sessions[key]

    def advance_session(self, k: int, packed: bool, threads: int):
        build = packed_advance_graph if packed else advance_graph
        return self._cached(("advance", k, packed, threads), lambda: build(self.step, k), threads)

    def windowed_session(self, k: int):
        return self._cached(("windowed", k), lambda: packed_advance_graph(self.step, k, windowed=True), 1)

    @property
    def window_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._window_pool is None:
                self._window_pool = ThreadPoolExecutor(self.cores, thread_name_prefix="sead-window")
            return self._window_pool

    def symbols_session(self, threads: int):
        return self._cached(("symbols", threads), lambda: symbols_graph(self.step), threads)

    def start(self, problem: np.ndarray, exclusive: bool = False):
        """exclusive: no other batch runs beside this one, so it may use every core."""
        b, _, length = problem.shape
        if b == 1 and self.windows(length):
            return OrtCpuWindowedBatch(self, problem)
        return OrtCpuBatch(self, problem, self.cores if exclusive else 1)

    def windows(self, length: int) -> bool:
        """Does a tape this long run in windows? (Lines and rings alike.)"""
        return length >= self.WINDOW_MIN_CELLS

    def max_rows(self, length: int) -> int:
        """Tapes that run in windows come one per batch; their windows share the window pool."""
        return 1 if self.windows(length) else 1 << 62


class OrtCpuBatch:
    def __init__(self, engine: OrtCpuEngine, problem: np.ndarray, threads: int = 1):
        self.engine, self.threads = engine, threads
        problem = np.ascontiguousarray(problem, np.float32)
        b, _, length = problem.shape
        # packing is exact only when every row ends in an empty cell (what lies beyond a tape)
        self.packed = engine.can_pack and length > 1 and not problem[:, 0, -1].any()
        self._set(problem, np.zeros((b, engine.step.metadata.state_channels, length), np.float32))

    def _set(self, problem: np.ndarray, state: np.ndarray) -> None:
        """problem (B, C_in, L) and state (B, C_s, L), in rows; stored packed when packing."""
        e = self.engine
        b, c_s, length = state.shape
        self.rows_problem, self.b, self.length = problem, b, length
        pack = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2).reshape(1, a.shape[1], b * length))
        self.problem = pack(problem) if self.packed else problem
        self.state = pack(state) if self.packed else np.ascontiguousarray(state)
        self.spare = np.empty_like(self.state)
        self.changed = np.zeros((1, b, 1) if self.packed else (b, 1, 1), np.float32)
        ov = e.ort.OrtValue.ortvalue_from_numpy
        self.fixed = {"problem": ov(self.problem)}
        if self.packed:  # the packed graph needs no budget: the loop clips its counts
            self.budget = None
            self.fixed["rows_shape"] = ov(np.array([c_s, b, length], np.int64))
        else:
            self.budget = np.zeros((b, 1, 1), np.float32)
            self.fixed["budget"] = ov(self.budget)
        self.changed_value = ov(self.changed)
        self.values = [ov(self.state), ov(self.spare)]  # ping-pong pair, wrapped once
        self.bindings: dict = {}  # one IO binding per K, made on first use

    @property
    def size(self) -> int:
        return self.b

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        """Run up to k steps per problem (budget (B,) steps allowed). -> changed counts (B,) int."""
        if k not in self.bindings:
            session = self.engine.advance_session(k, self.packed, self.threads)
            binding = session.io_binding()
            for name, value in self.fixed.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output("changed", self.changed_value)
            self.bindings[k] = (session, binding)
        session, binding = self.bindings[k]
        if self.budget is not None:
            self.budget[:, 0, 0] = budget
        src, dst = self.values
        binding.bind_ortvalue_input("state", src)
        binding.bind_ortvalue_output("state_out", dst)
        session.run_with_iobinding(binding)
        self.values = [dst, src]
        self.state, self.spare = self.spare, self.state
        return self.changed.reshape(-1).astype(np.int64)

    def _rows_state(self) -> np.ndarray:
        if not self.packed:
            return self.state
        return self.state.reshape(-1, self.b, self.length).transpose(1, 0, 2)

    def symbols(self) -> np.ndarray:
        """(B, L) int64: the readout's class per cell for the current state."""
        session = self.engine.symbols_session(self.threads)
        symbols = session.run(["symbols"], {"problem": self.problem, "state": self.state})[0]
        return symbols.reshape(self.b, self.length)  # packed cells are rows end to end

    def keep(self, rows: np.ndarray) -> None:
        """Drop every problem not in `rows` (finished ones) from the batch."""
        self._set(np.ascontiguousarray(self.rows_problem[rows]), np.ascontiguousarray(self._rows_state()[rows]))

    def close(self) -> None:
        """Nothing to hand back: the batch's arrays go with it."""


class OrtCpuWindowedBatch:
    """One long tape, cut into windows of at most WINDOW_CELLS cells (at least one per core), each
    widened by a halo of `halo` cells (the engine's deepest K) on its inner sides, run on the
    engine's window pool (one thread per core). Windows this size keep a step's activations in
    cache; one long tape does not, and ONNX Runtime's intra-op threads barely speed up one long
    convolution chain. Measured on 2 cores for one 1,000,000-digit addition: 2.3 s as one tape,
    0.67 s in 8,192-cell windows.

    Exact: the rule has radius 1, so after k <= halo steps a window's cut edge has corrupted at
    most k cells inward, all inside the halo, and the cells a window owns are exact. After each
    call the owned cells are stitched into the tape and the halos are cut afresh from it. On a
    ring, halos wrap around (every window has two cut edges). Counting: a step changed the tape
    iff it changed some owned cell, so the windowed graph flags each step over owned cells only,
    and the tape's count is the number of steps flagged in any window; a generations task (rule110)
    runs exactly min(k, budget) steps and counts them."""

    WINDOW_CELLS = 1 << 13

    def __init__(self, engine: OrtCpuEngine, problem: np.ndarray):
        self.engine = engine
        meta = engine.step.metadata
        self.ring, self.generations = meta.boundary == "ring", meta.convergence == "generations"
        problem = np.ascontiguousarray(problem, np.float32)
        _, _, length = problem.shape
        own = min(-(-length // engine.cores), self.WINDOW_CELLS)
        self.owned = [(a, min(length, a + own)) for a in range(0, length, own)]
        self.halo = halo = max(engine.k_choices)
        if self.ring:  # a window may run past either end: cut() wraps it
            self.windows = [(a - halo, b + halo) for a, b in self.owned]
        else:  # a tape's own ends are real boundaries, as in one unwindowed tape
            self.windows = [(max(0, a - halo), min(length, b + halo)) for a, b in self.owned]
        self.problem = problem
        self.problems = [self._cut(problem, lo, hi) for lo, hi in self.windows]
        self.masks = []
        for (a, b), (lo, hi) in zip(self.owned, self.windows):
            mask = np.zeros((1, 1, hi - lo), np.float32)
            mask[:, :, a - lo:b - lo] = 1
            self.masks.append(mask)
        self.state = np.zeros((1, meta.state_channels, length), np.float32)

    @staticmethod
    def _cut(tape: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Cells lo..hi-1 of a tape, wrapping around its ends (rings only go past them)."""
        if 0 <= lo and hi <= tape.shape[2]:
            return np.ascontiguousarray(tape[:, :, lo:hi])
        return np.take(tape, np.arange(lo, hi) % tape.shape[2], axis=2)

    @property
    def size(self) -> int:
        return 1

    def _window(self, w: int, k: int):
        lo, hi = self.windows[w]
        session = self.engine.windowed_session(k)
        return session.run(["state_out", "moved"], {"problem": self.problems[w], "count_mask": self.masks[w],
                                                    "state": self._cut(self.state, lo, hi)})

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        if k > self.halo:
            raise ValueError(f"windows have a halo of {self.halo} cells: at most {self.halo} steps per call")
        if self.generations:  # the state after exactly the requested generations is the answer
            k = max(1, min(k, int(budget.reshape(-1)[0])))
        # Otherwise no budget gating, as in packed batches: the loop clips the count to the
        # budget, and a problem that ran out of budget is finished, unconverged, whatever ran after.
        outs = list(self.engine.window_pool.map(lambda w: self._window(w, k), range(len(self.windows))))
        for (a, b), (lo, _), (state, _) in zip(self.owned, self.windows, outs):
            self.state[:, :, a:b] = state[:, :, a - lo:b - lo]
        if self.generations:
            return np.array([k], np.int64)
        moved = np.max([flags.reshape(-1) for _, flags in outs], axis=0)
        return np.array([int(moved.sum())], np.int64)

    def symbols(self) -> np.ndarray:
        session = self.engine.symbols_session(self.engine.cores)
        return session.run(["symbols"], {"problem": self.problem, "state": self.state})[0]

    def keep(self, rows: np.ndarray) -> None:
        if len(rows) != 1:  # the loop returns once nothing is live, so it keeps one row or none
            raise ValueError("a windowed batch holds one problem")

    def close(self) -> None:
        """Nothing to hand back: the batch's arrays go with it."""


class OrtCudaEngine:
    """CUDA provider with device-resident buffers: the problem is uploaded once, the state
    ping-pongs between two device OrtValues, and only the (B,) budgets go up and the (B,) step
    counts come back per call. cuDNN's algorithm search is HEURISTIC (EXHAUSTIVE re-benchmarks
    every new shape).

    CUDA graphs where shapes repeat: a batch shape seen before gets an engine-owned slot, i.e.
    buffers that outlive the batch, so graphs captured on them (one per ping-pong direction and K,
    ONNX Runtime's `gpu_graph_id`) are replayed by every later batch of that shape. ONNX Runtime's
    Python API cannot release a captured graph, so slots are never freed: their number and size
    are capped, and other shapes run without graphs. A graph failure turns graphs off for the
    engine and the call is rerun without them.

    device_type="cpu" runs this same device-resident path on the CPU provider (graph ids are then
    ignored): how its bookkeeping is tested on machines without a GPU."""

    name = "ort-cuda"
    GRAPH_SLOTS = 8             # shapes that get CUDA graphs (each holds 2 x len(k_choices) graphs)
    GRAPH_MAX_CELLS = 1 << 18   # larger batches are compute-bound: launch overhead is noise there
    SEEN_SHAPES = 4096          # how many shapes the repeat detector remembers

    def __init__(self, step: StepModel, k_choices: tuple[int, ...] = K_CHOICES, device_id: int = 0,
                 cuda_graphs: bool | None = None, device_type: str = "cuda"):
        ort = _onnxruntime()
        if device_type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable("engine 'ort-cuda' needs onnxruntime-gpu and a CUDA GPU: pip install 'sead[cuda]' "
                                    f"(available providers here: {', '.join(ort.get_available_providers())})")
        self.ort, self.step, self.k_choices = ort, step, tuple(k_choices)
        self.device_type, self.device_id = device_type, device_id
        if cuda_graphs is None:
            cuda_graphs = os.environ.get("SEAD_ORT_CUDA_GRAPHS", "1") != "0"
        self.cuda_graphs = cuda_graphs
        # use_tf32=0: TF32 convolutions would round the rule's pre-activations differently from fp32
        self.options = {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC",
                        "do_copy_in_default_stream": True, "use_tf32": 0}
        self._sessions: dict = {}
        self._lock = threading.RLock()  # sessions, slots, the repeat detector (RLock: a batch's __del__
        # may release its slot from inside a locked section of the same thread)
        self._device_lock = threading.RLock()  # see device(); always taken before _lock, never after
        self._slots: dict[tuple, _DeviceBuffers] = {}
        self._seen: dict[tuple, int] = {}
        self.readout_session = self._session(readout_graph(step).SerializeToString(), graphs=False)
        self.advance_session(self.k_choices[0], graphs=False)
        if self.cuda_graphs:
            self.advance_session(self.k_choices[0], graphs=True)  # fails here (and turns graphs off), not mid-solve

    def _session(self, graph: bytes, graphs: bool):
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.device_type == "cpu":
            return self.ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        options = dict(self.options, **({"enable_cuda_graph": True} if graphs else {}))
        try:
            return self.ort.InferenceSession(graph, opts, providers=[("CUDAExecutionProvider", options)])
        except Exception:
            if "use_tf32" not in options:
                raise
            # an onnxruntime-gpu too old to know use_tf32: it predates TF32 by default
            self.options.pop("use_tf32", None)
            options.pop("use_tf32")
            return self.ort.InferenceSession(graph, opts, providers=[("CUDAExecutionProvider", options)])

    def advance_session(self, k: int, graphs: bool):
        """The K-step session; graphs=True asks for one with CUDA graphs enabled, and falls back to
        the plain one (turning graphs off for good) if ONNX Runtime refuses, e.g. when some node
        would not run on the CUDA provider."""
        with self._lock:
            graphs = graphs and self.cuda_graphs
            if (k, graphs) not in self._sessions:
                try:
                    self._sessions[(k, graphs)] = self._session(advance_graph(self.step, k).SerializeToString(), graphs)
                except Exception as exc:
                    if not graphs:
                        raise
                    self._graphs_off(exc)
                    return self.advance_session(k, graphs=False)
            return self._sessions[(k, graphs)]

    def device(self):
        """While CUDA graphs are on, this engine's device work (uploads, runs, reads, frees) goes
        one thread at a time: ONNX Runtime captures a graph in global mode, where another thread's
        allocation or copy during the capture would invalidate it."""
        return self._device_lock if self.cuda_graphs else contextlib.nullcontext()

    def _graphs_off(self, exc: Exception) -> None:
        if self.cuda_graphs:
            self.cuda_graphs = False
            print(f"sead: CUDA graphs unavailable ({type(exc).__name__}: {exc}); engine 'ort-cuda' continues "
                  "without them", file=sys.stderr, flush=True)

    def buffers(self, b: int, length: int) -> "_DeviceBuffers":
        """A free graph slot for this shape if it repeats (and the caps allow), else private buffers."""
        shape = (b, length)
        with self._lock:
            if self.cuda_graphs and b * length <= self.GRAPH_MAX_CELLS:
                slot = self._slots.get(shape)
                if slot is None and self._seen.get(shape) and len(self._slots) < self.GRAPH_SLOTS:
                    slot = self._slots[shape] = _DeviceBuffers(self, b, length, graph_slot=len(self._slots))
                if len(self._seen) >= self.SEEN_SHAPES:
                    self._seen.clear()
                self._seen[shape] = self._seen.get(shape, 0) + 1
                if slot is not None and not slot.busy:
                    slot.busy = True
                    return slot
        return _DeviceBuffers(self, b, length)

    def release(self, buffers: "_DeviceBuffers") -> None:
        with self._lock:
            buffers.busy = False

    @property
    def graph_shapes(self) -> list[tuple[int, int]]:
        """(batch, length) shapes that own a graph slot."""
        return sorted(self._slots)

    def start(self, problem: np.ndarray, exclusive: bool = False) -> "OrtCudaBatch":
        return OrtCudaBatch(self, np.ascontiguousarray(problem, np.float32))


class _DeviceBuffers:
    """problem, the two states, budget and changed on the device, and one IO binding per (K,
    ping-pong direction), bound once. A graph slot's bindings carry graph ids 2s+1 and 2s+2 (0 is
    ONNX Runtime's default id, -1 means no graph)."""

    def __init__(self, engine: OrtCudaEngine, b: int, length: int, graph_slot: int | None = None):
        e, meta = engine, engine.step.metadata
        alloc = lambda shape: e.ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, e.device_type, e.device_id)
        self.engine, self.b, self.length = engine, b, length
        self.problem = alloc((b, meta.input_channels, length))
        self.states = [alloc((b, meta.state_channels, length)) for _ in range(2)]
        self.budget, self.changed = alloc((b, 1, 1)), alloc((b, 1, 1))
        self.graph_ids = (2 * graph_slot + 1, 2 * graph_slot + 2) if graph_slot is not None else None
        self.busy = False
        self.bindings: dict = {}

    def binding(self, k: int, d: int):
        """(session, IO binding, run options, graphed) for K steps from states[d] into states[1 - d]."""
        key = (k, d)
        if key not in self.bindings:
            e = self.engine
            graphed = self.graph_ids is not None and e.cuda_graphs
            session = e.advance_session(k, graphs=graphed)
            graphed = graphed and e.cuda_graphs  # the session may have turned graphs off
            binding = session.io_binding()
            binding.bind_ortvalue_input("problem", self.problem)
            binding.bind_ortvalue_input("budget", self.budget)
            binding.bind_ortvalue_input("state", self.states[d])
            binding.bind_ortvalue_output("state_out", self.states[1 - d])
            binding.bind_ortvalue_output("changed", self.changed)
            run_options = e.ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(self.graph_ids[d]) if graphed else "-1")
            self.bindings[key] = (session, binding, run_options, graphed)
        return self.bindings[key]

    def run(self, k: int, d: int) -> None:
        session, binding, run_options, graphed = self.binding(k, d)
        if not graphed:
            session.run_with_iobinding(binding, run_options)
            return
        e = self.engine
        try:
            session.run_with_iobinding(binding, run_options)  # the caller holds e.device()
        except Exception as exc:  # a failed capture or replay: the inputs are intact, so rerun plainly
            e._graphs_off(exc)
            self.bindings.clear()
            self.graph_ids = None
            self.run(k, d)


class OrtCudaBatch:
    """A batch on the device. On a graph slot, keep() drops rows virtually while at least a
    quarter of the slot's rows are live: they stay in the slot with budget 0 (so the gated graph
    leaves them untouched), and the shape, hence the captured graphs, stays. Below a quarter the
    batch compacts for real and leaves the slot, so idle rows never cost more than 3x the live
    ones."""

    def __init__(self, engine: OrtCudaEngine, problem: np.ndarray, state: np.ndarray | None = None):
        self.engine = engine
        b, _, length = problem.shape
        self.host_problem = problem  # the problem never changes on the device: keep() re-uploads rows
        self.current = 0  # buffers.states[current] holds the state
        self.rows: np.ndarray | None = None  # the slot rows still in the batch (None: all of them)
        self.budget = np.zeros((b, 1, 1), np.float32)
        with engine.device():
            self.buffers = engine.buffers(b, length)
            self.buffers.problem.update_inplace(problem)
            shape = (b, engine.step.metadata.state_channels, length)
            self.buffers.states[0].update_inplace(state if state is not None else np.zeros(shape, np.float32))

    @property
    def size(self) -> int:
        return self.host_problem.shape[0] if self.rows is None else len(self.rows)

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        if self.rows is None:
            self.budget[:, 0, 0] = budget
        else:
            self.budget[:] = 0
            self.budget[self.rows, 0, 0] = budget
        with self.engine.device():
            buffers = self.buffers
            buffers.budget.update_inplace(self.budget)
            buffers.run(k, self.current)
            changed = buffers.changed.numpy()[:, 0, 0]  # B floats back; the state stays on the device
        self.current ^= 1
        return (changed if self.rows is None else changed[self.rows]).astype(np.int64)

    def symbols(self) -> np.ndarray:
        e = self.engine
        with e.device():
            binding = e.readout_session.io_binding()
            binding.bind_ortvalue_input("problem", self.buffers.problem)
            binding.bind_ortvalue_input("state", self.buffers.states[self.current])
            binding.bind_output("logits", "cpu")
            e.readout_session.run_with_iobinding(binding)
            logits = binding.copy_outputs_to_cpu()[0]
        symbols = logits.argmax(1)
        return symbols if self.rows is None else symbols[self.rows]

    def keep(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64) if self.rows is None else self.rows[rows]
        if self.buffers.graph_ids is not None and 4 * len(rows) >= self.buffers.b:
            self.rows = rows  # idle rows cost at most 3x the live ones: keep the shape and its graphs
            return
        # Compaction is rare (at most log2(B) times a batch): a round trip through the host is fine.
        with self.engine.device():
            state = np.ascontiguousarray(self.buffers.states[self.current].numpy()[rows])
            self.close()
            self.__init__(self.engine, np.ascontiguousarray(self.host_problem[rows]), state)

    def close(self) -> None:
        """Hand a graph slot back to the engine; private buffers are freed here, under the lock."""
        if self.buffers is not None:
            with self.engine.device():
                self.engine.release(self.buffers)
                self.buffers = None

    def __del__(self):
        # Never the device lock here: garbage collection can run inside any locked section. The
        # slot goes back (_lock is re-entrant); freeing private buffers is left to the collector.
        if getattr(self, "buffers", None) is not None:
            self.engine.release(self.buffers)
