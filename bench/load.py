"""Load on `sead serve` over loopback, and the library's own throughput on the same problems.

    python bench/load.py                       # the full run: 30 s per load, ~2 minutes in all
    python bench/load.py --seconds 5           # a quick check of the script
    python bench/load.py --table               # print the load table (docs/serving.md) from the results JSON

It starts `sead serve` as a subprocess on a free loopback port, then:

  Load 1  CLIENTS concurrent clients (asyncio + aiohttp), each sending requests of PER_REQUEST random
          16-digit additions, for SECONDS: throughput, p50/p99 latency, errors. Every answer is
          checked against Python integers; a wrong one counts as an error.
  Load 2  the same, while LONG_CLIENTS more clients keep 100,000-digit additions in flight (each
          answer checked too). The short requests' p99 should stay within 3x of Load 1's.
  Library the same problems through `Runtime.submit` from CLIENTS threads in this process, for
          SECONDS, after the server has been stopped (SIGTERM; it must exit 0). HTTP throughput
          over this is the "HTTP vs library" ratio (target: at least 0.5).

The clients use aiohttp, not httpx: on the 2-core development machine, httpx's AsyncClient fell
from 284 to 53 requests/s on GET /healthz going from 1 to 64 concurrent connections, where aiohttp
did 1,237; a load generator must not be the bottleneck it measures.

Everything is bounded: each phase stops after SECONDS, every request has a timeout, and the
server is stopped at the end whatever happens. Results go to bench/results/load.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


def additions(rng: random.Random, count: int, digits: int) -> list[tuple[str, str]]:
    """(problem, exact sum) pairs; the sums come from Python integers."""
    out = []
    for _ in range(count):
        a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
        out.append((f"{a}+{b}", str(a + b)))
    return out


def requests_of(pairs: list[tuple[str, str]], per_request: int, count: int, rng: random.Random):
    """`count` ready request bodies, each with the answers it must get back."""
    out = []
    for _ in range(count):
        chosen = rng.sample(pairs, per_request)
        out.append((json.dumps({"problems": [p for p, _ in chosen]}).encode(), [s for _, s in chosen]))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Tally:
    def __init__(self):
        self.latencies: list[float] = []
        self.problems = 0
        self.errors: dict[str, int] = {}
        self.start = self.end = time.perf_counter()  # the clients' own window (a long reply may outlast it)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def report(self) -> dict:
        seconds = self.end - self.start
        return {"requests": len(self.latencies), "problems": self.problems, "seconds": round(seconds, 2),
                "problems_per_s": round(self.problems / seconds, 1),
                "requests_per_s": round(len(self.latencies) / seconds, 1),
                "p50_ms": round(1000 * percentile(self.latencies, 0.50), 2),
                "p99_ms": round(1000 * percentile(self.latencies, 0.99), 2),
                "max_ms": round(1000 * max(self.latencies, default=float("nan")), 2),
                "errors": sum(self.errors.values()), "error_kinds": self.errors}


async def client_loop(session, bodies, tally: Tally, stop: float, rng: random.Random) -> None:
    headers = {"content-type": "application/json"}
    while time.perf_counter() < stop:
        body, want = bodies[rng.randrange(len(bodies))]
        start = time.perf_counter()
        try:
            async with session.post("/v1/solve", data=body, headers=headers) as r:
                status, payload = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            tally.error(type(exc).__name__)
            continue
        tally.latencies.append(time.perf_counter() - start)
        if status != 200:
            tally.error(f"http {status}")
            continue
        got = [x["output"] for x in json.loads(payload)["results"]]
        if got != want:
            tally.error("wrong answer")
            continue
        tally.problems += len(want)
    tally.end = max(tally.end, time.perf_counter())


async def http_load(url: str, bodies, clients: int, seconds: float, long_bodies=(), long_clients: int = 0):
    """-> (short Tally, long Tally)."""
    short, long = Tally(), Tally()
    connector = aiohttp.TCPConnector(limit=clients + long_clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        short.start = long.start = time.perf_counter()
        stop = short.start + seconds
        tasks = [client_loop(session, bodies, short, stop, random.Random(i)) for i in range(clients)]
        tasks += [client_loop(session, long_bodies, long, stop, random.Random(-1 - i)) for i in range(long_clients)]
        await asyncio.gather(*tasks)
        return short, long


def library_load(runtime_kwargs: dict, model: str, engine: str, pairs, per_request: int, threads: int,
                 seconds: float) -> dict:
    """The same kind of work through Runtime.submit from `threads` threads, answers checked."""
    from sead import Runtime

    tally, lock = Tally(), threading.Lock()
    with Runtime(model, engine, **runtime_kwargs) as rt:
        rt.solve([p for p, _ in pairs[:64]])  # warm-up
        stop = time.perf_counter() + seconds

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop:
                chosen = rng.sample(pairs, per_request)
                start = time.perf_counter()
                results = rt.submit([p for p, _ in chosen]).result()
                elapsed = time.perf_counter() - start
                with lock:
                    tally.latencies.append(elapsed)
                    if [r.answer for r in results] == [s for _, s in chosen]:
                        tally.problems += per_request
                    else:
                        tally.error("wrong answer")

        tally.start = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        tally.end = time.perf_counter()
        return tally.report()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str = "addition", engine: str = "ort", serve_args=(), env: dict | None = None,
                 cwd: str | None = None) -> subprocess.Popen:
    """`sead serve` on a loopback port, once it answers /readyz (env: e.g. another commit's sead)."""
    cmd = [sys.executable, "-m", "sead.cli", "serve", "--model", model, "--engine", engine, "--port", str(port),
           *serve_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sead serve exited with {proc.returncode}: {proc.stderr.read().strip()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("sead serve was not ready within 120 s")


def table(load_path: Path, ray_path: Path) -> str:
    """The load table and notes of docs/serving.md, from the results JSON."""
    d, r = json.loads(load_path.read_text()), json.loads(ray_path.read_text())
    c, long = d["config"], d["load2"]["long"]

    def row(name: str, x: dict) -> str:
        return (f"| {name} | {x['problems_per_s']:,.0f} | {x['requests_per_s']:,.0f} | {x['p50_ms']:,.0f} | "
                f"{x['p99_ms']:,.0f} | {x['errors']} |")

    batches = {line.split()[0]: float(line.split()[1]) for line in d["server_batches"]}
    per_batch = batches["sead_batch_problems_sum"] / max(1.0, batches["sead_batch_problems_count"])
    return "\n".join([
        f"| load ({c['clients']} clients × {c['per_request']} problems per request) | problems/s | requests/s "
        "| p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
        row("Load 1: 16-digit additions over HTTP", d["load1"]),
        row(f"Load 2: the same, with {c['long_clients']} clients' {c['long_digits']:,}-digit additions in flight",
            d["load2"]),
        row(f"library: `Runtime.submit` from {d['library']['threads']} threads", d["library"]),
        "",
        f"- **Every answer exact**: {d['load1']['problems'] + d['load2']['problems']:,} short answers over HTTP, "
        f"{long['requests']} answers of {c['long_digits']:,} digits (p50 {long['p50_ms']:,.0f} ms, max "
        f"{long['max_ms']:,.0f} ms), {d['library']['problems']:,} through the library; "
        f"{d['load1']['errors'] + d['load2']['errors'] + long['errors'] + d['library']['errors']} errors.",
        f"- **Short p99 under Load 2**: {d['p99_ratio_load2_vs_load1']}x Load 1's (target: within 3x).",
        f"- **HTTP vs library throughput**: {d['http_vs_library_throughput']} (target: at least 0.5).",
        f"- **Engine batches** during the HTTP loads: {per_batch:.0f} problems per batch on average.",
        f"- **Ray**: {r['lines']:,} lines through `sead run --ray local`: {r['ray']['exact']:,} of "
        f"{r['ray']['answers']:,} answers exact, exit {r['ray']['exit_code']}, {r['ray']['seconds']} s including "
        f"Ray's start (a local `sead run` on the same file: {r['local']['seconds']} s).",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each load (default 30)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent short-request clients (default 64)")
    ap.add_argument("--per-request", type=int, default=32, help="16-digit additions per request (default 32)")
    ap.add_argument("--long-clients", type=int, default=2, help="clients sending 100,000-digit additions in Load 2")
    ap.add_argument("--long-digits", type=int, default=100_000)
    ap.add_argument("--model", default="addition")
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", action="store_true", help="only print the load table from --out and ray.json")
    ap.add_argument("serve_args", nargs="*", help="more `sead serve` options, after --")
    args = ap.parse_args()
    if args.table:
        print(table(args.out, args.out.with_name("ray.json")))
        return

    rng = random.Random(0)
    sys.set_int_max_str_digits(0)
    pairs = additions(rng, 8192, 16)
    bodies = requests_of(pairs, args.per_request, 512, rng)
    long_pairs = additions(rng, 4, args.long_digits)
    long_bodies = [(json.dumps({"problems": [p]}).encode(), [s]) for p, s in long_pairs]

    port = free_port()
    server = start_server(port, args.model, args.engine, args.serve_args)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(http_load(url, bodies, args.clients, min(3.0, args.seconds)))  # warm-up
        short1, _ = asyncio.run(http_load(url, bodies, args.clients, args.seconds))
        short2, long2 = asyncio.run(http_load(url, bodies, args.clients, args.seconds, long_bodies,
                                                  args.long_clients))
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = None
    library = library_load({}, args.model, args.engine, pairs, args.per_request, args.clients, args.seconds)

    load1, load2 = short1.report(), short2.report()
    load2["long"] = long2.report()
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {"seconds": args.seconds, "clients": args.clients, "per_request": args.per_request,
                   "short_digits": 16, "long_clients": args.long_clients, "long_digits": args.long_digits,
                   "model": args.model, "engine": args.engine, "serve_args": args.serve_args,
                   "command": " ".join(["python", "bench/load.py", *sys.argv[1:]])},
        "load1": load1,
        "load2": load2,
        "library": {"threads": args.clients, **library},
        "p99_ratio_load2_vs_load1": round(load2["p99_ms"] / load1["p99_ms"], 2),
        "http_vs_library_throughput": round(load1["problems_per_s"] / library["problems_per_s"], 3),
        "server_exit_code_after_sigterm": exit_code,
        "server_batches": [line for line in metrics.splitlines() if line.startswith("sead_batch_problems_count")
                           or line.startswith("sead_batch_problems_sum")],
    }
    result["checks"] = {
        "no_errors": load1["errors"] == load2["errors"] == load2["long"]["errors"] == library["errors"] == 0,
        "p99_within_3x": result["p99_ratio_load2_vs_load1"] <= 3.0,
        "http_at_least_half_of_library": result["http_vs_library_throughput"] >= 0.5,
        "clean_exit": exit_code == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("load1", "load2", "library", "p99_ratio_load2_vs_load1",
                                             "http_vs_library_throughput", "checks")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
