"""`sead export`: a valid one-step graph, equal to the PyTorch step, with its metadata."""
import collections

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from sead.export.exporter import export_checkpoint  # noqa: E402
from sead.export.inspect_model import inspect_model  # noqa: E402
from sead.runtime.errors import ExportMismatch, ModelFileError  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.train.checkpoint import file_sha256, load_checkpoint  # noqa: E402

ALLOWED_OPS = {"Concat", "Slice", "Conv", "Relu", "Greater", "Where", "Mul"}


@pytest.mark.parametrize("task", ["addition", "parity", "rule110"])
def test_export_writes_a_checked_single_step(tiny_checkpoints, tmp_path, task):
    out, report = export_checkpoint(tiny_checkpoints[task], tmp_path / f"{task}.onnx")
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert set(ops) <= ALLOWED_OPS  # no Shape/Gather/ConstantOfShape, no loops
    assert not any(n.op_type in ("Loop", "Scan", "If") for n in proto.graph.node)
    assert [i.name for i in proto.graph.input] == ["problem", "state"]
    assert [o.name for o in proto.graph.output] == ["next_state", "logits"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "length"
    lengths = {r["what"].split("L=")[-1] for r in report}
    assert "100000" in lengths and {"1", "2"} & lengths  # addition tapes have at least 2 cells
    meta = load_step_model(out).metadata
    model, payload = load_checkpoint(tiny_checkpoints[task])
    assert meta.task == task and meta.radius == 1
    assert meta.parameters == model.num_parameters() == inspect_model(str(out))["parameters"]
    assert meta.checkpoint_sha256 == file_sha256(tiny_checkpoints[task])
    assert meta.convergence == ("generations" if task == "rule110" else "fixed_point")


def test_onnx_step_equals_torch_step(tiny_checkpoints, tmp_path):
    import onnxruntime as ort

    out, _ = export_checkpoint(tiny_checkpoints["parity"], tmp_path / "p.onnx")
    model, _ = load_checkpoint(tiny_checkpoints["parity"])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = np.zeros((3, 3, 50), np.float32)
    x[:, 0] = 1
    x[np.arange(3)[:, None], 1 + rng.integers(0, 2, (3, 50)), np.arange(50)] = 1
    s = rng.choice([-1.0, 1.0], (3, model.config.state_channels, 50)).astype(np.float32)
    got_state, got_logits = sess.run(None, {"problem": x, "state": s})
    with torch.no_grad():
        want_state = model.step(torch.from_numpy(x), torch.from_numpy(s)).numpy()
        want_logits = model.readout(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    assert np.array_equal(got_state, want_state)
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-5)


def test_verification_catches_a_wrong_graph(tiny_checkpoints, monkeypatch, tmp_path):
    import sead.export.exporter as exporter

    real = exporter.build_step_graph

    def broken(model, metadata, opset):
        proto = real(model, metadata, opset)
        for init in proto.graph.initializer:
            if init.name == "rule_out.bias":
                arr = onnx.numpy_helper.to_array(init) + 5.0
                init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return proto

    monkeypatch.setattr(exporter, "build_step_graph", broken)
    target = tmp_path / "broken.onnx"
    with pytest.raises(ExportMismatch, match="next_state differs"):
        export_checkpoint(tiny_checkpoints["parity"], target)
    assert not target.exists() and not list(tmp_path.iterdir())  # no partial output


def test_bad_checkpoints_leave_nothing_behind(tmp_path):
    import os

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"x": RunsCode()}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk")
    torch.save({"format": "sead-checkpoint", "format_version": 2}, tmp_path / "v2.pt")
    for name, words in [("missing.pt", "no such checkpoint"), ("junk.pt", "not a loadable"),
                        ("evil.pt", "not a loadable"), ("v2.pt", "format version 2")]:
        with pytest.raises(ModelFileError, match=words):
            export_checkpoint(tmp_path / name)
        assert not (tmp_path / name).with_suffix(".onnx").exists()
    assert not (tmp_path / "pwned").exists()


def test_opset_choice(tiny_checkpoints, tmp_path):
    out, _ = export_checkpoint(tiny_checkpoints["rule110"], tmp_path / "r.onnx", opset=19)
    assert load_step_model(out).opset == 19
    with pytest.raises(ModelFileError, match="opset 12"):
        export_checkpoint(tiny_checkpoints["rule110"], tmp_path / "r12.onnx", opset=12)


@pytest.mark.parametrize("model_name", ["addition_symbol", "multiplication_symbol", "multiplication_digits"])
def test_a_symbol_state_exports_as_argmax_one_hot(tiny_checkpoints, tmp_path, model_name):
    """A symbol state is the one-hot of the rule's first largest pre-activation, and its own
    readout; the metadata says so, so the runtime stores it as a class at rest."""
    import onnxruntime as ort

    from sead.train.model import SymbolState

    out, report = export_checkpoint(tiny_checkpoints[model_name], tmp_path / "s.onnx")
    proto = onnx.load(str(out))
    assert {n.op_type for n in proto.graph.node} <= ALLOWED_OPS | {"ArgMax", "Equal", "Cast", "Identity"}
    assert not any(r.get("rounding_flips") for r in report)
    meta = load_step_model(out).metadata
    model, _ = load_checkpoint(tiny_checkpoints[model_name])
    assert meta.state == "symbol" and meta.state_channels == meta.classes == model.config.classes
    x = torch.zeros(3, model.config.input_channels, *(7,) * model.config.rank)
    x[:, 0] = 1
    x[:, 1] = 1  # every cell holds symbol 0
    gen = torch.Generator().manual_seed(0)
    state = SymbolState.random((3, meta.state_channels, *x.shape[2:]), gen)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got_state, got_logits = sess.run(None, {"problem": x.numpy(), "state": state.numpy()})
    with torch.no_grad():
        want = model.step(x, state).numpy()
    assert np.array_equal(got_state, want) and (got_state.sum(1) == 1).all()  # one class per real cell
    assert np.array_equal(got_logits, state.numpy())


def test_a_symbol_state_needs_one_channel_per_class(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx["multiplication"]))  # a sign state of 4 channels, relabelled
    for prop in proto.metadata_props:
        if prop.key == "sead.state":
            prop.value = "symbol"
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelFileError, match="one state channel per class"):
        load_step_model(tmp_path / "m.onnx")


def test_a_rule_that_reads_digits_exports_its_folded_weights(tiny_checkpoints, tmp_path):
    """read_digits: the rule's weight on class k is the sum of its digits' weights; the exported
    step holds that sum over all classes, and the metadata counts the graph's weights."""
    from sead.train.model import digit_matrix

    m = digit_matrix(100, 10)
    assert m.shape == (20, 100) and m[:, 37].nonzero().flatten().tolist() == [7, 13]  # 37: s = 7, c = 3
    model, _ = load_checkpoint(tiny_checkpoints["multiplication_digits"])
    c = model.config
    assert model.rule_in.weight.shape[1] == c.input_channels + 20
    folded = model.step_weights()["rule_in.weight"]
    assert folded.shape[1] == c.input_channels + c.classes
    w = model.rule_in.weight.detach()
    assert torch.allclose(folded[:, c.input_channels + 37], w[:, c.input_channels + 7] + w[:, c.input_channels + 13])
    out, _ = export_checkpoint(tiny_checkpoints["multiplication_digits"], tmp_path / "d.onnx")
    meta = load_step_model(out).metadata
    assert meta.parameters > model.num_parameters()  # 100 class columns exported where 20 digit ones were learned


@pytest.mark.parametrize("name", ["addition", "rule110", "multiplication", "multiplication_digits"])
def test_an_exported_step_costs_what_its_model_costs(tiny_checkpoints, tiny_onnx, name):
    """One cost model for tapes and grids: the runtime reads it off the exported graph, training
    off the config, and a rule that reads digits is counted as exported (folded)."""
    from sead.runtime.bench import model_costs

    model, _ = load_checkpoint(tiny_checkpoints[name])
    costs = model_costs(load_step_model(tiny_onnx[name]))
    c = model.config
    window = 3 ** c.rank
    assert costs["flops_per_cell_update"] == model.flops_per_cell_update() == \
        2 * c.hidden * (c.input_channels + c.state_channels) * window + 2 * c.state_channels * c.hidden
    assert costs["bytes_per_cell_update"] == 4 * (c.input_channels + 2 * c.state_channels)


@pytest.mark.parametrize("name, cap", [("multiplication", 3), ("multiplication", 40), ("rule110", 0), ("parity", 40)])
def test_the_plain_ort_loop_keeps_the_reference_loops_contract(tiny_checkpoints, tiny_onnx, name, cap):
    """runtime/bench.py's plain ONNX Runtime loop (a bench baseline and export's cross-check)
    gives the PyTorch reference loop's symbols, steps and convergence flags: on grids, on rings
    run for their generations, and with problems stopped by the step cap."""
    from sead.runtime.bench import cpu_session, plain_ort_solve
    from sead.runtime.tasks import get_task
    from sead.train.data import encode_problems
    from sead.train.model import solve

    task = get_task(name)
    rng = np.random.default_rng(3)
    size = 5 if name == "multiplication" else 12
    problems = [task.parse(task.random_line(rng, size, generations=int(rng.integers(0, 9)))) for _ in range(12)]
    x, gens = encode_problems(name, problems)
    model, _ = load_checkpoint(tiny_checkpoints[name])
    want = [v.numpy() for v in solve(model, x, cap, gens)]
    got = plain_ort_solve(cpu_session(tiny_onnx[name].read_bytes()), x.numpy(), cap,
                          None if gens is None else gens.numpy())
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    if name == "multiplication" and cap == 3:
        assert not got[2].all()  # some problems ran out of steps
