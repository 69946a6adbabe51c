"""The graphs every engine runs (runtime/graph/), checked without a GPU: built for every shipped
model and every untrained test rule, each layout holds only operators that ONNX Runtime's CUDA
provider and TensorRT's parser both take, with constant shape parameters, so that no node lands on
the CPU (which would also forbid CUDA graphs); and a step graph that is not the exported pattern
is refused before any graph is built from it."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ort = pytest.importorskip("onnxruntime")

from sead.runtime import graph as G  # noqa: E402
from sead.runtime.class_blocks import ClassTables  # noqa: E402
from sead.runtime.graph.lookup import _lookup_v  # noqa: E402
from sead.runtime.errors import ModelFileError  # noqa: E402
from sead.runtime.model_file import default_model_path, load_step_model  # noqa: E402
from sead.runtime.rule import Rule  # noqa: E402

GPU_OPS = {"Abs", "Add", "And", "ArgMax", "Cast", "Concat", "Conv", "Equal", "Floor", "Gather", "Greater", "MatMul",
           "Mul", "Neg", "Not", "ReduceMax", "ReduceSum", "Relu", "Reshape", "Slice", "Squeeze", "Sub", "Unsqueeze",
           "Where", "Identity", "Gemm", "Transpose", "Shape", "ConstantOfShape", "Pad",
           "GatherElements",  # onnxruntime: providers/cuda/tensor/gather_elements.cc; onnx-tensorrt: docs/operators.md
           "Max",  # onnxruntime: providers/cuda/math/variadic_elementwise_ops.cc; onnx-tensorrt: docs/operators.md
           "Expand"}  # onnxruntime: providers/cuda/tensor/expand.cc; onnx-tensorrt: docs/operators.md
SHAPE_OPS = {"Shape", "ConstantOfShape"}  # read shapes on the host: allowed only outside advance graphs
CONSTANT_INPUTS = {"Slice": (1, 2, 3, 4), "ReduceMax": (1,), "ReduceSum": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
                   "Reshape": (1,)}
TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL, onnx.TensorProto.INT64, onnx.TensorProto.INT32,
         onnx.TensorProto.UINT8, onnx.TensorProto.UINT16}
SHIPPED = ["addition", "parity", "rule110", "multiplication"]


def _rules(tiny_onnx):
    rules = {name: Rule.from_step(load_step_model(default_model_path(name))) for name in SHIPPED}
    rules.update({f"tiny {name}": Rule.from_step(load_step_model(path)) for name, path in tiny_onnx.items()})
    return rules


def _graphs(rule):
    yield "cl prepare", G.cl_prepare(rule, True)
    yield "cl prepare from codes", G.cl_prepare(rule, False)
    yield "cl finish", G.cl_finish(rule)
    for mode in ("count", "budget", "hot", "owned"):
        for k in (1, 8):
            yield f"cl advance {mode} K={k}", G.cl_advance(rule, k, mode)
    if rule.state_code == "sign":
        for wrap in {False, rule.ring}:
            yield "cf prepare", G.cf_prepare(rule, not wrap and rule.rank == 1, True, wrap)
            yield f"cf advance K=4 wrap={wrap}", G.cf_advance(rule, 4, False, "count", wrap)
        yield "cf finish", G.cf_finish(rule, False)
    tables = G.lookup_tables(rule)
    if tables is not None:
        for wrap in {False, rule.ring}:
            yield "lookup prepare", G.lookup_prepare(tables, not wrap, False)
            for mode in ("count", "budget", "hot", "owned"):
                if mode != "budget" or not rule.ring or wrap:
                    yield f"lookup advance {mode} wrap={wrap}", G.lookup_advance(tables, 4, False, mode, wrap)
        for mode in ("count", "hot", "owned"):  # packed rows: blocks of steps where the rule has them
            yield f"lookup advance packed {mode}", G.lookup_advance(tables, 8, True, mode)
        if rule.ring:  # rings long enough for blocks
            yield "lookup advance count, ring blocks", G.lookup_advance(tables, 8, False, "count", tables.block_steps)
        yield "lookup finish", G.lookup_finish(tables, False)
        for mode in ("hot", "owned"):
            yield f"lookup window {mode}", G.lookup_window(tables, 4, mode, fresh=False)
        if rule.rank == 1 and not rule.ring:
            classes = _class_tables(tables)
            yield "classes prepare", G.classes_prepare(tables, classes, fresh=False)
            yield "classes advance", G.classes_advance(classes, 2 * classes.block_steps + 1)
            yield "classes advance, index convolved", G.classes_advance(classes, 3, expand=False)
            yield "classes finish", G.classes_finish(tables, classes)
            yield "classes window", G.classes_window(tables, classes, 4, fresh=False)


_CLASS_TABLES = {}


def _class_tables(tables):
    """ClassTables of a rule's lookup tables, built once per rule in this module."""
    key = tables.step.tobytes()
    if key not in _CLASS_TABLES:
        _CLASS_TABLES[key] = ClassTables(tables)
    return _CLASS_TABLES[key]


def test_every_graph_uses_portable_operators_and_constant_shape_parameters(tiny_onnx):
    for name, rule in _rules(tiny_onnx).items():
        for label, model in _graphs(rule):
            where = f"{name}: {label}"
            onnx.checker.check_model(model, full_check=True)
            initializers = {t.name for t in model.graph.initializer}
            for node in model.graph.node:
                assert node.op_type in GPU_OPS, f"{where}: {node.op_type} is not in the portable operator set"
                if "advance" in label:
                    assert node.op_type not in SHAPE_OPS, f"{where}: {node.op_type} would run on the host"
                for i in CONSTANT_INPUTS.get(node.op_type, ()):
                    if i < len(node.input) and node.input[i] and (node.op_type != "Reshape" or "advance" in label):
                        given = node.input[i] == "rows" and "packed" in label  # packed rows' (B, L), an input
                        assert node.input[i] in initializers or given, f"{where}: {node.op_type} input {i} is computed"
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
            for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
                assert value.type.tensor_type.elem_type in TYPES, f"{where}: {value.name} has an unexpected type"


def test_onnx_runtime_keeps_advance_graphs_in_the_portable_set(tiny_onnx, tmp_path):
    """After ONNX Runtime's provider-neutral rewrites the advance graphs still hold only the
    portable operators, none that reads a shape (the proxy, without a GPU, for 'every node on the
    CUDA provider', which CUDA graphs need)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for name, rule in list(_rules(tiny_onnx).items())[:4]:
        model = G.cl_advance(rule, 4, "count")
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        ops = {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}
        assert ops <= GPU_OPS - SHAPE_OPS, f"{name}: ONNX Runtime rewrote into {ops - GPU_OPS}"


def _doctor(tmp_path, change):
    proto = onnx.load(str(default_model_path("addition")))
    change(proto)
    path = tmp_path / "doctored.onnx"
    onnx.save(proto, str(path))
    return load_step_model(path)


def _set_constant(name, value):
    def change(proto):
        init = next(t for t in proto.graph.initializer if t.name == name)
        init.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return change


def _drop_mask(proto):
    mul = next(n for n in proto.graph.node if n.op_type == "Mul")
    mul.input[1] = mul.input[0]  # next_state = sign * sign: no longer masked


@pytest.mark.parametrize("change, words", [
    (_set_constant("zero", 0.5), "Where(pre > 0, 1, -1)"),
    (_set_constant("minus_one", 0.0), "Where(pre > 0, 1, -1)"),
    (_drop_mask, "'next_state' should come from Mul"),
])
def test_a_step_that_is_not_the_exported_pattern_is_refused(tmp_path, change, words):
    step = _doctor(tmp_path, change)
    with pytest.raises(ModelFileError) as info:
        Rule.from_step(step)
    assert "not a sead step graph" in str(info.value) or words in str(info.value)


def test_non_finite_weights_are_refused(tmp_path):
    def poison(proto):
        init = next(t for t in proto.graph.initializer if t.name == "rule_out.bias")
        values = numpy_helper.to_array(init).copy()
        values[0] = np.nan
        init.CopyFrom(numpy_helper.from_array(values, init.name))
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        Rule.from_step(_doctor(tmp_path, poison))


def test_a_model_with_non_finite_weights_never_answers_even_without_its_self_test(tmp_path):
    from sead.runtime import Runtime

    def poison(proto):
        init = next(t for t in proto.graph.initializer if t.name == "rule_in.weight")
        values = numpy_helper.to_array(init).copy()
        values.flat[3] = np.inf
        init.CopyFrom(numpy_helper.from_array(values, init.name))
    step = _doctor(tmp_path, poison)
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        Runtime(step.path, "ort", self_test=False)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _reachable_states(tables, codes, rng):
    """State codes for cells of these codes, each drawn from the states a run can reach there
    (the lookup layout's digits hold no others; empty cells' are never read)."""
    v = _lookup_v(tables.rule)
    states = np.zeros(codes.shape, tables.rule.code_dtype)
    for code in np.unique(codes[codes > 0]):
        values = tables.pairs[tables.pairs // v == code] % v  # state values: 0 the zero state, else 1 + code
        cells = codes == code
        drawn = values[rng.integers(0, len(values), cells.sum())]
        states[cells] = np.where(drawn == 0, tables.rule.zero_code, drawn - 1)
    return states


def test_the_lookup_form_runs_windows_as_the_cf_forms_do(tiny_onnx):
    """The lookup form's windows (graph.lookup_window: blocks of steps where the rule has them,
    then single steps) give the states, hot cells and owned counts of the cf forms (fused as on
    `ort`, and plain), from reachable states and from the first step, on every rule small enough
    to have a table: the shipped addition, parity and Rule 110 at least, the last two in blocks."""
    rng = np.random.default_rng(4)
    tables = {name: G.lookup_tables(r) for name, r in _rules(tiny_onnx).items() if r.step_table() is not None}
    assert {"addition", "parity", "rule110"} <= set(tables)
    assert (tables["parity"].block_steps, tables["rule110"].block_steps) == (6, 3)
    for name, t in tables.items():
        rule = t.rule
        codes = rng.integers(1, rule.input_channels, (3, 57)).astype(np.uint8)
        codes[rng.random(codes.shape) < 0.05] = 0
        codes[:, -1] = 0
        states = _reachable_states(t, codes, rng)
        owned = (rng.random(codes.shape) < 0.7).astype(np.float32)
        for k in (1, 2, 5, 7, 13):
            for mode in ("hot", "owned"):
                for fresh in (True, False):
                    feeds = {"window_codes": codes}
                    if not fresh:
                        feeds["window_state_codes"] = states
                    if mode == "owned":
                        feeds["window_owned"] = owned
                    want = _session(G.cf_window(rule, k, mode, fresh, fused=True)).run(None, feeds)
                    plain = _session(G.cf_window(rule, k, mode, fresh)).run(None, feeds)
                    session = _session(G.lookup_window(t, k, mode, fresh))
                    got = session.run(None, dict(feeds, **{i.name: t.inputs[i.name] for i in session.get_inputs()
                                                           if i.name in t.inputs}))
                    where = f"{name} K={k} {mode} fresh={fresh}"
                    for a, b, c in zip(got, want, plain):
                        assert np.array_equal(a, b) and np.array_equal(b, c), where


def test_rings_run_blocks_as_they_run_single_steps():
    """Rings as short as a block's reach and longer give the same states and last changing steps
    in blocks (wrap = block_steps) as one step at a time, from the first step and from reachable
    states, for K that end inside and after a block: Rule 110's blocks read both sides, parity's
    the left only (a ring of parity digits: the graphs run any rule's digits on a ring)."""
    rng = np.random.default_rng(6)
    for name in ("rule110", "parity"):
        t = G.lookup_tables(Rule.from_step(load_step_model(default_model_path(name))))
        m = t.block_steps
        for length in (m, m + 1, 2 * m + 1, 20):
            codes = rng.integers(1, t.rule.input_channels, (5, length)).astype(np.uint8)
            for fresh in (True, False):
                prepare = {"codes": codes} if fresh else {"codes": codes, "state_codes": _reachable_states(t, codes, rng)}
                state = _session(G.lookup_prepare(t, False, fresh)).run(None, prepare)[0]
                for k in (1, m, m + 1, 2 * m + 2):
                    out = {}
                    for wrap in (1, m):
                        session = _session(G.lookup_advance(t, k, False, "count", wrap))
                        feeds = {"state": state, **{i.name: t.inputs[i.name] for i in session.get_inputs() if i.name in t.inputs}}
                        out[wrap] = session.run(None, feeds)
                    where = f"{name} length {length} K={k} fresh={fresh}"
                    assert all(np.array_equal(a, b) for a, b in zip(out[1], out[m])), where


def test_block_tables_are_the_step_table_run_block_steps_times():
    """Each entry of a block table of m steps (every m from 2 to block_steps) is the centre of the
    digits it reads after m steps of the step table, and its block_last the last of those steps
    that changed it (NEVER if none); and no digit outside the reachable ones comes out of the step
    table. Parity's step never reads its right neighbour, so its blocks read left only: a random
    digit stands there, and must not matter."""
    rng = np.random.default_rng(8)
    for name, sides, longest in (("parity", (1, 0), 6), ("rule110", (1, 1), 3)):
        t = G.lookup_tables(Rule.from_step(load_step_model(default_model_path(name))))
        n = t.n
        assert (t.sides, t.block_steps) == (sides, longest), name
        assert {k for k in t.inputs if k.startswith("block")} == \
            {f"block_{kind}_{m}" for kind in ("table", "last") for m in range(2, longest + 1)}, name
        step = t.inputs["table"].reshape(-1).astype(np.int64)
        assert step.max() < n and step.reshape(n, n, n)[:, 0, :].max() == 0  # closed; an empty cell stays empty
        for m in range(2, longest + 1):
            left, right = t.reach(m)
            width = left + right + 1
            index = rng.integers(0, n ** width, 20_000)
            cells = [(index // n ** (width - 1 - i)) % n for i in range(width)]
            last = np.full(len(index), G.NEVER)
            for j in range(1, m + 1):
                centre = cells[left - (j - 1) * sides[0]]
                padded = ([rng.integers(0, n, len(index))] if not sides[0] else []) + cells + \
                    ([rng.integers(0, n, len(index))] if not sides[1] else [])
                cells = [step[(padded[i] * n + padded[i + 1]) * n + padded[i + 2]] for i in range(len(padded) - 2)]
                last[cells[left - j * sides[0]] != centre] = j
            where = f"{name} m={m}"
            assert len(cells) == 1, where
            assert np.array_equal(t.inputs[f"block_table_{m}"].reshape(-1)[index], cells[0]), where
            assert np.array_equal(t.inputs[f"block_last_{m}"].reshape(-1)[index], last), where


def test_class_tables_are_the_step_table_run_block_steps_times():
    """Every class-coded block (every length 1..block_steps) indexed by the class channels of
    random digits, as its convolution reads them, gives the channels of the centre after that
    many steps of the step table, and whether the last of them changed it. The digits are drawn
    from every digit, so a class map that merged two digits a block tells apart fails here."""
    rng = np.random.default_rng(9)
    for name, longest in (("addition", 7), ("parity", 9), ("rule110", 2)):
        t = G.lookup_tables(Rule.from_step(load_step_model(default_model_path(name))))
        c, n = _class_tables(t), t.n
        assert c.block_steps == longest, name
        channels = np.stack(c.channels)  # (C, n)
        step = t.step.reshape(n, n, n)
        for m in range(1, longest + 1):
            cells = [rng.integers(0, n, 20_000) for _ in range(2 * m + 1)]
            weight, left = c.weights[m][0], c.pads[m][0]
            index = sum(weight[ch, i] * channels[ch][cells[m - left + i]]
                        for ch in range(len(c.channels)) for i in range(weight.shape[1]))
            for _ in range(m):
                before = cells[len(cells) // 2]
                cells = [step[a, b, d] for a, b, d in zip(cells, cells[1:], cells[2:])]
            got = c.inputs[f"class_table_{m}"][0][:, index.astype(np.int64)]
            where = f"{name} m={m}"
            assert np.array_equal(got[:-1], channels[:, cells[0]]), where
            assert np.array_equal(got[-1], cells[0] != before), where


def test_class_blocks_run_windows_as_the_lookup_form_does():
    """Class-coded windows (graph.classes_window: K steps in blocks of every length) give the
    lookup form's state codes and hot cells, from random codes, from reachable states and from
    the first step, at K that end inside a block and after it; the engine's three-graph form
    (prepare, advance, finish: how `ort-cuda` runs windows) gives the same, with the index
    expanded to every channel or convolved into each."""
    rng = np.random.default_rng(5)
    for name in ("addition", "parity", "rule110"):
        t = G.lookup_tables(Rule.from_step(load_step_model(default_model_path(name))))
        c = _class_tables(t)
        m = c.block_steps
        codes = rng.integers(1, t.rule.input_channels, (3, 70)).astype(np.uint8)
        codes[rng.random(codes.shape) < 0.05] = 0
        codes[:, -1] = 0
        states = _reachable_states(t, codes, rng)
        tables = {**t.inputs, **c.inputs}
        for k in (1, 2, m - 1, m, m + 1, 2 * m + 3, 64):
            for fresh in (True, False):
                feeds = {"window_codes": codes} if fresh else {"window_codes": codes, "window_state_codes": states}
                runs = []
                for model in (G.lookup_window(t, k, "hot", fresh), G.classes_window(t, c, k, fresh)):
                    session = _session(model)
                    runs.append(session.run(None, dict(feeds, **{i.name: tables[i.name] for i in session.get_inputs()
                                                                 if i.name in tables})))
                packed = {"codes": codes.reshape(1, -1)} if fresh else \
                    {"codes": codes.reshape(1, -1), "state_codes": states.reshape(1, -1)}
                for expand in (True, False):
                    state = _session(G.classes_prepare(t, c, fresh)).run(None, packed)[0]
                    advance = _session(G.classes_advance(c, k, expand))
                    state, hot = advance.run(None, {"state": state, **{i.name: tables[i.name]
                                                                       for i in advance.get_inputs() if i.name in tables}})
                    state_codes = _session(G.classes_finish(t, c, readout=False)).run(
                        None, {"codes": packed["codes"], "state": state})[0]
                    runs.append([state_codes.reshape(codes.shape), hot.reshape(codes.shape)])
                where = f"{name} K={k} fresh={fresh}"
                for got in runs[1:]:
                    assert all(np.array_equal(a, b) for a, b in zip(got, runs[0])), where


def test_no_step_table_where_a_decision_could_round_either_way():
    """A rule whose next state sits at a tie (pre = 0 exactly) has no table: float32 could decide
    it either way. Grids have none, and no rule has one past max_entries (addition's holds a
    million entries)."""
    import dataclasses

    parity = Rule.from_step(load_step_model(default_model_path("parity")))
    assert parity.step_table() is not None
    tied = dataclasses.replace(parity, w_out=np.zeros_like(parity.w_out), b_out=np.zeros_like(parity.b_out))
    assert tied.step_table() is None
    assert Rule.from_step(load_step_model(default_model_path("multiplication"))).step_table() is None
    addition = Rule.from_step(load_step_model(default_model_path("addition")))
    assert addition.step_table() is not None and addition.step_table(max_entries=999_999) is None
