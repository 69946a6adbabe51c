"""ONNX Runtime engines: `ort` (CPU provider) and `ort-cuda` (CUDA provider).

An engine loads the derived graphs once; `start(problem)` returns a Batch that owns its buffers,
so one engine serves many threads (InferenceSession.run is thread-safe; bindings are per batch).
ONNX Runtime engines offer several unroll depths K (`k_choices`): sessions are cheap to make, so
the loop can start with few steps per call and go deeper while problems keep running.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import EngineUnavailable
from ..graph import advance_graph, packed_advance_graph, readout_graph
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
    graph.packed_advance_graph): one large convolution instead of B small ones."""

    name = "ort"

    def __init__(self, step: StepModel, k_choices: tuple[int, ...] = K_CHOICES, cores: int | None = None):
        self.ort = _onnxruntime()
        self.step, self.k_choices = step, tuple(k_choices)
        meta = step.metadata
        self.can_pack = meta.boundary == "zeros" and meta.convergence == "fixed_point"
        # Measured on 2 cores: one intra-op thread per session beat two for many short problems,
        # so the runtime solves batches side by side, one core each; a lone batch (one long tape)
        # gets every core.
        self.cores = cores or max(1, len(os.sched_getaffinity(0)))
        self.parallel_batches = self.cores
        self._sessions: dict = {}
        self._lock = threading.Lock()
        self.readout_session(1)
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

    def readout_session(self, threads: int):
        return self._cached(("readout", threads), lambda: readout_graph(self.step), threads)

    def start(self, problem: np.ndarray, exclusive: bool = False) -> "OrtCpuBatch":
        """exclusive: no other batch runs beside this one, so it may use every core."""
        return OrtCpuBatch(self, problem, self.cores if exclusive else 1)


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
        flags = (1, b, 1) if self.packed else (b, 1, 1)
        self.budget = np.zeros(flags, np.float32)
        self.changed = np.zeros(flags, np.float32)
        ov = e.ort.OrtValue.ortvalue_from_numpy
        self.fixed = {"problem": ov(self.problem)}
        if self.packed:  # the packed graph needs no budget: the loop clips its counts
            self.fixed["rows_shape"] = ov(np.array([c_s, b, length], np.int64))
        else:
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
        self.budget.reshape(-1)[:] = budget
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
        session = self.engine.readout_session(self.threads)
        logits = session.run(["logits"], {"problem": self.problem, "state": self.state})[0]
        if self.packed:
            return logits.reshape(-1, self.b, self.length).argmax(0)
        return logits.argmax(1)

    def keep(self, rows: np.ndarray) -> None:
        """Drop every problem not in `rows` (finished ones) from the batch."""
        self._set(np.ascontiguousarray(self.rows_problem[rows]), np.ascontiguousarray(self._rows_state()[rows]))


class OrtCudaEngine:
    """CUDA provider with device-resident buffers: the problem is uploaded once, the state
    ping-pongs between two CUDA OrtValues, and only the (B,) step counts come back per call.
    cuDNN's algorithm search is set to HEURISTIC (EXHAUSTIVE re-benchmarks every new shape)."""

    name = "ort-cuda"

    def __init__(self, step: StepModel, k_choices: tuple[int, ...] = K_CHOICES, device_id: int = 0):
        ort = _onnxruntime()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable("engine 'ort-cuda' needs onnxruntime-gpu and a CUDA GPU: pip install 'sead[cuda]' "
                                    f"(available providers here: {', '.join(ort.get_available_providers())})")
        self.ort, self.step, self.k_choices, self.device_id = ort, step, tuple(k_choices), device_id
        # use_tf32=0: TF32 convolutions would round the rule's pre-activations differently from fp32
        self.provider = ("CUDAExecutionProvider", {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC",
                                                   "do_copy_in_default_stream": True, "use_tf32": 0})
        self._sessions: dict = {}
        self._lock = threading.Lock()
        self.readout_session = self._session(readout_graph(step).SerializeToString())
        self.advance_session(self.k_choices[0])

    def _session(self, graph: bytes):
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            return self.ort.InferenceSession(graph, opts, providers=[self.provider])
        except Exception:  # an onnxruntime-gpu too old to know use_tf32: it predates TF32 by default
            name, options = self.provider
            self.provider = (name, {k: v for k, v in options.items() if k != "use_tf32"})
            return self.ort.InferenceSession(graph, opts, providers=[self.provider])

    def advance_session(self, k: int):
        with self._lock:
            if k not in self._sessions:
                self._sessions[k] = self._session(advance_graph(self.step, k).SerializeToString())
            return self._sessions[k]

    def start(self, problem: np.ndarray, exclusive: bool = False) -> "OrtCudaBatch":
        return OrtCudaBatch(self, np.ascontiguousarray(problem, np.float32))


class OrtCudaBatch:
    def __init__(self, engine: OrtCudaEngine, problem: np.ndarray, state: np.ndarray | None = None):
        e = self.engine = engine
        ov = e.ort.OrtValue
        b, _, length = problem.shape
        self.host_problem = problem
        shape = (b, e.step.metadata.state_channels, length)
        self.problem = ov.ortvalue_from_numpy(problem, "cuda", e.device_id)
        first = state if state is not None else np.zeros(shape, np.float32)
        self.values = [ov.ortvalue_from_numpy(first, "cuda", e.device_id),
                       ov.ortvalue_from_shape_and_type(shape, np.float32, "cuda", e.device_id)]
        self.budget = np.zeros((b, 1, 1), np.float32)
        self.bindings: dict = {}

    @property
    def size(self) -> int:
        return self.host_problem.shape[0]

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        if k not in self.bindings:
            session = self.engine.advance_session(k)
            binding = session.io_binding()
            binding.bind_ortvalue_input("problem", self.problem)
            self.bindings[k] = (session, binding)
        session, binding = self.bindings[k]
        self.budget[:, 0, 0] = budget
        src, dst = self.values
        binding.bind_cpu_input("budget", self.budget)
        binding.bind_ortvalue_input("state", src)
        binding.bind_ortvalue_output("state_out", dst)
        binding.bind_output("changed", "cpu")  # B floats back; the state stays on the device
        session.run_with_iobinding(binding)
        changed = binding.copy_outputs_to_cpu()[1]
        self.values = [dst, src]
        return changed[:, 0, 0].astype(np.int64)

    def symbols(self) -> np.ndarray:
        e = self.engine
        binding = e.readout_session.io_binding()
        binding.bind_ortvalue_input("problem", self.problem)
        binding.bind_ortvalue_input("state", self.values[0])
        binding.bind_output("logits", "cpu")
        e.readout_session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].argmax(1)

    def keep(self, rows: np.ndarray) -> None:
        # Compaction is rare (at most log2(B) times a batch): a round trip through the host is fine.
        state = self.values[0].numpy()[rows]
        self.__init__(self.engine, np.ascontiguousarray(self.host_problem[rows]), np.ascontiguousarray(state))
