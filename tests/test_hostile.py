"""Hostile inputs, files, model files and environments (issue #12): each ends in a documented exit
status and one line on stderr, never a traceback, and leaves every file it was given intact.

Commands run for real in a subprocess (`python -m sead.cli`); model-file and checkpoint checks
that need no process of their own run in-process, where they cost milliseconds.
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import onnx
import pytest
from onnx import helper, numpy_helper

from sead.runtime.errors import ModelFileError, OutputError
from sead.runtime.model_file import default_model_path, load_step_model

SHIPPED = all(default_model_path(t).is_file() for t in ("addition", "parity", "rule110"))
needs_models = pytest.mark.skipif(not SHIPPED, reason="shipped models not built yet (make models)")
SEAD = [sys.executable, "-m", "sead.cli"]


def sead(*args, stdin: str | bytes = b"", **popen):
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([*SEAD, *map(str, args)], input=data, capture_output=True, timeout=300, **popen)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def one_line(err: str, *words: str) -> str:
    """stderr is exactly one line, with no traceback, and says what went wrong."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return lines[0]


def usage_error(err: str, option: str) -> None:
    """typer's own usage message: it names the option; no traceback."""
    assert "Traceback" not in err and f"Invalid value for '{option}'" in err, err


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"1+2\n99+1\n")
    return path


def shipped_weights(name: str) -> int:
    """Parameters of a shipped model, counted from its graph's stored weights and biases."""
    if not SHIPPED:
        return -1
    proto = onnx.load(str(default_model_path(name)))
    return sum(numpy_helper.to_array(t).size for t in proto.graph.initializer
               if t.name.endswith((".weight", ".bias")))


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if "sead-tmp" in p.name]


# -- 1. outputs: never an input, whole or untouched, every failure one line ----------------------

@needs_models
@pytest.mark.parametrize("how", ["same path", "symlink", "stdin redirected from it"])
def test_output_that_is_the_input_is_refused_before_reading(problems, how):
    target = problems
    if how == "symlink":
        target = problems.with_name("link.txt")
        target.symlink_to(problems.name)
    if how == "stdin redirected from it":
        with open(problems, "rb") as f:
            proc = subprocess.run([*SEAD, "run", "-o", str(target)], stdin=f, capture_output=True, timeout=300)
        code, out, err = proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    else:
        code, out, err = sead("run", "-i", problems, "-o", target)
    assert code == 2 and out == ""
    one_line(err, "is the input")
    assert problems.read_bytes() == b"1+2\n99+1\n"


@needs_models
def test_output_that_is_the_model_is_refused(tmp_path, problems):
    model = tmp_path / "m.onnx"
    model.write_bytes(default_model_path("addition").read_bytes())
    code, _, err = sead("run", "--model", model, "-i", problems, "-o", model)
    assert code == 2
    one_line(err, "is the model")
    assert model.read_bytes() == default_model_path("addition").read_bytes()


@needs_models
def test_ctrl_c_exits_130_and_leaves_the_earlier_output(tmp_path):
    """Ctrl-C while a tape is being solved: exit 130, no traceback, the earlier output and its mode
    kept, no temporary file left. stderr is a terminal, so `sead run` shows its progress bar once
    the tape is in flight: that line, not a sleep, says when to press Ctrl-C."""
    import pty
    import select

    # a million generations of a 100,000-cell rule110 ring, where most cells change every
    # generation: hours of work, so the run is surely still going when Ctrl-C comes
    rng = random.Random(0)
    bits = "".join(rng.choice("01") for _ in range(100_000))
    (tmp_path / "long.txt").write_text(bits + " 1000000\n")
    out = tmp_path / "out.txt"
    out.write_text("earlier answers\n")
    os.chmod(out, 0o640)
    terminal, child_end = pty.openpty()
    # a shell's background job inherits SIGINT ignored, and so would sead: restore the default
    proc = subprocess.Popen([*SEAD, "run", "--model", "rule110", "-i", str(tmp_path / "long.txt"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=child_end,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(child_end)
    shown, deadline = b"", time.monotonic() + 120
    try:
        while b"tiles active" not in shown:  # the 100,000-cell tape is in flight
            assert proc.poll() is None and time.monotonic() < deadline, shown.decode(errors="replace")
            if select.select([terminal], [], [], 1)[0]:
                shown += os.read(terminal, 4096)
        assert len(leftovers(tmp_path)) == 1  # the temporary output, beside the earlier one
        proc.send_signal(signal.SIGINT)
        while True:  # the rest of stderr, to the child's end of the terminal closing
            try:
                data = os.read(terminal, 4096) if select.select([terminal], [], [], 120)[0] else b""
            except OSError:  # EIO: the child has gone
                break
            if not data:
                break
            shown += data
        assert proc.wait(120) == 130 and b"Traceback" not in shown, shown.decode(errors="replace")
    finally:
        os.close(terminal)
        if proc.poll() is None:
            proc.kill()
    assert out.read_text() == "earlier answers\n" and oct(out.stat().st_mode & 0o777) == oct(0o640)
    assert leftovers(tmp_path) == []


@needs_models
def test_invalid_input_leaves_the_earlier_output_and_success_keeps_its_mode(tmp_path):
    (tmp_path / "bad.txt").write_text("1+1\n2+x\n")
    out = tmp_path / "out.txt"
    out.write_text("earlier\n")
    os.chmod(out, 0o640)
    code, _, err = sead("run", "-i", tmp_path / "bad.txt", "-o", out)
    assert code == 2 and "bad.txt:2:" in err and out.read_text() == "earlier\n"
    (tmp_path / "good.txt").write_text("1+1\n")
    assert sead("run", "-i", tmp_path / "good.txt", "-o", out)[0] == 0
    assert out.read_text() == "2\n" and oct(out.stat().st_mode & 0o777) == oct(0o640)
    assert leftovers(tmp_path) == []


@needs_models
def test_write_errors_are_one_line_and_devices_still_work(tmp_path, problems):
    for target, words in [("/dev/full", "No space left"), (tmp_path, "is a directory")]:
        code, out, err = sead("run", "-i", problems, "-o", target)
        assert code == 2 and out == ""
        one_line(err, str(target), words)
    assert sead("run", "-i", problems, "-o", "/dev/null") == (0, "", "")


@needs_models
def test_a_closed_output_pipe_ends_quietly_with_141(problems):
    proc = subprocess.Popen([*SEAD, "run", "-i", str(problems)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first answer: `sead run | head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and err == b""


@needs_models
@pytest.mark.parametrize("closed, args, words", [
    (0, ["run"], "standard input is closed"),
    (1, ["run", "-i", "{problems}"], "standard output is closed"),
])
def test_closed_stdin_or_stdout_is_one_line(problems, closed, args, words):
    args = [a.format(problems=problems) for a in args]
    proc = subprocess.run([*SEAD, *args], stdin=subprocess.DEVNULL, stdout=None if closed == 1 else subprocess.PIPE,
                          stderr=subprocess.PIPE, preexec_fn=lambda: os.close(closed), timeout=300)
    assert proc.returncode == 2
    one_line(proc.stderr.decode(), words)


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"checkpoint bytes")
    code, _, err = sead("export", ck, "-o", ck)
    assert code == 2
    one_line(err, "is the checkpoint")
    assert ck.read_bytes() == b"checkpoint bytes"
    ck.rename(tmp_path / "ck.onnx")  # the default output (.onnx beside it) is then the checkpoint itself
    code, _, err = sead("export", tmp_path / "ck.onnx")
    assert code == 2 and (tmp_path / "ck.onnx").read_bytes() == b"checkpoint bytes"


def test_export_to_a_folder_or_a_missing_place_is_refused(tiny_checkpoints, tmp_path):
    pytest.importorskip("torch")
    from sead.export.exporter import export_checkpoint

    folder = tmp_path / "existing_dir"
    folder.mkdir()
    for target, words in [(folder, "is a directory"), ("/proc/nodir/x.onnx", "/proc/nodir")]:
        with pytest.raises(OutputError, match=words) as info:
            export_checkpoint(tiny_checkpoints["parity"], target)
        assert "\n" not in str(info.value)
    assert list(folder.iterdir()) == []


def test_bench_refuses_an_unwritable_out_before_measuring(tmp_path):
    code, stdout, err = sead("bench", "--out", "/proc/nodir", "--baselines", "", "--shapes", "16x1")
    assert code == 2 and "measuring" not in err
    one_line(err, "/proc/nodir", "cannot write into this folder")


# -- 2. any readable stream as input ------------------------------------------------------------

@needs_models
def test_pipes_fifos_and_dev_stdin_are_read(tmp_path):
    assert sead("run", "-i", "/dev/stdin", stdin="1+2\n") == (0, "3\n", "")
    fifo = tmp_path / "problems.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as f:
            f.write("40+2\n99+1\n")

    threading.Thread(target=feed, daemon=True).start()
    assert sead("run", "-i", fifo) == (0, "42\n100\n", "")
    if os.path.exists("/bin/bash"):
        proc = subprocess.run(["/bin/bash", "-c", 'exec "$@" -i <(printf "5+5\\n")', "bash", *SEAD, "run"],
                              capture_output=True, timeout=300)
        assert (proc.returncode, proc.stdout) == (0, b"10\n"), proc.stderr


# -- 3. numbers bounded before solving ----------------------------------------------------------

@needs_models
def test_rule110_generations_beyond_the_bound_are_refused_at_parse_time():
    lines = ["0110 1000000000000000000000000000000", "0110 " + "9" * 5000, "0110 3"]  # no int() of 5,000 digits
    code, out, err = sead("run", "--model", "rule110", stdin="\n".join(lines) + "\n")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "<stdin>:1: the number of generations 1000000000000000000000000000000 is above the limit of " \
           "1,000,000,000,000" in err
    assert "<stdin>:2: the number of generations 99999999999999999999... (5,000 digits) is above the limit" in err


@pytest.mark.parametrize("args, option", [
    (["run", "--max-steps", str(10**30)], "--max-steps"),
    (["eval", "x.pt", "--max-steps", "0"], "--max-steps"),
    (["eval", "x.pt", "--problems", "0"], "--problems"),
    (["eval", "x.pt", "--problems", "-1"], "--problems"),
])
def test_numbers_out_of_range_are_usage_errors(args, option):
    code, out, err = sead(*args, stdin="1+1\n")
    assert code == 2 and out == ""
    usage_error(err, option)


# -- 4. model files checked against themselves --------------------------------------------------

def _doctored(tmp_path, change, name="addition"):
    proto = onnx.load(str(default_model_path(name)))
    change(proto)
    path = tmp_path / f"doctored_{name}.onnx"
    onnx.save(proto, str(path))
    return path


def _set_meta(**values):
    def change(proto):
        for prop in proto.metadata_props:
            key = prop.key.removeprefix("sead.")
            if key in values:
                prop.value = str(values[key])
    return change


def _custom_op(proto):
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    proto.graph.node.append(helper.make_node("Mystery", ["logits"], ["extra"], domain="com.example"))


def _external_weights(proto):
    init = next(t for t in proto.graph.initializer if t.name == "rule_out.bias")
    init.ClearField("raw_data")
    del init.float_data[:]
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="/etc/passwd")


def _weight_made_by_a_node(proto):
    init = next(t for t in proto.graph.initializer if t.name == "rule_out.bias")
    proto.graph.node.insert(0, helper.make_node("Constant", [], ["rule_out.bias"], value=init))
    proto.graph.initializer.remove(init)


@needs_models
@pytest.mark.parametrize("change, name, words", [
    (_set_meta(radius=0), "addition", "sead.radius=0"),
    (_set_meta(radius=2), "addition", "width 5"),
    (_set_meta(state_channels=7), "addition", "state has 2 channels, but sead.state_channels=7"),
    (_set_meta(input_channels=3), "addition", "problem has 20 channels, but sead.input_channels=3"),
    (_set_meta(tolerance=5), "addition", "sead.tolerance=5.0"),
    (_set_meta(task="rule110"), "parity", "sead.boundary='zeros', but task 'rule110' has 'ring'"),
    (_set_meta(task="sudoku"), "parity", "not a known task"),
    (_set_meta(convergence="generations"), "addition", "sead.convergence='generations'"),
    (_set_meta(parameters=1), "addition", f"sead.parameters=1, but the graph holds {shipped_weights('addition')}"),
    (_custom_op, "addition", "com.example"),
    (_external_weights, "addition", "keeps its data in another file"),
    (_weight_made_by_a_node, "addition", "lacks a stored weight and bias"),
])
def test_a_doctored_model_is_refused_on_load(tmp_path, change, name, words):
    path = _doctored(tmp_path, change, name)
    with pytest.raises(ModelFileError) as info:
        load_step_model(path)
    assert str(path) in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


@needs_models
def test_a_graph_that_fails_the_onnx_checker_is_refused(tmp_path):
    def wrong_kernel(proto):  # Conv weight rank no longer matches its input: shape inference fails
        init = next(t for t in proto.graph.initializer if t.name == "read_out.weight")
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, :, 0], init.name))
    path = _doctored(tmp_path, wrong_kernel)
    with pytest.raises(ModelFileError, match="fails the ONNX checker"):
        load_step_model(path)


@needs_models
def test_the_cli_never_answers_from_a_doctored_model(tmp_path):
    path = _doctored(tmp_path, _set_meta(tolerance=5))
    code, out, err = sead("run", "--model", path, stdin="99999999+1\n")
    assert code == 2 and out == ""
    one_line(err, "sead.tolerance")


# -- 5. checkpoints whose config disagrees with their task -----------------------------------------

def _rewrite_checkpoint(src, dst, payload_task=None, config_task=None):
    torch = pytest.importorskip("torch")
    payload = torch.load(src, weights_only=True)
    payload["task"] = payload_task or payload["task"]
    payload["model_config"]["task"] = config_task or payload["model_config"]["task"]
    torch.save(payload, dst)
    return dst


@pytest.mark.parametrize("changes, words", [
    ({"payload_task": "parity"}, "the checkpoint is for task 'parity' but its model config names 'addition'"),
    ({"payload_task": "parity", "config_task": "parity"}, "model config input_channels=20, but task 'parity' has 3"),
])
def test_a_checkpoint_whose_config_disagrees_with_its_task_is_refused(tiny_checkpoints, tmp_path, changes, words):
    from sead.train.checkpoint import load_checkpoint

    path = _rewrite_checkpoint(tiny_checkpoints["addition"], tmp_path / "other.pt", **changes)
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_refuses_a_checkpoint_for_another_task_in_one_line(tiny_checkpoints, tmp_path):
    path = _rewrite_checkpoint(tiny_checkpoints["addition"], tmp_path / "other.pt", payload_task="rule110")
    code, out, err = sead("export", path)
    assert code == 2
    one_line(err, "is for task 'rule110'")
    assert not (tmp_path / "other.onnx").exists() and leftovers(tmp_path) == []


def test_torch_advice_to_disable_weights_only_is_never_passed_on(tmp_path):
    torch = pytest.importorskip("torch")
    from sead.train.checkpoint import load_checkpoint

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"format": "sead-checkpoint", "x": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "weights_only" not in message and "\n" not in message and "posix.system" in message


# -- 6. non-finite weights ------------------------------------------------------------------------

def test_export_refuses_nan_weights_and_verification_cannot_pass_on_nan(tiny_checkpoints, tmp_path):
    torch = pytest.importorskip("torch")
    from sead.export.exporter import export_checkpoint
    from sead.export.onnx_step import build_step_graph, metadata_for
    from sead.export.verify import verify_export
    from sead.runtime.errors import ExportMismatch
    from sead.train.checkpoint import load_checkpoint, save_checkpoint

    model, payload = load_checkpoint(tiny_checkpoints["parity"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", model, payload["record"])
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        export_checkpoint(tmp_path / "nan.pt")
    assert not (tmp_path / "nan.onnx").exists()
    data = build_step_graph(model, metadata_for(model, payload, "0" * 64, "test")).SerializeToString()
    with pytest.raises(ExportMismatch, match="NaN or infinite"):
        verify_export(model, data)


# -- 7. smaller ---------------------------------------------------------------------------------

@needs_models
def test_bom_is_accepted_and_bare_cr_is_named(tmp_path):
    assert sead("run", stdin=b"\xef\xbb\xbf1+2\n3+4\n") == (0, "3\n7\n", "")
    (tmp_path / "mac.txt").write_bytes(b"1+2\r3+4\r")
    code, out, err = sead("run", "-i", tmp_path / "mac.txt")
    assert code == 2 and "mac.txt:1: line endings are bare CR (old Mac); convert to LF" in err


@needs_models
def test_inspect_counts_only_weights_and_runs_the_checker(tmp_path):
    from sead.export.inspect_model import inspect_model

    def extra_constant(proto):  # an unused dotted initializer is not a parameter
        proto.graph.initializer.append(numpy_helper.from_array(onnx.numpy_helper.to_array(
            proto.graph.initializer[0]).ravel()[:3].copy(), "spare.constant"))
    assert inspect_model(str(_doctored(tmp_path, extra_constant)))["parameters"] == shipped_weights("addition")
    code, out, err = sead("inspect", "addition")
    assert code == 0 and f"(opset 17, {shipped_weights('addition')} parameters)" in out


@needs_models
def test_not_converged_says_1_step_not_1_steps():
    code, out, err = sead("run", "--max-steps", "1", stdin="99999999+1\n")
    assert code == 1 and out == "\n"
    assert one_line(err).endswith("did not converge within 1 step")
