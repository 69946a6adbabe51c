"""`sead serve` for real: uvicorn on a free loopback port, an httpx client, the shipped addition model."""
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from sead.runtime.model_file import default_model_path  # noqa: E402
from sead.serve.app import create_app  # noqa: E402
from sead.serve.config import ServeConfig  # noqa: E402
from sead.serve.http_server import make_server  # noqa: E402

pytestmark = pytest.mark.skipif(not default_model_path("addition").is_file(), reason="shipped models not built")
LIMITS = dict(max_body_bytes=20_000, max_problems=50, max_line_length=5_000, max_queue_cells=8_000)
CHAIN = "9" * 2000 + "+1"  # 2,001 steps: a problem that stays in flight for a while


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(runtime=None, **limits):
    """A real uvicorn server in a thread; yields (base url, the app)."""
    config = ServeConfig(model="addition", engine="ort", port=free_port(), **limits)
    app = create_app(config, runtime)
    server = make_server(config, app, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    wait_ready(url)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


def wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/readyz").status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {seconds} s")


@pytest.fixture(scope="module")
def server():
    with serving(**LIMITS) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def metric(client, name: str) -> float:
    """The value of an unlabelled metric on /metrics; a metric that is not there fails the test
    (it must never read as 0)."""
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} on /metrics:\n{text}")


def additions(rng: random.Random, n: int, digits: int = 16) -> list[tuple[str, int]]:
    out = []
    for _ in range(n):
        a, b = rng.randrange(10 ** digits), rng.randrange(10 ** digits)
        out.append((f"{a}+{b}", a + b))
    return out


def test_json_answers_are_exact_and_in_order(server):
    cases = additions(random.Random(0), 40) + [("99999999+1", 100000000), ("0+0", 0), ("007 + 3", 10)]
    r = server.post("/v1/solve", json={"problems": [p for p, _ in cases]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "addition"
    assert [int(x["output"]) for x in body["results"]] == [s for _, s in cases]
    assert all(x["converged"] is True and x["steps"] >= 1 for x in body["results"])
    assert server.post("/v1/solve", json={"problems": []}).json() == {"model": "addition", "results": []}


def test_not_converged_is_200_with_null_output(server):
    r = server.post("/v1/solve", json={"problems": ["99999999+1", "1+1"], "max_steps": 2})
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert first == {"output": None, "steps": 2, "converged": False}
    assert second["output"] == "2" and second["converged"] is True and 1 <= second["steps"] <= 2
    by_query = server.post("/v1/solve?max_steps=2", json={"problems": ["99999999+1", "1+1"]})
    assert by_query.json()["results"] == r.json()["results"]


def test_bad_json_and_wrong_types(server):
    def post(content, ctype="application/json"):
        return server.post("/v1/solve", content=content, headers={"content-type": ctype})

    r = post('{"problems": ["1+1"')
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    for body in ('{"problems": "1+1"}', '{"problems": [1]}', '{"problems": ["1+1"], "max_steps": "3"}',
                 '{"problems": ["1+1"], "max_steps": -1}', '{"problem": ["1+1"]}', '[]'):
        r = post(body)
        assert r.status_code == 422, body
        assert r.json()["error"] == "invalid_request" and r.json()["message"]
    assert post('{"problems": ["1+1"]}', "text/plain").status_code == 415


def test_invalid_lines_report_every_reason_like_the_cli_and_solve_nothing(server):
    problems = ["1+1", "", "2+x", "3-3", "4+4"]
    solved_before = metric(server, "sead_problems_solved_total")
    r = server.post("/v1/solve", json={"problems": problems})
    assert r.status_code == 400
    invalid = r.json()["invalid"]
    assert [e["index"] for e in invalid] == [1, 2, 3]
    cli = subprocess.run([sys.executable, "-m", "sead.cli", "run", "--engine", "ort"], capture_output=True,
                         text=True, input="\n".join(problems) + "\n", timeout=120)
    assert cli.returncode == 2
    assert [f"<stdin>:{e['index'] + 1}: {e['reason']}" for e in invalid] == cli.stderr.splitlines()[:3]
    assert metric(server, "sead_problems_solved_total") == solved_before


def test_limits_give_413(server):
    assert server.post("/v1/solve", json={"problems": ["1+1"] * 51}).status_code == 413
    r = server.post("/v1/solve", json={"problems": ["1+1", "1" * 5001 + "+1"]})
    assert r.status_code == 413 and r.json()["index"] == 1
    r = server.post("/v1/solve", content=b'{"problems": ["' + b"1" * 30_000 + b'+1"]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # the queue holds 8,000 cells: two 4,000-digit problems could never be queued together
    assert server.post("/v1/solve", json={"problems": ["1" * 4500 + "+1"] * 2}).status_code == 413


def test_ndjson_streams_in_order_and_reports_bad_lines_in_place(server):
    cases = additions(random.Random(1), 30)
    lines = [json.dumps(p) for p, _ in cases]
    lines[5], lines[9] = '"12x+1"', "17"
    body = ("\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:])).encode()  # an empty line is skipped
    r = server.post("/v1/solve", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in r.text.splitlines()]
    assert [rec["index"] for rec in records] == list(range(30))
    assert "position 3" in records[5]["error"] and "JSON string" in records[9]["error"]
    for rec, (_, total) in zip(records, cases):
        if rec["index"] not in (5, 9):
            assert int(rec["output"]) == total and rec["converged"] is True
    r = server.post("/v1/solve?max_steps=2", content=b'"99999999+1"\n"1+1"',
                    headers={"content-type": "application/x-ndjson"})
    assert [json.loads(x)["converged"] for x in r.text.splitlines()] == [False, True]


def test_ndjson_chunked_body_cut_anywhere_gives_every_answer_in_order():
    cases = additions(random.Random(3), 10_000, 12)
    body = "".join(json.dumps(p) + "\n" for p, _ in cases).encode()

    def chunks():  # 1,000-byte pieces: lines are cut in the middle, groups span several pieces
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    with serving() as (url, _):
        r = httpx.post(url + "/v1/solve", content=chunks(), headers={"content-type": "application/x-ndjson"},
                       timeout=120)
    records = [json.loads(line) for line in r.text.splitlines()]
    assert [rec["index"] for rec in records] == list(range(10_000))
    assert [int(rec["output"]) for rec in records] == [total for _, total in cases]


def test_ndjson_limits_end_the_stream_with_a_fatal_record(server):
    body = "\n".join(['"1+1"'] * 60).encode()
    r = server.post("/v1/solve", content=body, headers={"content-type": "application/x-ndjson"})
    records = [json.loads(line) for line in r.text.splitlines()]
    assert len(records) == 51 and all(rec["output"] == "2" for rec in records[:50])
    assert records[-1]["fatal"] is True and records[-1]["index"] == 50
    r = server.post("/v1/solve", content=b'"1+1"\n"' + b"1" * 6000 + b'+1"\n"2+2"\n',
                    headers={"content-type": "application/x-ndjson"})
    records = [json.loads(line) for line in r.text.splitlines()]
    assert records[0]["output"] == "2" and records[1]["fatal"] is True and len(records) == 2


def test_concurrent_clients_all_get_their_own_exact_answers(server):
    errors = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(5):
            cases = additions(rng, rng.randrange(1, 20), rng.randrange(1, 40))
            r = server.post("/v1/solve", json={"problems": [p for p, _ in cases]})
            got = [int(x["output"]) for x in r.json()["results"]]
            if got != [s for _, s in cases]:
                errors.append((seed, got))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_models_health_metrics_and_docs(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").json() == {"status": "ready", "model": "addition", "engine": "ort"}
    info = server.get("/v1/models").json()
    assert info["model"] == "addition" and info["metadata"]["task"] == "addition"
    assert info["metadata"]["parameters"] > 0
    server.post("/v1/solve", json={"problems": ["1+1"]})
    text = server.get("/metrics").text
    for name in ("sead_requests_total{mode=\"json\",outcome=\"ok\"}", "sead_problems_total{outcome=\"converged\"}",
                 "sead_request_seconds_bucket", "sead_batch_problems_bucket", "sead_batch_cells_bucket",
                 "sead_queue_cells", "sead_cell_updates_total"):
        assert name in text, name
    assert metric(server, "sead_cell_updates_total") > 0
    assert server.get("/docs").status_code == 200
    assert "/v1/solve" in server.get("/openapi.json").json()["paths"]


def wait_in_flight(client, seconds: float = 60) -> None:
    """Wait, within a bound, for a problem to be in an engine batch, as /metrics shows it."""
    deadline = time.monotonic() + seconds
    while metric(client, "sead_in_flight_problems") < 1:
        assert time.monotonic() < deadline, f"no problem in flight after {seconds} s"
        time.sleep(0.002)


def test_queue_full_is_429_with_retry_after(gate):
    """One worker, busy with CHAIN (in tiles, one of its windows held at a gate): a 1,501-cell
    problem more cannot wait beside its 2,002 cells in 3,000, so both other requests are refused
    at once; once the gate opens, CHAIN is answered and the queue takes one again."""
    from sead import Runtime

    runtime = Runtime("addition", gate.engine(), workers=1, max_queue_cells=3_000, tile_from=1_000)
    with serving(runtime, max_queue_cells=3_000, max_line_length=3_000) as (url, _):
        with httpx.Client(base_url=url, timeout=120) as client:
            chain = {}
            slow = threading.Thread(target=lambda: chain.update(r=client.post("/v1/solve", json={"problems": [CHAIN]})))
            slow.start()
            try:
                gate.wait_held()
                replies = [client.post("/v1/solve", json={"problems": ["1" * 1500 + "+1"]}) for _ in range(2)]
            finally:
                gate.release.set()
                slow.join()
            assert [r.status_code for r in replies] == [429, 429]
            assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "queue_full" for r in replies)
            assert chain["r"].json()["results"][0]["output"] == "1" + "0" * 2000
            r = client.post("/v1/solve", json={"problems": ["1" * 1500 + "+1"]})
            assert r.status_code == 200 and r.json()["results"][0]["output"] == "1" * 1499 + "2"


def test_the_app_closes_its_runtime_at_shutdown():
    from sead import Runtime
    from sead.runtime.errors import RuntimeClosed, SeadError

    runtime = Runtime("addition", "ort")
    with serving(runtime) as (url, _):
        assert httpx.post(url + "/v1/solve", json={"problems": ["2+2"]}).json()["results"][0]["output"] == "4"
    for call in (lambda: runtime.solve(["1+1"]), lambda: runtime.submit(["1+1"]), runtime.stats):
        with pytest.raises(RuntimeClosed) as info:
            call()
        assert isinstance(info.value, SeadError)


def test_sigterm_drains_in_flight_requests_then_exits_0():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sead.cli", "serve", "--engine", "ort", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        reply = {}
        slow = threading.Thread(target=lambda: reply.update(r=httpx.post(url + "/v1/solve", timeout=120,
                                                                          json={"problems": [CHAIN, "1+1"]})))
        slow.start()
        with httpx.Client(base_url=url) as client:
            wait_in_flight(client)
        os.kill(proc.pid, signal.SIGTERM)
        slow.join()
        assert proc.wait(60) == 0
        assert reply["r"].status_code == 200
        assert [x["output"] for x in reply["r"].json()["results"]] == ["1" + "0" * 2000, "2"]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "ready" in proc.stderr.read()


def test_a_model_that_cannot_load_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sead.cli", "serve", "--model", str(tmp_path / "no.onnx"),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "no such model file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_imports_no_torch_and_only_the_public_runtime_api():
    import ast
    from pathlib import Path

    import sead.serve

    probe = ("import sys; import sead.cli.main, sead.serve.app, sead.serve.server, sead.serve.http_server, "
             "sead.serve.ray_data; "
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    public = {"sead": {"Runtime", "Result"}, "sead.runtime": {"Runtime", "Result"},
              "sead.runtime.errors": {"SeadError", "InputError", "QueueFull", "RuntimeClosed"},
              "sead.runtime.tasks": {"MAX_STEPS"}, "sead.runtime.lines": {"line_limit"}}
    for path in Path(sead.serve.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sead":
                assert node.module in public, f"{path.name} imports {node.module}"
                assert {a.name for a in node.names} <= public[node.module], f"{path.name}: {ast.unparse(node)}"
            assert not (isinstance(node, ast.Import) and any(a.name.startswith("sead") for a in node.names))


def test_every_serve_flag_reaches_the_config(monkeypatch):
    from typer.testing import CliRunner

    import sead.serve.server
    from sead.cli.main import app

    got = []
    monkeypatch.setattr(sead.serve.server, "serve", got.append)
    flags = {"max_steps": 5000, "max_request_work": 10**6, "max_inflight_work": 10**7, "max_large_bodies": 3,
             "max_connections": 9, "header_timeout": 1.5, "keep_alive_timeout": 2.5, "body_timeout": 3.5,
             "drain_seconds": 4.5, "max_line_length": 700, "max_problems": 11, "max_body_bytes": 12345}
    args = [f"--{name.replace('_', '-')}={value}" for name, value in flags.items()]
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 0, result.output
    assert {name: getattr(got[0], name) for name in flags} == flags
    result = CliRunner().invoke(app, ["serve", f"--max-steps={10**12 + 1}"])
    assert result.exit_code == 2 and "--max-steps" in result.output


def test_ndjson_records_are_what_json_dumps_writes():
    """The records of a group are built without a dict per problem: each line must be the compact
    json.dumps of its record (errors with quotes and non-ASCII text, answers null and not)."""
    import numpy as np

    from sead.runtime import Results
    from sead.serve.ndjson import _dumps, _group_records

    group = [[0, "1+1", None], [1, None, 'not a "JSON" string; é'], [2, "9+9", None], [3, "x", "bad\nline"]]
    results = Results(["2", None], np.array([1, 7]), np.array([True, False]))
    want = [_dumps({"index": 0, "output": "2", "steps": 1, "converged": True}),
            _dumps({"index": 1, "error": 'not a "JSON" string; é'}),
            _dumps({"index": 2, "output": None, "steps": 7, "converged": False}),
            _dumps({"index": 3, "error": "bad\nline"})]
    assert _group_records(group, results) == "\n".join(want) + "\n"
    assert _group_records([[5, None, "bad"]], None) == _dumps({"index": 5, "error": "bad"}) + "\n"
    # every problem answered: the one-format path, or json's quoting where an answer needs escapes
    for answers in (["2", "18", "0"], ["2", 'a"b', "é"], ["1", "\x7f", "x\\y"]):
        group = [[7 + i, "p", None] for i in range(3)]
        results = Results(answers, np.array([1, 2, 3]), np.array([True, True, True]))
        want = [_dumps({"index": 7 + i, "output": a, "steps": i + 1, "converged": True}) for i, a in enumerate(answers)]
        assert _group_records(group, results) == "\n".join(want) + "\n"


def test_ndjson_lines_decoded_in_bulk_are_what_json_loads_gives():
    """_entries decodes a chunk's lines at once where each is a plain JSON string, and line by line
    otherwise: either way each entry is _entry's (json.loads of the line's UTF-8)."""
    from sead.serve.ndjson import _entries, _entry

    lines = [b'"12+30"', b'"0110 3"', b'"\xc3\xa9+1"', b'"a\x7fb"', b'""', b'"1\\n2"', b'"a\\"b"', b"12",
             b'"12', b'12"', b'"x"y"', b'"\xff"', b'"tab\there"', b'["1+1"]', b'"\\u00e9"']
    for k in range(len(lines)):
        for chunk in (lines[k:k + 1], lines[:k + 1], lines[k:], [lines[0], lines[k], lines[1]]):
            assert _entries(3, chunk) == [_entry(3 + i, raw) for i, raw in enumerate(chunk)], chunk
