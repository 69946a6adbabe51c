"""Attacks on `sead serve` (issue #23): each one refused with a clear JSON error or cut off by a
bound, with no hang, no traceback in the log, no work left running for a client that left, and
/healthz answering afterwards.

Servers run in this process (uvicorn in a thread, on a free loopback port, with a Runtime of
their own) except where the process itself is under test (SIGTERM). Waits are on conditions the
server exposes (its connections and tasks, the service's in-flight work, metrics), each with a
deadline; raw sockets play the clients that httpx will not (slow, idle, leaving mid-request).
"""
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from types import SimpleNamespace

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from sead import Runtime  # noqa: E402
from sead.runtime import make_engine  # noqa: E402
from sead.runtime.model_file import default_model_path, load_step_model  # noqa: E402
from sead.runtime.tasks import MAX_STEPS  # noqa: E402
from sead.serve import ndjson  # noqa: E402
from sead.serve.app import create_app  # noqa: E402
from sead.serve.config import ServeConfig  # noqa: E402
from sead.serve.http_server import make_server  # noqa: E402

pytestmark = pytest.mark.skipif(not all(default_model_path(m).is_file() for m in ("rule110", "multiplication")),
                                reason="shipped models not built")
LONG = "0110 1000000"  # a million generations of a 4-cell ring: seconds of one worker, 4 x 10^6 cell-steps
WIDE = "0" * 500_000 + " 5"  # 2.5 x 10^6 cell-steps, answered at once
NDJSON = {"content-type": "application/x-ndjson"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting, after {seconds} s, for {what}")
        time.sleep(0.005)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def errors(self) -> list[str]:
        """Every record at ERROR or with a traceback: an attack must leave none."""
        return [self.format(r) for r in self.records if r.levelno >= logging.ERROR or r.exc_info]


@contextlib.contextmanager
def serving(model: str = "rule110", engine="ort", **limits):
    """A real server in a thread, on a Runtime of one worker; yields what a test inspects."""
    runtime = Runtime(model, engine, workers=1)
    config = ServeConfig(model=model, engine="ort", port=free_port(), **{"drain_seconds": 0.5, **limits})
    app = create_app(config, runtime)
    server = make_server(config, app, log_level="warning")
    logs = Records()  # after make_server: uvicorn's logging set-up replaces its loggers' handlers
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "sead.serve", "asyncio")]
    for logger in loggers:
        logger.addHandler(logs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, "the server to start")
    service = app.state.service
    s = SimpleNamespace(url=f"http://127.0.0.1:{config.port}", port=config.port, service=service, runtime=runtime,
                        server=server, logs=logs, loop=server.servers[0].get_loop())
    try:
        yield s
        assert httpx.get(s.url + "/healthz").json() == {"status": "ok"}
        until(lambda: not server.server_state.tasks, "every request task to end")
        assert logs.errors() == []
    finally:
        server.should_exit = True
        thread.join(30)
        for logger in loggers:
            logger.removeHandler(logs)


def requests(s, mode: str, outcome: str) -> float:
    """sead_requests_total{mode, outcome}. The counter must exist (a missing metric fails, never
    reads as 0); a pair it has not counted yet is 0, as Prometheus has no sample for it until then."""
    assert mode in ("json", "ndjson"), mode
    (family,) = [m for m in s.service.metrics.registry.collect() if m.name == "sead_requests"] or [None]
    assert family is not None and family.type == "counter", "no sead_requests counter in the service's registry"
    return next((sample.value for sample in family.samples if sample.name == "sead_requests_total"
                 and sample.labels == {"mode": mode, "outcome": outcome}), 0.0)


def tasks(s) -> int:
    """asyncio tasks alive on the server's loop (the server's own, and any a request left behind)."""
    async def count():
        return len(asyncio.all_tasks())
    return asyncio.run_coroutine_threadsafe(count(), s.loop).result(10)


def connect(s, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=20)
    if data:
        sock.sendall(data)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds it)."""
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    sock.close()
    return out


def post_head(path: str, ctype: str, length: int | None = None) -> bytes:
    size = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\n{size}\r\n\r\n".encode()


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One response with a Content-Length: (status, its JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"!"  # a closed connection: no head will come
        assert not data.endswith(b"!"), data
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-response"
        body += chunk
    return int(head.split()[1]), json.loads(body)


def json_body(reply: bytes) -> dict:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


# -- operator caps: steps, work, in-flight work, line length ------------------------------------

def test_max_steps_is_capped_by_the_operator_and_is_rule110s_default():
    with serving(max_steps=1000) as s:
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 2000000000"], "max_steps": 2**31 - 1})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        assert r.json()["message"] == "max_steps: 2,147,483,647 is more than this server allows (1,000; sead serve --max-steps)"
        assert httpx.post(s.url + "/v1/solve?max_steps=1001", json={"problems": ["0110 3"]}).status_code == 422
        r = httpx.post(s.url + "/v1/solve?max_steps=2147483647", content=b'"0110 3"\n', headers=NDJSON)
        assert r.status_code == 422
        # no max_steps: a generation count above the operator's cap is an invalid problem
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 1001", "0110 2"]})
        assert r.status_code == 400 and [e["index"] for e in r.json()["invalid"]] == [0]
        assert "at most 1,000 are run" in r.json()["invalid"][0]["reason"]
        solved = s.runtime.stats()["problems_solved"]
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 1000"]})
        assert r.status_code == 200 and r.json()["results"][0]["steps"] == 1000
        assert s.runtime.stats()["problems_solved"] == solved + 1  # nothing refused was solved
    with serving(max_steps=MAX_STEPS) as s:
        # the service takes the runtime's own bound, not a 32-bit one
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 3"], "max_steps": MAX_STEPS})
        assert r.status_code == 200 and r.json()["results"][0]["output"] == "1110"
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 3"], "max_steps": MAX_STEPS + 1})
        assert r.status_code == 422


def test_work_per_request_and_in_flight_are_bounded_and_a_client_that_leaves_frees_its_share():
    with serving(max_request_work=5_000_000, max_inflight_work=6_000_000) as s:
        r = httpx.post(s.url + "/v1/solve", json={"problems": [LONG, "0110 300000"]})  # 5.2 x 10^6
        assert r.status_code == 413 and r.json()["error"] == "too_much_work"
        assert "5,200,000 cell-steps" in r.json()["message"] and "--max-request-work" in r.json()["message"]
        r = httpx.post(s.url + "/v1/solve", content=f'"0110 3"\n"{LONG}"\n"0110 300000"\n'.encode(), headers=NDJSON)
        records = [json.loads(line) for line in r.text.splitlines()]
        assert records[-1]["fatal"] is True and "--max-request-work" in records[-1]["error"]

        body = json.dumps({"problems": [LONG]}).encode()
        first = connect(s, post_head("/v1/solve", "application/json", len(body)) + body)
        until(lambda: s.service.inflight_work == 4_000_000, "the first request to be admitted")
        r = httpx.post(s.url + "/v1/solve", json={"problems": [WIDE]})  # 2.5 x 10^6 more: past 6 x 10^6
        assert r.status_code == 429 and r.json()["error"] == "queue_full" and r.headers["retry-after"] == "1"
        first.close()  # the client leaves: its work is cancelled and its share given back
        until(lambda: requests(s, "json", "disconnected") == 1, "the request to count as disconnected")
        until(lambda: s.service.inflight_work == 0 and s.runtime.stats()["queued_problems"] == 0,
              "the runtime to drop the problem")
        r = httpx.post(s.url + "/v1/solve", json={"problems": [WIDE]}, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["output"] == "0" * 500_000
        assert requests(s, "json", "ok") == 1


def test_the_line_bound_is_the_models_over_http():
    # multiplication was checked exact up to its verified size n: no line past 4 n + 64 characters is read
    limit = 4 * load_step_model(default_model_path("multiplication")).metadata.verified_size + 64
    with serving("multiplication") as s:
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["12*34", "1" * (limit + 1) + "*2"]})
        assert r.status_code == 413 and r.json()["index"] == 1 and f"the limit is {limit}" in r.json()["message"]
        r = httpx.post(s.url + "/v1/solve", content=b'"12*34"\n"' + b"1" * (limit + 1000) + b'*2"\n', headers=NDJSON)
        records = [json.loads(line) for line in r.text.splitlines()]
        assert records[0]["output"] == "408" and records[1]["fatal"] is True and str(limit) in records[1]["error"]


# -- clients that leave --------------------------------------------------------------------------

def test_a_json_client_that_leaves_mid_body_counts_as_disconnected_without_a_traceback():
    with serving() as s:
        sock = connect(s, post_head("/v1/solve", "application/json", 1000) + b'{"problems"')
        until(lambda: len(s.server.server_state.tasks) == 1, "the request to start")
        sock.close()
        until(lambda: requests(s, "json", "disconnected") == 1, "the request to count as disconnected")
        assert requests(s, "json", "ok") == 0


def test_an_ndjson_client_that_leaves_has_its_stream_cancelled_and_leaks_no_task():
    with serving() as s:
        idle = tasks(s)
        sock = connect(s, post_head("/v1/solve", ndjson.NDJSON) + b"%x\r\n%s\r\n" % (len(LONG) + 3, f'"{LONG}"\n'.encode()))
        until(lambda: s.service.inflight_work == 4_000_000, "the stream's problem to be admitted")
        sock.close()
        until(lambda: requests(s, "ndjson", "disconnected") == 1, "the stream to count as disconnected")
        until(lambda: s.service.inflight_work == 0 and s.runtime.stats()["queued_problems"] == 0,
              "the runtime to drop the problem")
        until(lambda: tasks(s) == idle, "the stream's tasks to end")


# -- NDJSON lines that break a JSON decoder ------------------------------------------------------

def test_every_ndjson_line_error_is_a_record_and_the_stream_ends():
    lines = [b"[" * 100_000, b'{"a":' * 50_000, b'"' + b"[" * 100_000 + b'"', b'"\xff\xfe"', b"1e999999",
             b'"unterminated', b"\x00\x01", b'"0110 3"']
    with serving() as s:
        idle = tasks(s)
        r = httpx.post(s.url + "/v1/solve", content=b"\n".join(lines) + b"\n", headers=NDJSON, timeout=30)
        records = [json.loads(line) for line in r.text.splitlines()]
        assert [rec["index"] for rec in records] == list(range(len(lines)))
        assert all("JSON string" in rec["error"] for rec in records[:2] + records[3:7]), records
        assert "error" in records[2] and records[-1]["output"] == "1110"
        assert not any(rec.get("fatal") for rec in records)
        until(lambda: tasks(s) == idle, "the stream's tasks to end")
        assert requests(s, "ndjson", "ok") == 1


def test_a_failure_inside_the_body_reader_still_ends_the_stream(monkeypatch):
    def broken(start, raws):
        raise RuntimeError("a bug")

    with serving() as s:
        monkeypatch.setattr(ndjson, "_entries", broken)
        r = httpx.post(s.url + "/v1/solve", content=b'"0110 3"\n', headers=NDJSON, timeout=30)
        assert json.loads(r.text.splitlines()[-1]) == {"index": 0, "error": "internal error reading the body: "
                                                       "RuntimeError", "fatal": True}
        assert requests(s, "ndjson", "internal") == 1
        assert len(s.logs.errors()) == 1 and "a bug" in s.logs.errors()[0]  # a bug is logged, with its traceback
        s.logs.records.clear()


class Breakable:
    """An engine that can be made to fail, as a broken device or library would."""

    def __init__(self, engine):
        self.engine, self.broken = engine, False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def start(self, *args, **kwargs):
        if self.broken:
            raise RuntimeError("the device fell over")
        return self.engine.start(*args, **kwargs)


def test_an_engine_failure_is_a_500_json_error_and_a_last_record():
    engines = []
    with serving(engine=lambda step: engines.append(Breakable(make_engine(step, "ort"))) or engines[0]) as s:
        engines[0].broken = True
        r = httpx.post(s.url + "/v1/solve", json={"problems": ["0110 3"]})
        assert r.status_code == 500 and r.json() == {"error": "internal", "message": "internal error: RuntimeError: "
                                                                                     "the device fell over"}
        r = httpx.post(s.url + "/v1/solve", content=b'"0110 3"\n', headers=NDJSON)
        assert [json.loads(line) for line in r.text.splitlines()] == [
            {"error": "internal error: RuntimeError: the device fell over", "fatal": True}]
        assert len(s.logs.errors()) == 2 and all("the device fell over" in e for e in s.logs.errors())
        s.logs.records.clear()
        engines[0].broken = False
        assert httpx.post(s.url + "/v1/solve", json={"problems": ["0110 3"]}).json()["results"][0]["output"] == "1110"


# -- slow and idle clients -----------------------------------------------------------------------

def test_idle_and_slow_header_connections_are_capped_and_closed():
    with serving(max_connections=8, header_timeout=0.5) as s:
        socks = [connect(s) for _ in range(20)]
        until(lambda: len(s.server.server_state.connections) == 8, "the first 8 connections")
        replies = [read_to_end(sock) for sock in socks[8:]]  # past the cap: 503 at once
        assert all(b" 503 " in r and json_body(r)["error"] == "unavailable" for r in replies), replies
        assert len(s.server.server_state.connections) <= 8
        slow = socks[0]
        slow.sendall(b"POST /v1/solve HTTP/1.1\r\nhost: x\r\n")  # and never the rest
        reply = read_to_end(slow)  # closed after header_timeout, with a 408
        assert b" 408 " in reply and json_body(reply)["error"] == "timeout", reply
        assert [read_to_end(sock) for sock in socks[1:8]] == [b""] * 7  # idle: closed as well, without a word
        until(lambda: not s.server.server_state.connections, "every connection to close")


def test_headers_past_the_byte_limit_are_refused():
    with serving(max_header_bytes=4096) as s:
        sock = connect(s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 8000 + b"\r\n")
        reply = read_to_end(sock)
        assert b" 431 " in reply and json_body(reply)["error"] == "too_large"


def test_slow_bodies_time_out():
    with serving(body_timeout=0.5, keep_alive_timeout=0.2) as s:
        sock = connect(s, post_head("/v1/solve", "application/json", 100) + b'{"problems": [')
        reply = read_to_end(sock)
        assert b" 408 " in reply and json_body(reply)["error"] == "timeout"
        sock = connect(s, post_head("/v1/solve", ndjson.NDJSON) + b'9\r\n"0110 3"\n\r\n')
        reply = read_to_end(sock)  # the stream ends, then the idle connection is closed
        records = [json.loads(line) for line in reply.replace(b"\r", b"").split(b"\n") if line.startswith(b"{")]
        assert records[0]["output"] == "1110"
        assert records[-1]["fatal"] is True and "nothing arrived for 0.5 s" in records[-1]["error"]
        assert requests(s, "json", "timeout") == 1 and requests(s, "ndjson", "timeout") == 1


# -- bodies of many small problems ---------------------------------------------------------------

def test_too_many_problems_are_refused_before_the_body_is_parsed():
    body = b'{"problems": [' + b",".join([b'"1"'] * 3_000_000) + b"]}"  # 11 MiB; 180 MB of strings if parsed
    head = post_head("/v1/solve", "application/json", len(body))
    with serving() as s:
        replies = []

        def client():
            with connect(s, head) as sock:
                sock.sendall(body)  # no copy of it in this process: what is traced is the server's
                replies.append(read_response(sock))

        tracemalloc.start()
        try:
            clients = [threading.Thread(target=client) for _ in range(2)]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [r[0] for r in replies] == [413, 413]
        assert replies[0][1] == {"error": "too_large", "message": "more than 100000 problems; the limit is per request"}
        assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated"


def test_large_bodies_at_once_are_bounded():
    body = json.dumps({"problems": ["0" * 1100 + " 1"] * 1000}).encode()  # 1.1 MiB
    with serving(max_large_bodies=1) as s:
        held = connect(s, post_head("/v1/solve", "application/json", len(body)) + body[:len(body) - 10])
        until(lambda: s.service.large_bodies == 1, "the first large body to take its slot")
        r = httpx.post(s.url + "/v1/solve", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 429 and r.json()["error"] == "busy"
        held.close()
        until(lambda: s.service.large_bodies == 0, "the slot to be given back")
        r = httpx.post(s.url + "/v1/solve", content=body, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 1000


# -- SIGTERM -------------------------------------------------------------------------------------

def test_sigterm_stops_work_still_running_after_the_drain_and_answers_503():
    """Two requests of 10^8 generations each (hours of work on any machine, so still running when
    the drain ends, however fast the machine) are stopped, answered 503 and a fatal record."""
    port, drain, endless = free_port(), 1.0, "0110 100000000"
    proc = subprocess.Popen([sys.executable, "-m", "sead.cli", "serve", "--model", "rule110", "--engine", "ort",
                             "--port", str(port), "--drain-seconds", str(drain), "--max-steps", "100000000",
                             "--max-request-work", "400000000", "--max-inflight-work", "800000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, replies = f"http://127.0.0.1:{port}", {}
    try:
        until(lambda: proc.poll() is not None or b"ready" in _get(url + "/readyz"), "the server to be ready", 120)
        assert proc.poll() is None, proc.stderr.read()
        clients = [threading.Thread(target=lambda: replies.update(json=httpx.post(
                       url + "/v1/solve", json={"problems": [endless]}, timeout=120))),
                   threading.Thread(target=lambda: replies.update(ndjson=httpx.post(
                       url + "/v1/solve", content=f'"{endless}"\n'.encode(), headers=NDJSON, timeout=120)))]
        for t in clients:
            t.start()
        until(lambda: _metric(url + "/metrics", "sead_inflight_work") == 800_000_000, "both requests to be in flight")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(120) == 0  # a bound, not a speed: the replies below show the work was stopped
        for t in clients:
            t.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err and "ERROR" not in err, err
    assert replies["json"].status_code == 503 and replies["json"].json() == {
        "error": "unavailable", "message": "the server is shutting down; this request was stopped unfinished"}
    records = [json.loads(line) for line in replies["ndjson"].text.splitlines()]
    assert records[-1] == {"error": "the server is shutting down; this request was stopped unfinished", "fatal": True}


def _metric(url: str, name: str) -> float:
    """An unlabelled metric's value on /metrics; a metric that is not there fails the test."""
    text = httpx.get(url).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name} on {url}:\n{text}")


def _get(url: str) -> bytes:
    try:
        return httpx.get(url).content
    except httpx.TransportError:
        return b""
