"""ONNX Runtime engines: `ort` (CPU provider) and `ort-cuda` (CUDA provider), one implementation.

Every tensor of a batch is an OrtValue on the engine's device, bound to the sessions by IO
binding: codes go up once per batch (1 byte per cell), the state stays on the device between
calls, and per call only the (B,) budgets go up and the (B,) counts come back; classes come back
once, when problems finish (1 byte per cell); on `ort`, a tape's tile windows, which live for one
call, run as one graph with plain arrays instead. On the CPU provider the device is host memory, so
`ort` and `ort-cuda` differ only in where buffers live, the layout (runtime/graph/: "lookup",
for rules whose step fits a table, and "cf" run fastest on CPUs, "cl" on GPUs) and CUDA graphs,
which `ort-cuda` captures for batch shapes that repeat (engine-owned buffer slots, so replays see
the same addresses).

`OrtEngine(step, device="cpu", layout="cl")` runs the CUDA engine's path on the CPU provider: how
its bookkeeping is tested on machines without a GPU (tests/test_engine_conformance.py).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading

import numpy as np

from .. import graph
from ..class_blocks import ClassTables
from ..errors import EngineUnavailable, InternalError
from ..layout import neighbour_table
from ..model_file import StepModel
from ..rule import STEP_TABLE_ENTRIES, Rule

K_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)            # CPU: a window's fixed cost spread over up to 128 steps
K_CHOICES_CUDA = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # a GPU call's launch cost is worth spreading
MAX_ELEMENTS = (1 << 31) - 1  # ONNX Runtime's kernels (CUDA's especially) index tensors with int32
# the largest tensor one call may make, in bytes: a step holds a few such at once (a grid step's
# widest holds taps x max(H, C_s) values a cell: a rule of hidden 64 on 10^6 cells, 2.3 GB)
TENSOR_BYTES = {"cpu": 1 << 29, "cuda": 1 << 32}
# a CPU batch's step should stay in cache: about this many bytes of activations (docs/engines.md)
STEP_CACHE_BYTES = 6 << 20
# the CPU provider's graph optimizations: extended, without ORT_ENABLE_ALL's NCHWc layout, which
# reorders the grid step's small convolutions (a multiplication window's K steps and finish run
# slower with it); export's check of the runtime forms runs them so too
CPU_OPTIMIZATION = "ORT_ENABLE_EXTENDED"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EngineUnavailable("engine 'ort' needs onnxruntime: pip install 'sead[cpu]' "
                                "(or 'sead[cuda]' for onnxruntime-gpu; never both)", quiet=True) from None
    if not os.environ.get("SEAD_DEBUG"):
        onnxruntime.set_default_logger_severity(3)  # errors only: its warnings are not the user's to act on
    return onnxruntime


LOOKUP_BATCH_CELLS = 1 << 17  # the lookup layout's step holds a few numbers a cell, whatever H and C_s


def cpu_batch_cells(rule: Rule, layout: str) -> int:
    """Cells per CPU batch. The lookup layout: LOOKUP_BATCH_CELLS, which bench/row_batches.py
    compares with 16,384 to 262,144 (row_batches_ort_cpu.json; docs/engines.md). Else the most,
    a power of two from 2^14 to 2^18, whose step keeps its activations in STEP_CACHE_BYTES, at
    about 4 H + 4 C floats a cell."""
    if layout == "lookup":
        return LOOKUP_BATCH_CELLS
    per_cell = 4 * (4 * rule.hidden + 4 * rule.state_channels)
    return 1 << max(14, min(18, (STEP_CACHE_BYTES // per_cell).bit_length() - 1))


class OrtEngine:
    """device "cpu" (engine `ort`) or "cuda" (`ort-cuda`). layout: "lookup", "cf" or "cl" (default:
    on the CPU lookup where Rule.step_table exists, else cf for a sign state; cl on CUDA and for
    symbol states). window_layout: the tile windows' (default: layout), one of those or
    "classes", class-coded blocks (runtime/class_blocks.py: for a rule with a step table, many
    steps a lookup; windows of the last round, which count changing steps, run lookup).
    workers: batches run side by side (default: one per core on the CPU, two on CUDA).
    cuda_graphs: give repeating tile window shapes engine-owned slots and capture CUDA graphs on
    them (default on for CUDA unless SEAD_ORT_CUDA_GRAPHS=0; on the CPU provider only the slots,
    for tests of their bookkeeping); graph_rows: batches of whole problems too.
    lookup_entries: the largest Rule.step_table the lookup layout builds on (by default 2^24
    entries, the most a float32 index holds exactly: addition's million-entry table, whose
    lookup form ran its rows and windows faster than cf on a CPU)."""

    GRAPH_SLOTS = 16            # batch shapes that own buffers (and graphs) for good

    def __init__(self, step: StepModel, device: str = "cpu", layout: str | None = None,
                 k_choices: tuple[int, ...] | None = None, workers: int | None = None,
                 cuda_graphs: bool | None = None, device_id: int = 0, window_layout: str | None = None,
                 graph_rows: bool = False, lookup_entries: int = STEP_TABLE_ENTRIES):
        ort = _onnxruntime()
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable("engine 'ort-cuda' needs onnxruntime-gpu and a CUDA GPU: pip install 'sead[cuda]' "
                                    f"(available providers here: {', '.join(ort.get_available_providers())})",
                                    quiet=True)
        self.ort, self.step, self.device, self.device_id = ort, step, device, device_id
        self.rule = Rule.from_step(step)
        # the lookup graphs' tables, built only where a lookup layout may be chosen (addition's take
        # 0.1 s and 2 MB; ort-cuda runs cl unless told)
        may_look_up = (device == "cpu" and layout is None) or bool({"lookup", "classes"} & {layout, window_layout})
        self.lookup = graph.lookup_tables(self.rule, lookup_entries) if may_look_up else None
        self._lookup_values: dict | None = None
        self._tables_read: dict[int, dict] = {}  # by id(session): the lookup tables its graph reads
        lookup = self.lookup is not None
        if layout == "classes":
            raise ValueError("the classes layout runs tile windows only (window_layout); rows run lookup")
        if window_layout == "classes" and not lookup:
            raise ValueError("the classes layout runs tape rules whose whole step fits Rule.step_table")
        # built only where asked for (addition's 7-step blocks take 0.7 s to find)
        self.classes = ClassTables(self.lookup) if window_layout == "classes" else None
        self.tables = {**(self.lookup.inputs if lookup else {}), **(self.classes.inputs if self.classes else {})}
        if device == "cpu":  # a rule whose whole step fits a small table runs as lookups (runtime/graph/lookup.py)
            self.layout = layout or ("lookup" if lookup else "cf" if self.rule.state_code == "sign" else "cl")
        else:
            self.layout = layout or "cl"
        # tile windows are few cells and many steps: the layout with fewer kernels per step may win
        self.window_layout = window_layout or self.layout
        if "cf" in (self.layout, self.window_layout) and self.rule.state_code != "sign":
            raise ValueError("the cf layout runs sign states; a symbol state runs cl")
        if "lookup" in (self.layout, self.window_layout) and not lookup:
            raise ValueError("the lookup layout runs tape rules whose whole step fits Rule.step_table")
        self.name = "ort" if device == "cpu" else "ort-cuda"
        self.k_choices = tuple(k_choices or (K_CHOICES if device == "cpu" else K_CHOICES_CUDA))
        if 1 not in self.k_choices or 2 not in self.k_choices:
            self.k_choices = tuple(sorted({1, 2, *self.k_choices}))  # a generations tape's last steps need them
        if device == "cpu":
            self.workers = workers or max(1, len(os.sched_getaffinity(0)))
            self.batch_cells = cpu_batch_cells(self.rule, self.layout)
        else:
            self.workers = workers or 2  # one batch computes while the other's counts cross the bus
            self.batch_cells = 1 << 20
        if cuda_graphs is None:
            cuda_graphs = device == "cuda" and os.environ.get("SEAD_ORT_CUDA_GRAPHS", "1") != "0"
        self.cuda_graphs = bool(cuda_graphs)
        # On an H200 a second pass over batches of whole problems ran 1.4x to 18x slower with graphs
        # than without in 8 of 9 cases (each new batch shape and K is a capture), and tile windows, one
        # shape for thousands of calls, ran a carry chain 1.9x faster with them
        # (bench/results/gpu_check_h200.json, conformance): graphs for windows, rows if asked
        self.graph_rows = graph_rows
        r = self.rule
        readout = r.read_in.shape[0] if r.read_in is not None else 1
        # the most float32 values any tensor of a call holds per cell (the cl gathers hold taps x H)
        gathered_state = r.taps * r.state_channels if r.state_code == "sign" else r.taps  # a symbol state: its classes
        self.elements_per_cell = max(r.taps * r.hidden, gathered_state, r.input_channels + r.state_channels,
                                     readout, r.classes, 1)
        self.max_elements = min(MAX_ELEMENTS, TENSOR_BYTES[device] // 4)
        self.max_row_cells = max(1, min(1 << 20, self.max_elements // self.elements_per_cell))
        self._sessions: dict = {}
        self._lock = threading.RLock()
        self._device_lock = threading.RLock()
        self._slots: dict[tuple, _Slot] = {}
        self._seen: dict[tuple, int] = {}
        channels_first = self.layout in ("cf", "lookup")
        packs = channels_first and r.rank == 1 and not r.ring
        self.session((self.layout, "advance", self.k_choices[0], "count", packs, r.ring and channels_first))  # fails here

    # -- sessions and buffers ------------------------------------------------------------------------
    def max_rows(self, row_cells: int) -> int:
        return self.max_elements // (self.elements_per_cell * max(row_cells, 1))

    def _graph(self, key: tuple):
        layout, key = key[0], key[1:]
        kind, r = key[0], self.rule
        if layout == "cf":
            if kind == "prepare":
                return graph.cf_prepare(r, packed=key[2], fresh=key[1], wrap=key[3])
            # the CPU provider runs the first layer's conv, sum and relu as one node (FusedConv, the
            # form sead export checks); on CUDA that form has not run
            fused = self.device == "cpu"
            if kind == "advance":
                return graph.cf_advance(r, key[1], packed=key[3], mode=key[2], wrap=key[4], fused=fused)
            if kind == "window":
                return graph.cf_window(r, key[1], mode=key[2], fresh=key[3], fused=fused)
            return graph.cf_finish(r, packed=key[1], readout=key[2])
        if layout == "lookup":
            t = self.lookup
            if kind == "prepare":
                return graph.lookup_prepare(t, packed=key[2], fresh=key[1])  # digits need no neighbours
            if kind == "advance":
                return graph.lookup_advance(t, key[1], packed=key[3], mode=key[2], wrap=key[4])
            if kind == "window":
                return graph.lookup_window(t, key[1], mode=key[2], fresh=key[3])
            return graph.lookup_finish(t, packed=key[1], readout=key[2])
        if layout == "classes":
            t, c = self.lookup, self.classes
            if kind == "prepare":
                return graph.classes_prepare(t, c, fresh=key[1])
            if kind == "advance":
                return graph.classes_advance(c, key[1])
            if kind == "window":
                return graph.classes_window(t, c, key[1], fresh=key[3])
            return graph.classes_finish(t, c, readout=key[2])
        if kind == "prepare":
            return graph.cl_prepare(r, fresh=key[1])
        if kind == "advance":
            return graph.cl_advance(r, key[1], mode=key[2])
        return graph.cl_finish(r, readout=key[2])

    def session(self, key: tuple, graphs: bool = False):
        """key: (layout, "prepare", fresh, packed, wrap) | (layout, "advance", k, mode, packed, wrap) |
        (layout, "finish", packed, readout); wrap: rings (on lookup, the cells a ring's rows wrap
        around each end: 1, or the block's steps). graphs: a session that captures CUDA graphs
        (advance only)."""
        with self._lock:
            full = key + (graphs,)
            if full not in self._sessions:
                opts = self.ort.SessionOptions()
                opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                if self.device == "cpu":  # (a slot's graph id is ignored by the CPU provider)
                    opts.graph_optimization_level = getattr(self.ort.GraphOptimizationLevel, CPU_OPTIMIZATION)
                    opts.intra_op_num_threads = 1  # the loop runs `workers` batches side by side instead
                    opts.inter_op_num_threads = 1
                    # each session's arena keeps the peak of every call it ran: with one session per
                    # K and mode they added up to 11 GB on a 1,000-digit product; without, memory goes
                    # back as tensors die, and short batches ran faster too (measured, not assumed)
                    opts.enable_cpu_mem_arena = False
                    providers = ["CPUExecutionProvider"]
                else:
                    # use_tf32=0: TF32 would round the rule's products differently from fp32
                    options = {"device_id": self.device_id, "cudnn_conv_algo_search": "HEURISTIC",
                               "do_copy_in_default_stream": True, "use_tf32": 0}
                    if graphs:
                        options["enable_cuda_graph"] = True
                    providers = [("CUDAExecutionProvider", options)]
                session = self.ort.InferenceSession(self._graph(key).SerializeToString(), opts, providers=providers)
                if self.device == "cuda" and session.get_providers()[:1] != ["CUDAExecutionProvider"]:
                    # ONNX Runtime falls back to the CPU provider, silently, when CUDA cannot start
                    raise EngineUnavailable(f"engine 'ort-cuda': ONNX Runtime could not start its CUDA provider "
                                            f"(the session runs on {', '.join(session.get_providers())})")
                self._sessions[full] = session
            return self._sessions[full]

    def alloc(self, shape: tuple[int, ...], dtype) -> object:
        return self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, self.device_id)

    def lookup_values(self) -> dict[str, object]:
        """The lookup and class tables on the device by input name, one of each for every batch
        and graph of the engine (on the CPU provider an OrtValue holds the array itself, no copy)."""
        with self._lock:
            if self._lookup_values is None:
                self._lookup_values = {name: self.ort.OrtValue.ortvalue_from_numpy(table, self.device, self.device_id)
                                       for name, table in self.tables.items()}
            return self._lookup_values

    def tables_read(self, session) -> dict[str, np.ndarray]:
        """The tables a session's graph takes as inputs, by name (looked up once a session: a
        window runs one per call)."""
        tables = self._tables_read.get(id(session))
        if tables is None:
            tables = {i.name: self.tables[i.name] for i in session.get_inputs() if i.name in self.tables}
            self._tables_read[id(session)] = tables
        return tables

    def device_lock(self):
        """While CUDA graphs are on, device work goes one thread at a time: ONNX Runtime captures
        a graph in global mode, where another thread's allocation or copy would invalidate it."""
        return self._device_lock if self.cuda_graphs and self.device == "cuda" else contextlib.nullcontext()

    def slot(self, key: tuple):
        """A free engine-owned slot for a batch shape seen before (its buffers, hence captured graphs,
        outlive the batch), or None."""
        if not self.cuda_graphs:
            return None
        with self._lock:
            slot = self._slots.get(key)
            if slot is None and self._seen.get(key) and len(self._slots) < self.GRAPH_SLOTS:
                slot = self._slots[key] = _Slot(len(self._slots))
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[key] = self._seen.get(key, 0) + 1
            if slot is not None and not slot.busy:
                slot.busy = True
                return slot
        return None

    def graphs_off(self, exc: Exception) -> None:
        if self.cuda_graphs:
            self.cuda_graphs = False
            print(f"sead: CUDA graphs unavailable ({type(exc).__name__}: {exc}); engine 'ort-cuda' continues "
                  "without them", file=sys.stderr, flush=True)

    @property
    def graph_shapes(self) -> list[tuple]:
        """Batch shapes that own a slot (and so replay CUDA graphs)."""
        return sorted(self._slots)

    def providers(self) -> dict[str, list[str]]:
        with self._lock:
            return {"/".join(map(str, key)): s.get_providers() for key, s in self._sessions.items()}

    # -- the protocol ---------------------------------------------------------------------------------
    def start(self, codes: np.ndarray, wrap: bool = False, generations: bool = False,
              state_codes: np.ndarray | None = None) -> "OrtBatch":
        return OrtBatch(self, np.ascontiguousarray(codes, np.uint8), state_codes, wrap,
                        "budget" if generations else "count", layout=self.layout)

    def _window_layout(self, mode: str) -> str:
        """The layout of tile windows in `mode`: class-coded blocks know the cells the last step
        changed (hot), not when each last changed (owned, count), which lookup runs."""
        return "lookup" if self.window_layout == "classes" and mode != "hot" else self.window_layout

    def run_windows(self, codes, state_codes, k, owned=None):
        mode = "hot" if owned is None else "owned"
        layout = self._window_layout(mode)
        if self.device == "cpu" and layout in ("cf", "lookup", "classes") and not self.cuda_graphs and self.rule.rank == 1:
            # in host memory, one run of one graph with plain arrays: no buffers or bindings for a
            # window that lives one call, and one run instead of three
            if codes[:, -1].any():
                raise InternalError("a window handed to the engine does not end in an empty cell")
            feeds = {"window_codes": np.ascontiguousarray(codes, np.uint8)}
            if state_codes is not None:
                feeds["window_state_codes"] = np.ascontiguousarray(state_codes, self.rule.code_dtype)
            if owned is not None:
                feeds["window_owned"] = np.ascontiguousarray(owned, np.float32)
            session = self.session((layout, "window", k, mode, state_codes is None))
            if layout in ("lookup", "classes"):
                feeds.update(self.tables_read(session))
            new_states, second = session.run(None, feeds)
            return new_states, (second if owned is None else int(second.max(initial=0)))
        batch = OrtBatch(self, np.ascontiguousarray(codes, np.uint8), state_codes, False, mode, owned=owned,
                         layout=layout)
        try:
            out = batch.advance(k)
            return batch.state_codes(), (batch.hot() if owned is None else int(out.max(initial=0)))
        finally:
            batch.close()

    def classify(self, codes, state_codes):
        batch = OrtBatch(self, np.ascontiguousarray(codes, np.uint8), state_codes, False, "count",
                         layout=self._window_layout("count"))
        try:
            return batch.classes()
        finally:
            batch.close()

    def close(self) -> None:
        with self._device_lock, self._lock:
            self._sessions.clear()
            self._slots.clear()
            self._lookup_values = None
            self._tables_read.clear()


class _Slot:
    """Buffers that outlive batches of one shape, so CUDA graphs captured on them replay."""

    def __init__(self, index: int):
        self.index, self.busy, self.tensors, self.bindings = index, False, {}, {}

    def graph_id(self, direction: int) -> str:
        return str(2 * self.index + direction + 1)  # 0 is ONNX Runtime's default id


class OrtBatch:
    """Whole problems (modes count and budget) or tile windows (hot, owned) on the device."""

    def __init__(self, engine: OrtEngine, codes: np.ndarray, state_codes: np.ndarray | None, wrap: bool,
                 mode: str, owned: np.ndarray | None = None, layout: str = "cl"):
        r = engine.rule
        self.engine, self.mode, self.wrap, self.layout = engine, mode, wrap, layout
        self.shape = codes.shape[1:]
        if not wrap and codes.size and codes.reshape(len(codes), -1)[:, -1].any():
            raise InternalError("a row handed to the engine does not end in an empty cell")
        self.b = len(codes)
        self.live = np.arange(self.b)
        self.row_cells = math.prod(self.shape)
        if self.b > engine.max_rows(self.row_cells):
            raise InternalError(f"a batch of {self.b} rows of {self.row_cells} cells passes the engine's element limit")
        # cf packs rows end to end when it can (whole problems of a fixed-point task, or windows)
        channels_first = layout in ("cf", "lookup", "classes")
        if layout == "classes" and (mode != "hot" or wrap or r.rank != 1):
            raise InternalError("the classes layout runs tile windows, mode hot, only")
        self.packed = channels_first and r.rank == 1 and not wrap and mode != "budget"
        self.cf_wrap = wrap and channels_first  # cl wraps through its neighbour table
        if wrap and layout == "lookup":  # a ring's rows wrap as many cells as a block reads, if that long
            blocks = engine.lookup.block_steps
            self.cf_wrap = blocks if self.row_cells >= blocks else 1
        self.codes = codes
        if channels_first:
            self.cells_shape = (1, self.b * self.row_cells) if self.packed else codes.shape
        else:
            self.cells_shape = (self.b, self.row_cells)
        key = (layout, self.mode, self.cells_shape, wrap, state_codes is None)
        wants_slot = mode == "hot" or (engine.graph_rows and mode in ("count", "budget"))
        self.slot = engine.slot(key) if wants_slot else None
        self.current = 0
        self.finished: dict | None = None  # the last finish's outputs, until the state moves
        with engine.device_lock():
            self._prepare(state_codes, owned)

    # -- buffers ------------------------------------------------------------------------------------
    def _tensor(self, name: str, shape: tuple, dtype) -> object:
        """The OrtValue called `name`: the slot's if it has one of this shape, else a new one."""
        tensors = self.slot.tensors if self.slot is not None else self.tensors
        value = tensors.get(name)
        if value is None or tuple(value.shape()) != tuple(shape):
            value = tensors[name] = self.engine.alloc(shape, dtype)
        return value

    def _prepare(self, state_codes, owned) -> None:
        e, r = self.engine, self.engine.rule
        self.tensors: dict = {}
        self._bindings: dict = {}
        cells = self.cells_shape
        codes = self._tensor("codes", cells, np.uint8)
        codes.update_inplace(self.codes.reshape(cells))
        inputs = {"codes": codes}
        if self.layout == "cl":
            table = neighbour_table(tuple(self.shape), self.wrap)
            fresh_buffer = "neighbours" not in (self.slot.tensors if self.slot is not None else self.tensors)
            inputs["neighbours"] = self._tensor("neighbours", table.shape, np.int64)
            if fresh_buffer or self.slot is None:  # a slot's table is its shape's: uploaded once
                inputs["neighbours"].update_inplace(np.ascontiguousarray(table))
        if state_codes is not None:
            inputs["state_codes"] = self._tensor("state_codes_in", cells, r.code_dtype)
            inputs["state_codes"].update_inplace(np.ascontiguousarray(state_codes, r.code_dtype).reshape(cells))
        channels = lambda c: (cells[0], c, *cells[1:])
        if self.layout == "cf":
            shapes = {"features": (channels(r.hidden), np.float32), "threshold": (channels(r.state_channels), np.float32),
                      "state": (channels(r.state_channels), np.float32)}
        elif self.layout == "lookup":
            shapes = {"state": (channels(1), np.float32)}
        elif self.layout == "classes":
            shapes = {"state": (channels(e.classes.width), np.float32)}
        elif r.state_code == "sign":
            shapes = {"features": (cells + (r.hidden,), np.float32), "mask": (cells + (1,), np.float32),
                      "minus_mask": (cells + (1,), np.float32), "state": (cells + (r.state_channels,), np.float32)}
        else:
            shapes = {"features": (cells + (r.hidden,), np.float32), "is_real": (cells, np.bool_),
                      "state": (cells, np.int64)}
        outputs = {name: self._tensor(name if name != "state" else "state0", shape, dtype)
                   for name, (shape, dtype) in shapes.items()}
        self.codes_value = codes
        self._run(e.session((self.layout, "prepare", state_codes is None, self.packed, self.cf_wrap)), inputs, outputs)
        self.inputs = {k: v for k, v in outputs.items() if k != "state"}
        if self.layout == "cl":
            self.inputs["neighbours"] = inputs["neighbours"]
        if self.layout in ("lookup", "classes"):
            self.inputs.update(e.lookup_values())  # each advance graph binds the tables it reads
        if self.packed and self.mode != "hot":
            self.inputs["rows"] = self._tensor("rows", (2,), np.int64)
            self.inputs["rows"].update_inplace(np.array([self.b, self.row_cells], np.int64))
        state_shape, state_dtype = shapes["state"]
        self.states = [outputs["state"], self._tensor("state1", state_shape, state_dtype)]
        rows = (self.b,)
        if self.mode == "budget":
            self.inputs["budget"] = self._tensor("budget", rows, np.float32)
        if self.mode == "owned":
            mask = np.ascontiguousarray(owned, np.float32)
            shape = channels(1) if self.layout in ("cf", "lookup") else cells
            self.inputs["owned"] = self._tensor("owned", shape, np.float32)
            self.inputs["owned"].update_inplace(mask.reshape(shape))
        if self.mode == "hot":
            self.result = self._tensor("hot", cells, np.bool_)
        else:
            self.result = self._tensor("last", rows, np.float32)

    def _run(self, session, inputs: dict, outputs: dict, run_options=None) -> None:
        """Run with IO binding; a binding is made once per session and set of buffers and reused
        (the buffers outlive the calls: the state ping-pongs between two)."""
        key = (id(session),) + tuple((n, id(v)) for n, v in inputs.items()) + tuple((n, id(v)) for n, v in outputs.items())
        binding = self._bindings.get(key)
        if binding is None:
            binding = session.io_binding()
            declared = {i.name for i in session.get_inputs()}
            for name, value in inputs.items():
                if name in declared:
                    binding.bind_ortvalue_input(name, value)
            for name, value in outputs.items():
                binding.bind_ortvalue_output(name, value)
            self._bindings[key] = binding
        session.run_with_iobinding(binding, run_options)

    # -- the protocol ---------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return len(self.live)

    def advance(self, k: int, budget: np.ndarray | None = None) -> np.ndarray:
        e = self.engine
        with e.device_lock():
            if self.mode == "budget":
                full = np.zeros(self.b, np.float32)  # rows that left the batch hold their state
                full[self.live] = budget
                self.inputs["budget"].update_inplace(full)
            src, dst = self.states[self.current], self.states[1 - self.current]
            inputs = dict(self.inputs, state=src)
            outputs = {"state_out": dst, ("hot" if self.mode == "hot" else "last"): self.result}
            mode = self.mode
            if mode == "budget" and self.layout == "lookup" and budget.min(initial=k) >= k:
                mode = "count"  # every live row runs all k steps: the graph that runs blocks (idle rows run on)
            key = (self.layout, "advance", k, mode, self.packed, self.cf_wrap)
            graphed = self.slot is not None and e.cuda_graphs
            if graphed:
                try:
                    options = e.ort.RunOptions()
                    options.add_run_config_entry("gpu_graph_id", self.slot.graph_id(self.current))
                    self._run(e.session(key, graphs=True), inputs, outputs, options)
                except Exception as exc:  # a failed capture or replay leaves the inputs intact: rerun plainly
                    e.graphs_off(exc)
                    graphed = False
            if not graphed:
                self._run(e.session(key), inputs, outputs)
            self.current ^= 1
            self.finished = None
            if self.mode == "hot":
                return np.zeros(0, np.int64)
            return self.result.numpy()[self.live].astype(np.int64)

    def hot(self) -> np.ndarray:
        with self.engine.device_lock():
            return self.result.numpy().reshape(self.b, *self.shape)

    def _finish(self, readout: bool) -> dict[str, np.ndarray]:
        """State codes (and with readout, classes) of every row. Retiring rows reads the classes,
        and moving the rest to a smaller batch their state codes: one call serves both."""
        if self.finished is not None and (not readout or "classes" in self.finished):
            return self.finished
        e, r = self.engine, self.engine.rule
        with e.device_lock():
            outputs = {"state_codes": self._tensor("state_codes", self.cells_shape, r.code_dtype)}
            if readout:
                outputs["classes"] = self._tensor("classes", self.cells_shape, np.uint8)
            self._run(e.session((self.layout, "finish", self.packed, readout)),
                      {"codes": self.codes_value, "state": self.states[self.current]}, outputs)
            shape = (self.b, *self.shape)
            self.finished = {name: value.numpy().reshape(shape) for name, value in outputs.items()}
            return self.finished

    def state_codes(self) -> np.ndarray:
        return self._finish(readout=False)["state_codes"][self.live]

    def classes(self) -> np.ndarray:
        return self._finish(readout=True)["classes"][self.live]

    def keep(self, rows: np.ndarray) -> None:
        self.live = self.live[np.asarray(rows, np.int64)]  # the rest run on, idle

    def close(self) -> None:
        """Hand a slot back to the engine; private buffers go with the batch."""
        if self.slot is not None:
            with self.engine._lock:
                self.slot.busy = False
            self.slot = None
