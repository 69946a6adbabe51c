"""ONNX Runtime engines: `ort` (CPU provider) and `ort-cuda` (CUDA provider).

Both implement runtime/engines/protocol.py. An engine loads the derived graphs once;
`start(problem)` returns a Batch that owns its buffers, so one engine serves many threads
(InferenceSession.run is thread-safe; bindings are per batch). ONNX Runtime engines offer
several unroll depths K (`k_choices`): sessions are cheap to make, so the loop can start with few
steps per call and go deeper while problems keep running.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from ..errors import EngineUnavailable
from ..graph import advance_graph, readout_graph, settle_graph, symbols_graph
from ..model_file import StepModel
from .protocol import hot_cells

K_CHOICES = (4, 8, 16, 32, 64)
GPU_GRAPH_ID_VERSION = (1, 18)  # onnxruntime-gpu learned `gpu_graph_id` (one graph per id) in 1.18


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EngineUnavailable("engine 'ort' needs onnxruntime: pip install 'sead[cpu]' "
                                "(or 'sead[cuda]' for onnxruntime-gpu; never both)", quiet=True) from None
    return onnxruntime


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class OrtCpuEngine:
    """CPU provider; host arrays are device arrays, so ping-pong buffers are numpy arrays
    wrapped (not copied) as OrtValues and bound once per batch, with no per-step allocation.

    Batches whose rows all end in an empty cell run packed into one long row (see
    graph.advance_graph): one large convolution instead of B small ones. Measured on 2 cores, one
    intra-op thread per session beat two for every shape the loop makes, so every session has one
    and the loop runs `workers` batches side by side, one per core."""

    name = "ort"
    BATCH_CELLS = 1 << 14  # cells per batch: a step's activations stay in cache (see README "Engines")

    def __init__(self, step: StepModel, k_choices: tuple[int, ...] = K_CHOICES, cores: int | None = None):
        self.ort = _onnxruntime()
        self.step, self.k_choices = step, tuple(k_choices)
        self.workers = cores or max(1, len(os.sched_getaffinity(0)))
        self.batch_cells = self.BATCH_CELLS
        self.max_row_cells = 1 << 30
        self._sessions: dict = {}
        self._lock = threading.Lock()
        self.symbols_session()
        self.advance_session(self.k_choices[0], packed=False, wrap=False)  # a bad graph fails here, not mid-solve

    def max_rows(self, length: int) -> int:
        return 1 << 40

    def _cached(self, key: tuple, graph):
        """Sessions are made on first use and shared (InferenceSession.run is thread-safe)."""
        with self._lock:
            if key not in self._sessions:
                opts = self.ort.SessionOptions()
                opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                self._sessions[key] = self.ort.InferenceSession(graph().SerializeToString(), opts,
                                                                providers=["CPUExecutionProvider"])
            return self._sessions[key]

    def advance_session(self, k: int, packed: bool, wrap: bool):
        return self._cached(("advance", k, packed, wrap), lambda: advance_graph(self.step, k, wrap=wrap, packed=packed))

    def settle_session(self, k: int):
        return self._cached(("settle", k), lambda: settle_graph(self.step, k))

    def symbols_session(self):
        return self._cached(("symbols",), lambda: symbols_graph(self.step))

    def start(self, problem: np.ndarray, state: np.ndarray | None = None, owned: np.ndarray | None = None,
              wrap: bool = False, settle: bool = False) -> "OrtCpuBatch":
        return OrtCpuBatch(self, problem, state, owned, wrap, settle)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


class OrtCpuBatch:
    def __init__(self, engine: OrtCpuEngine, problem: np.ndarray, state: np.ndarray | None,
                 owned: np.ndarray | None, wrap: bool, settle: bool = False):
        self.engine, self.wrap = engine, wrap
        problem = np.asarray(problem, np.float32)
        b, cells = problem.shape[0], problem.shape[2:]
        # packing is exact when every row of a tape ends in an empty cell (what lies beyond a line tape)
        self.packed = len(cells) == 1 and not wrap and not problem[:, 0, -1].any()
        # whole problems packed: the settle graph, without budgets or per-cell bookkeeping
        self.settle = settle and self.packed and engine.step.metadata.convergence == "fixed_point"
        if state is None:
            state = np.zeros((engine.step.metadata.state_channels, b, *cells), np.float32).swapaxes(0, 1)
        else:  # a copy in its own memory order: the ping-pong buffers must not be the caller's array
            state = np.array(state, np.float32, order="K")
        if owned is None and not self.settle:
            owned = np.ones((b, 1, *cells), np.float32)
        self._set(problem, state, None if owned is None else np.asarray(owned, np.float32))

    def _set(self, problem: np.ndarray, state: np.ndarray, owned: np.ndarray | None) -> None:
        """problem (B, C_in, *S), state (B, C_s, *S), owned (B, 1, *S) or None (settle), in rows.
        Packed, each is stored (1, C, B*L): channel-major arrays (one_hot_cells) need no copy."""
        ov = self.engine.ort.OrtValue.ortvalue_from_numpy
        b, c_s, cells = state.shape[0], state.shape[1], state.shape[2:]
        length = int(np.prod(cells))  # cells per row
        self.b, self.length, self.cells = b, length, cells
        if self.packed:
            layout = lambda a: np.ascontiguousarray(a.swapaxes(0, 1)).reshape(1, a.shape[1], b * length)
        else:
            layout = np.ascontiguousarray
        self.problem, self.state_now = layout(problem), layout(state)
        self.owned = None if owned is None else layout(owned)
        self.spare = np.empty_like(self.state_now)
        ones = (1,) * len(cells)
        self.last = np.zeros((1, b, 1) if self.packed else (b, 1, *ones), np.float32)
        self.outputs = {"last": ov(self.last)}
        if self.settle:
            self.fixed = {"problem": ov(self.problem), "rows_shape": ov(np.array([c_s, b, length], np.int64))}
        else:
            self.budget = np.zeros((1, 1, b * length) if self.packed else (b, 1, *ones), np.float32)
            self.changed_at = np.zeros((1, 1, b * length) if self.packed else (b, 1, *cells), np.float32)
            self.fixed = {"problem": ov(self.problem), "owned": ov(self.owned), "budget": ov(self.budget)}
            if self.packed:
                self.fixed["rows_shape"] = ov(np.array([1, b, length], np.int64))
            self.outputs["changed_at"] = ov(self.changed_at)
        self.last_budget = np.zeros(b, np.float32)
        self.values = [ov(self.state_now), ov(self.spare)]  # ping-pong pair, wrapped once
        self.bindings: dict = {}  # one IO binding per K, made on first use

    @property
    def rows(self) -> int:
        return self.b

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        if k not in self.bindings:
            e = self.engine
            session = e.settle_session(k) if self.settle else e.advance_session(k, self.packed, self.wrap)
            binding = session.io_binding()
            for name, value in self.fixed.items():
                binding.bind_ortvalue_input(name, value)
            for name, value in self.outputs.items():
                binding.bind_ortvalue_output(name, value)
            self.bindings[k] = (session, binding)
        session, binding = self.bindings[k]
        budget = self.last_budget = np.asarray(budget, np.float32)
        if not self.settle:
            self.budget[...] = np.repeat(budget, self.length).reshape(self.budget.shape) if self.packed \
                else budget.reshape(self.budget.shape)
        src, dst = self.values
        binding.bind_ortvalue_input("state", src)
        binding.bind_ortvalue_output("state_out", dst)
        session.run_with_iobinding(binding)
        self.values = [dst, src]
        self.state_now, self.spare = self.spare, self.state_now
        last = self.last.reshape(-1)
        return (np.minimum(last, budget) if self.settle else last).astype(np.int64)

    def _rows(self, a: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """A stored array back in rows, (B, C, *S), or only the rows `keep` (channel-major when packed)."""
        if self.packed:
            a = a.reshape(-1, self.b, self.length)
            return (a if keep is None else a[:, keep]).swapaxes(0, 1)
        return a if keep is None else a[keep]

    def state(self) -> np.ndarray:
        return np.array(self._rows(self.state_now))

    def hot(self) -> np.ndarray:
        if self.settle:
            raise RuntimeError("a batch started with settle=True keeps no per-cell changes")
        return hot_cells(self._rows(self.changed_at)[:, 0], self.last_budget)

    def symbols(self) -> np.ndarray:
        session = self.engine.symbols_session()
        symbols = session.run(["symbols"], {"problem": self.problem, "state": self.state_now})[0]
        return symbols.reshape(self.b, *self.cells)  # packed cells are rows end to end

    def keep(self, rows: np.ndarray) -> None:
        self._set(self._rows(self.problem, rows), self._rows(self.state_now, rows),
                  None if self.owned is None else self._rows(self.owned, rows))

    def close(self) -> None:
        """Nothing to hand back: the batch's arrays go with it."""


class OrtCudaEngine:
    """CUDA provider with device-resident buffers: the problem is uploaded once, the state
    ping-pongs between two device OrtValues, and per call only the (B,) budgets go up and the
    (B,) `last` steps come back. cuDNN's algorithm search is HEURISTIC (EXHAUSTIVE re-benchmarks
    every new shape).

    CUDA graphs where shapes repeat: a batch shape seen before gets an engine-owned slot, i.e.
    buffers that outlive the batch, so graphs captured on them (one per ping-pong direction and K,
    ONNX Runtime's `gpu_graph_id`, onnxruntime-gpu >= 1.18) are replayed by every later batch of
    that shape. ONNX Runtime's Python API cannot release a captured graph, so slots are never
    freed: their number and size are capped, and other shapes run without graphs. A graph failure
    turns graphs off for the engine and the call is rerun without them.

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
                                    f"(available providers here: {', '.join(ort.get_available_providers())})",
                                    quiet=True)
        self.ort, self.step, self.k_choices = ort, step, tuple(k_choices)
        self.device_type, self.device_id = device_type, device_id
        self.workers = 2  # one batch computes while the other's budgets and counts cross the bus
        self.batch_cells = 1 << 20
        self.max_row_cells = 1 << 20
        if cuda_graphs is None:
            cuda_graphs = os.environ.get("SEAD_ORT_CUDA_GRAPHS", "1") != "0"
        if cuda_graphs and device_type == "cuda" and _version(ort.__version__) < GPU_GRAPH_ID_VERSION:
            # before 1.18 every run replays the one graph captured first, whatever its buffers
            print(f"sead: onnxruntime-gpu {ort.__version__} has no gpu_graph_id (1.18+); engine 'ort-cuda' runs "
                  "without CUDA graphs", file=sys.stderr, flush=True)
            cuda_graphs = False
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
        self.advance_session(self.k_choices[0], wrap=False, graphs=False)
        if self.cuda_graphs:
            self.advance_session(self.k_choices[0], wrap=False, graphs=True)  # fails here (graphs off), not mid-solve

    def max_rows(self, length: int) -> int:
        return max(1, (1 << 31) // (4 * max(length, 1) * 64))  # ORT's CUDA kernels index with int32

    def _session(self, graph: bytes, graphs: bool):
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.device_type == "cpu":
            return self.ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        options = dict(self.options, **({"enable_cuda_graph": True} if graphs else {}))
        try:
            session = self.ort.InferenceSession(graph, opts, providers=[("CUDAExecutionProvider", options)])
        except Exception:
            if "use_tf32" not in options:
                raise
            # an onnxruntime-gpu too old to know use_tf32: it predates TF32 by default
            self.options.pop("use_tf32", None)
            options.pop("use_tf32")
            session = self.ort.InferenceSession(graph, opts, providers=[("CUDAExecutionProvider", options)])
        if session.get_providers()[:1] != ["CUDAExecutionProvider"]:
            # ONNX Runtime falls back to the CPU provider, silently, when CUDA cannot start
            raise EngineUnavailable(f"engine 'ort-cuda': ONNX Runtime could not start its CUDA provider "
                                    f"(the session runs on {', '.join(session.get_providers())})")
        return session

    def advance_session(self, k: int, wrap: bool, graphs: bool):
        """The K-step session; graphs=True asks for one with CUDA graphs enabled, and falls back to
        the plain one (turning graphs off for good) if ONNX Runtime refuses, e.g. when some node
        would not run on the CUDA provider."""
        with self._lock:
            graphs = graphs and self.cuda_graphs
            key = (k, wrap, graphs)
            if key not in self._sessions:
                try:
                    self._sessions[key] = self._session(advance_graph(self.step, k, wrap=wrap).SerializeToString(), graphs)
                except EngineUnavailable:
                    raise
                except Exception as exc:
                    if not graphs:
                        raise
                    self._graphs_off(exc)
                    return self.advance_session(k, wrap, graphs=False)
            return self._sessions[key]

    def providers(self) -> dict[str, list[str]]:
        """Each session's providers, in order (bench/gpu_check.py records them)."""
        with self._lock:
            sessions = {f"advance k={k} wrap={w} graphs={g}": s for (k, w, g), s in self._sessions.items()}
        sessions["readout"] = self.readout_session
        return {name: s.get_providers() for name, s in sessions.items()}

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

    def buffers(self, b: int, cells: tuple[int, ...], wrap: bool) -> "_DeviceBuffers":
        """A free graph slot for this shape if it repeats (and the caps allow), else private buffers.
        cells: a row's cell shape, (L,) or (H, W)."""
        shape = (b, *cells, wrap)
        with self._lock:
            if self.cuda_graphs and b * int(np.prod(cells)) <= self.GRAPH_MAX_CELLS:
                slot = self._slots.get(shape)
                if slot is None and self._seen.get(shape) and len(self._slots) < self.GRAPH_SLOTS:
                    slot = self._slots[shape] = _DeviceBuffers(self, b, cells, wrap, graph_slot=len(self._slots))
                if len(self._seen) >= self.SEEN_SHAPES:
                    self._seen.clear()
                self._seen[shape] = self._seen.get(shape, 0) + 1
                if slot is not None and not slot.busy:
                    slot.busy = True
                    return slot
        return _DeviceBuffers(self, b, cells, wrap)

    def release(self, buffers: "_DeviceBuffers") -> None:
        with self._lock:
            buffers.busy = False

    @property
    def graph_shapes(self) -> list[tuple[int, int, bool]]:
        """(batch, *cells, wrap) shapes that own a graph slot."""
        return sorted(self._slots)

    def start(self, problem: np.ndarray, state: np.ndarray | None = None, owned: np.ndarray | None = None,
              wrap: bool = False, settle: bool = False) -> "OrtCudaBatch":
        return OrtCudaBatch(self, np.ascontiguousarray(problem, np.float32), state, owned, wrap)

    def close(self) -> None:
        with self._device_lock, self._lock:
            self._sessions.clear()
            self._slots.clear()
            self.readout_session = None


class _DeviceBuffers:
    """problem, owned, the two states, budget, last and changed_at on the device, and one IO binding per
    (K, ping-pong direction), bound once. A graph slot's bindings carry graph ids 2s+1 and 2s+2
    (0 is ONNX Runtime's default id, -1 means no graph)."""

    def __init__(self, engine: OrtCudaEngine, b: int, cells: tuple[int, ...], wrap: bool, graph_slot: int | None = None):
        e, meta = engine, engine.step.metadata
        alloc = lambda shape: e.ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, e.device_type, e.device_id)
        self.engine, self.b, self.cells, self.wrap = engine, b, cells, wrap
        ones = (1,) * len(cells)
        self.problem, self.owned = alloc((b, meta.input_channels, *cells)), alloc((b, 1, *cells))
        self.states = [alloc((b, meta.state_channels, *cells)) for _ in range(2)]
        self.budget, self.last, self.changed_at = alloc((b, 1, *ones)), alloc((b, 1, *ones)), alloc((b, 1, *cells))
        self.graph_ids = (2 * graph_slot + 1, 2 * graph_slot + 2) if graph_slot is not None else None
        self.busy = False
        self.bindings: dict = {}

    def binding(self, k: int, d: int):
        """(session, IO binding, run options, graphed) for K steps from states[d] into states[1 - d]."""
        key = (k, d)
        if key not in self.bindings:
            e = self.engine
            graphed = self.graph_ids is not None and e.cuda_graphs
            session = e.advance_session(k, self.wrap, graphs=graphed)
            graphed = graphed and e.cuda_graphs  # the session may have turned graphs off
            binding = session.io_binding()
            for name, value in (("problem", self.problem), ("owned", self.owned), ("budget", self.budget),
                                ("state", self.states[d])):
                binding.bind_ortvalue_input(name, value)
            for name, value in (("state_out", self.states[1 - d]), ("last", self.last), ("changed_at", self.changed_at)):
                binding.bind_ortvalue_output(name, value)
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

    def __init__(self, engine: OrtCudaEngine, problem: np.ndarray, state: np.ndarray | None,
                 owned: np.ndarray | None, wrap: bool):
        self.engine, self.wrap = engine, wrap
        b, cells = problem.shape[0], problem.shape[2:]
        if owned is None:
            owned = np.ones((b, 1, *cells), np.float32)
        # the problem and owned cells never change on the device: keep() re-uploads rows from here
        self.host_problem, self.host_owned = problem, np.ascontiguousarray(owned, np.float32)
        self.current = 0  # buffers.states[current] holds the state
        self.rows_in_slot: np.ndarray | None = None  # the slot rows still in the batch (None: all of them)
        self.budget = np.zeros((b, 1) + (1,) * len(cells), np.float32)
        self.last_budget = np.zeros(b, np.float32)
        with engine.device():
            self.buffers = engine.buffers(b, cells, wrap)
            self.buffers.problem.update_inplace(problem)
            self.buffers.owned.update_inplace(self.host_owned)
            shape = (b, engine.step.metadata.state_channels, *cells)
            self.buffers.states[0].update_inplace(np.ascontiguousarray(state, np.float32) if state is not None
                                                  else np.zeros(shape, np.float32))

    @property
    def rows(self) -> int:
        return self.host_problem.shape[0] if self.rows_in_slot is None else len(self.rows_in_slot)

    def _live(self, a: np.ndarray) -> np.ndarray:
        return a if self.rows_in_slot is None else a[self.rows_in_slot]

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        self.last_budget = np.asarray(budget, np.float32)
        rows = self.budget.reshape(-1)  # a view: one budget per row
        if self.rows_in_slot is None:
            rows[:] = budget
        else:
            rows[:] = 0
            rows[self.rows_in_slot] = budget
        with self.engine.device():
            buffers = self.buffers
            buffers.budget.update_inplace(self.budget)
            buffers.run(k, self.current)
            last = buffers.last.numpy().reshape(-1)  # B floats back; the state stays on the device
        self.current ^= 1
        return self._live(last).astype(np.int64)

    def state(self) -> np.ndarray:
        with self.engine.device():
            return np.ascontiguousarray(self._live(self.buffers.states[self.current].numpy()))

    def hot(self) -> np.ndarray:
        with self.engine.device():
            changed_at = self._live(self.buffers.changed_at.numpy()[:, 0])
        return hot_cells(changed_at, self.last_budget)

    def symbols(self) -> np.ndarray:
        e = self.engine
        with e.device():
            binding = e.readout_session.io_binding()
            binding.bind_ortvalue_input("problem", self.buffers.problem)
            binding.bind_ortvalue_input("state", self.buffers.states[self.current])
            binding.bind_output("logits", "cpu")
            e.readout_session.run_with_iobinding(binding)
            logits = binding.copy_outputs_to_cpu()[0]
        return self._live(logits.argmax(1))

    def keep(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64) if self.rows_in_slot is None else self.rows_in_slot[rows]
        if self.buffers.graph_ids is not None and 4 * len(rows) >= self.buffers.b:
            self.rows_in_slot = rows  # idle rows cost at most 3x the live ones: keep the shape and its graphs
            return
        # Compaction is rare (at most log2(B) times a batch): a round trip through the host is fine.
        with self.engine.device():
            state = np.ascontiguousarray(self.buffers.states[self.current].numpy()[rows])
            self.close()
            self.__init__(self.engine, np.ascontiguousarray(self.host_problem[rows]), state,
                          self.host_owned[rows], self.wrap)

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
