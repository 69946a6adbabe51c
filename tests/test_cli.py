"""The `sead` command run for real in a subprocess: answers, formats, exit codes, bad input."""
import io
import json
import subprocess
import sys
import threading

import pytest

from sead.runtime.model_file import default_model_path
from sead.runtime.tasks import get_task

SHIPPED = all(default_model_path(t).is_file() for t in ("addition", "parity", "rule110", "multiplication"))
needs_models = pytest.mark.skipif(not SHIPPED, reason="shipped models not built yet (make models)")


def sead(*args, stdin: str | bytes = "", cwd=None):
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([sys.executable, "-m", "sead.cli", *args], input=data, capture_output=True, cwd=cwd,
                          timeout=300)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@needs_models
def test_each_task_answers_exactly_in_input_order():
    cases = {
        "addition": ["1+1", "99999999+1", "0+0", "123 + 877", "007+3", "5555555555555555+4444444444444445"],
        "parity": ["0", "1", "0110", "1111111", "0000000000000000000000000000001"],
        "rule110": ["0110", "0110 0", "0001000100 5", "1 3", "111000111000 40"],
        "multiplication": ["12*34", "0*0", "999999*999999", "7*123456789012", "31415*92653", "000123*10"],
    }
    for task, lines in cases.items():
        code, out, err = sead("run", "--model", task, "--engine", "ort", stdin="\n".join(lines) + "\n")
        t = get_task(task)
        assert code == 0, err
        assert out.splitlines() == [t.answer(t.parse(line)) for line in lines]


@needs_models
def test_jsonl_records_and_output_file(tmp_path):
    (tmp_path / "in.txt").write_text("12+30\r\n99+1\r\n")
    code, out, err = sead("run", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.jsonl"), "--format", "jsonl")
    assert code == 0 and out == ""
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2]
    assert [r["output"] for r in records] == ["42", "100"]
    assert all(r["converged"] is True and isinstance(r["steps"], int) and r["steps"] >= 1 for r in records)


@needs_models
def test_not_converged_exits_1_and_prints_no_answer():
    code, out, err = sead("run", "--max-steps", "0", "--format", "jsonl", stdin="99+1\n5+5\n")
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["converged"] for r in records] == [False, False] and all(r["output"] is None for r in records)
    assert "<stdin>:1: did not converge" in err and "<stdin>:2: did not converge" in err
    code, out, err = sead("run", "--max-steps", "0", stdin="99+1\n")
    assert code == 1 and out == "\n"  # no answer printed, the line stays aligned


@needs_models
@pytest.mark.parametrize("data, line, words", [
    (b"1+1\n\n2+2\n", 2, "blank line"),
    ("1+1\n1+\u0663\n".encode(), 2, "only ASCII digits"),
    (b"1+1\n2+2\n3-3\n", 3, "one '+'"),
    (b"1+1\n2+\xff\n", 2, "position 1"),  # not UTF-8
])
def test_invalid_lines_are_all_reported_and_nothing_is_answered(tmp_path, data, line, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    code, out, err = sead("run", "-i", str(path))
    assert code == 2 and out == ""
    assert f"{path}:{line}: " in err and words in err


@needs_models
def test_skip_invalid_answers_the_rest():
    code, out, err = sead("run", "--skip-invalid", "--format", "jsonl", stdin="1+1\nx\n\n2+2\n")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 2
    assert records[0] == {"line": 1, "output": "2", "steps": records[0]["steps"], "converged": True}
    assert records[1]["line"] == 2 and "error" in records[1]
    assert records[2]["line"] == 3 and "blank line" in records[2]["error"]
    assert records[3]["output"] == "4"
    assert "<stdin>:2:" in err and "<stdin>:3:" in err
    code, out, _ = sead("run", "--skip-invalid", stdin="1+1\nx\n2+2\n")
    assert out.splitlines() == ["2", "", "4"]


@needs_models
def test_final_newline_is_not_a_line_and_empty_input_is_fine():
    assert sead("run", stdin="1+1")[1] == "2\n"
    assert sead("run", stdin="1+1\n")[1] == "2\n"
    assert sead("run", stdin="") == (0, "", "")


def test_a_missing_model_is_one_clear_line(tmp_path):
    code, out, err = sead("run", "--model", str(tmp_path / "nope.onnx"), stdin="1+1\n")
    assert code == 2 and "no such model file" in err and "Traceback" not in err


@needs_models
def test_a_missing_input_is_one_clear_line(tmp_path):
    code, out, err = sead("run", "-i", str(tmp_path / "absent.txt"))
    assert code == 2 and "absent.txt" in err and "Traceback" not in err


def test_usage_errors_exit_2():
    assert sead("run", "--engine", "warp")[0] == 2
    assert sead("run", "--batch-size", "0")[0] == 2
    assert sead("--version")[1].startswith("sead ")


def test_run_path_never_imports_torch():
    probe = ("import sys; import sead.cli.main, sead.runtime.api, sead.runtime.engines.ort; "
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class _Terminal(io.StringIO):
    """stderr as a terminal: isatty() is true, and a test can wait for what has been written."""

    def __init__(self):
        super().__init__()
        self.written = threading.Condition()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.written:
            count = super().write(text)
            self.written.notify_all()
            return count

    def wait_for(self, *parts: str, seconds: float = 120) -> bool:
        with self.written:
            return self.written.wait_for(lambda: all(p in self.getvalue() for p in parts), seconds)


@needs_models
def test_a_long_solve_shows_steps_and_active_tiles_on_a_terminal(tmp_path, monkeypatch, gate):
    """One long carry chain is one problem for seconds: on a terminal, `sead run` shows its steps
    so far and its active tiles while it runs; the answer is untouched. The tape is held at a gate
    (one of its tile windows waits) until the bar has shown it, so no solve has to last long
    enough to be seen: the bar must show the tape's state at the gate, as Runtime.progress() has it."""
    import sead.runtime
    from sead.cli import progress, run_cmd
    from sead.cli.options import Engine

    runtimes, plain_runtime = [], sead.runtime.Runtime

    def gated_runtime(model, engine, **options):  # what run_cmd builds, with its engine's windows gated
        runtimes.append(plain_runtime(model, gate.engine(engine), **options))
        return runtimes[-1]

    monkeypatch.setattr(sead.runtime, "Runtime", gated_runtime)
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0)
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.005)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    gate.after = 3  # a few rounds first, so there are steps to show
    (tmp_path / "in.txt").write_text("9" * 30_000 + "+1\n")
    out, failed = tmp_path / "out.txt", []

    def run():
        try:
            run_cmd.run(model="addition", engine=Engine.ort, input=str(tmp_path / "in.txt"), output=str(out),
                        format=run_cmd.Format.text, batch_size=None, max_steps=None, skip_invalid=False,
                        allow_unverified_sizes=False, ray=None, ray_actors=None)
        except BaseException as exc:
            failed.append(exc)

    solving = threading.Thread(target=run)
    solving.start()
    try:
        gate.wait_held()
        (tape,) = runtimes[0].progress()
        assert tape["cells"] == 30_001 and tape["steps"] > 0 and 0 < tape["active_tiles"] < tape["tiles"]
        assert terminal.wait_for(f"30,001-cell tape: step {tape['steps']:,}, ",
                                 f"{tape['active_tiles']:,}/{tape['tiles']:,} tiles active"), terminal.getvalue()
    finally:
        gate.release.set()
        solving.join(120)
    assert not solving.is_alive() and failed == []
    assert out.read_text() == "1" + "0" * 30_000 + "\n"


@needs_models
def test_multiplication_past_its_verified_size_is_refused_unless_allowed():
    """The shipped multiplication rule was checked exact up to its sead.verified_size; a larger
    product is an invalid line (exit 2, nothing solved) unless --allow-unverified-sizes."""
    from sead.runtime.model_file import load_step_model

    limit = load_step_model(default_model_path("multiplication")).metadata.verified_size
    assert limit >= 6
    big = "1" + "0" * limit + "*7"
    code, out, err = sead("run", "--model", "multiplication", stdin=f"12*34\n{big}\n")
    assert code == 2 and out == "" and f"<stdin>:2: has size {limit + 1:,} (digits in the longer operand)" in err
    code, out, err = sead("run", "--model", "multiplication", "--allow-unverified-sizes", stdin=f"12*34\n{big}\n")
    assert code == 0 and out.splitlines() == ["408", "7" + "0" * limit]


def test_a_bug_in_sead_exits_1_as_an_internal_error_and_bad_input_exits_2(monkeypatch):
    """Bad input is the user's to fix (exit 2, 'error: ...'); an InternalError or any unexpected
    exception is sead's own bug (exit 1, 'internal error: ... (please report it)'); --debug
    shows the traceback instead."""
    from typer.testing import CliRunner

    import sead.export.inspect_model
    from sead.cli.main import app
    from sead.runtime.errors import InternalError, ModelFileError

    raised = {}

    def broken(name):
        raise raised["exc"]

    monkeypatch.setattr(sead.export.inspect_model, "inspect_model", broken)
    runner = CliRunner()
    for exc, code, line in [
        (RuntimeError("boom\nsecond line"), 1, "internal error: RuntimeError: boom ... (please report it)"),
        (InternalError("a tile lost its halo"), 1, "internal error: a tile lost its halo (please report it)"),
        (ModelFileError("m.onnx: not an ONNX model"), 2, "error: m.onnx: not an ONNX model"),
    ]:
        raised["exc"] = exc
        result = runner.invoke(app, ["inspect", "m.onnx"])
        assert (result.exit_code, result.stderr.strip()) == (code, line)
        assert result.stdout == ""
        result = runner.invoke(app, ["--debug", "inspect", "m.onnx"])
        assert result.exception is exc


def test_the_entry_point_reports_an_internal_error_in_one_line():
    probe = ("import sys, sead.export.inspect_model as m\n"
             "def broken(name): raise KeyError('rule_in.weight')\n"
             "m.inspect_model = broken\n"
             "from sead.cli.main import main\n"
             "sys.argv = ['sead', *sys.argv[1:]]\n"
             "main()\n")
    proc = subprocess.run([sys.executable, "-c", probe, "inspect", "addition"], capture_output=True, text=True,
                          timeout=300)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "internal error: KeyError: 'rule_in.weight' (please report it)\n"
    proc = subprocess.run([sys.executable, "-c", probe, "--debug", "inspect", "addition"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError: 'rule_in.weight'" in proc.stderr


@needs_models
def test_bench_measures_a_grid_model_beside_its_baselines(tmp_path, monkeypatch):
    """`sead bench` on a 2-D rule: its cost per cell-update from the one cost model, a table row
    per shape, and baselines that give the engine's answers and steps."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    import sead.runtime.bench
    from sead.cli.main import app

    machine = {"peak_flops": 50e9, "memory_bandwidth": 20e9}  # measuring it takes seconds (a 256 MiB copy)
    monkeypatch.setattr(sead.runtime.bench, "measure_machine", lambda: machine)
    from sead.runtime.model_file import load_step_model
    from sead.train.baseline import model_from_onnx

    result = CliRunner().invoke(app, ["bench", "--model", "multiplication", "--engine", "ort", "--shapes", "42x3",
                                      "--baselines", "ort-loop,torch", "--seconds", "0.01", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    flops = 2 * 3 * (39 + 13) * 3 * 3 + 2 * 13 * 3  # hidden 3; 39 input and 13 state channels; 3x3 cells
    assert report["costs"] == {"flops_per_cell_update": flops, "bytes_per_cell_update": 4 * (39 + 2 * 13)}
    assert model_from_onnx(load_step_model("multiplication")).flops_per_cell_update() == flops
    assert f"model multiplication: {flops} FLOPs and 260 bytes per cell-update" in result.stdout
    assert report["roofline"]["cell_updates_per_s"] == 50e9 / flops  # compute-bound
    (row,) = report["rows"]
    assert (row["length"], row["batch"], row["ort"]["converged"]) == (42, 3, 3)
    assert row["ort_loop"]["same_answers_and_steps"] and row["torch_naive"]["same_answers_and_steps"]


@needs_models
def test_bad_lines_far_apart_leave_no_answer_to_a_file_or_to_stdout(tmp_path):
    """To -o FILE the lines are validated as they are solved, blocks ahead of the bad ones; to
    stdout every line is validated first. Either way every bad line is named, nothing is written
    and the exit status is 2; a good file then gets every answer."""
    lines = [f"{i}+{i}" for i in range(40_000)]
    lines[4], lines[38_999] = "1+x", ""
    problems = tmp_path / "problems.txt"
    problems.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.txt"
    out.write_text("earlier\n")
    code, stdout, err = sead("run", "-i", problems, "-o", out)
    assert code == 2 and out.read_text() == "earlier\n" and stdout == ""
    assert "problems.txt:5:" in err and "problems.txt:39000:" in err and "2 invalid line(s)" in err
    code, stdout, err = sead("run", "-i", problems)
    assert code == 2 and stdout == "" and "problems.txt:39000:" in err
    lines[4], lines[38_999] = "1+1", "2+2"
    problems.write_text("\n".join(lines) + "\n")
    assert sead("run", "-i", problems, "-o", out)[0] == 0
    assert out.read_text().split("\n")[:-1] == [str(int(a) + int(b)) for a, b in (x.split("+") for x in lines)]


def test_a_block_of_answers_is_written_as_line_by_line_writing_would():
    """Blocks whose every line converged are written in one call, text or JSONL: the same bytes
    as writing their Results line by line."""
    import numpy as np

    from sead.cli.run_cmd import Format, _answered_jsonl, _answered_text, _write_lines
    from sead.runtime import Answered, Results

    block = Answered(7, 3, {}, Results(["42", "1000000", "0"], np.array([3, 8, 1]), np.array([True, True, True])))
    for fmt, fast in [(Format.text, _answered_text), (Format.jsonl, _answered_jsonl)]:
        out = io.StringIO()
        assert _write_lines(block.items(), out, fmt, "<stdin>") == 0
        assert fast(block) == out.getvalue()


@needs_models
def test_inspect_names_the_lookup_forms_of_each_shipped_rule():
    """`sead inspect --json` says which lookup forms the runtime builds: the tape rules' digits and
    blocks (addition's 76 digits take no blocks; parity's step reads its left only), their
    class-coded windows, and none for the multiplication grid."""
    forms = {}
    for name in ("addition", "parity", "rule110", "multiplication"):
        code, out, err = sead("inspect", name, "--json")
        assert code == 0, err
        forms[name] = json.loads(out)["lookup_forms"]
    assert {k: (v["lookup"]["digits"], v["lookup"]["block_steps"], v["classes"]["block_steps"])
            for k, v in forms.items() if k != "multiplication"} == \
        {"addition": (76, 1, 7), "parity": (9, 6, 9), "rule110": (7, 3, 2)}
    assert forms["parity"]["lookup"]["reads"] == {"left": True, "right": False}
    assert forms["addition"]["classes"]["longest_block_reads"] == [2, 20, 4, 3, 3, 3, 3, 4, 2]
    assert forms["addition"]["classes"]["longest_block_entries"] == 103_680
    assert forms["multiplication"]["lookup"].startswith("none")
