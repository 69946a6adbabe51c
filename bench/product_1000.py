#!/usr/bin/env python3
"""The 1,000-digit product of bench/gpu_check.py's products section, solved on the CPU engine:
does `ort` give the answer `ort-cuda` gave? Writes bench/results/multiplication_1000_ort_cpu.json.

    python bench/product_1000.py        # about 14 minutes on 2 cores
"""
import numpy as np, time, json
from sead.runtime import Runtime
from sead.runtime.tasks import get_task
from sead.runtime.tasks.base import random_digits
rng = np.random.default_rng(5)
warm = f"{random_digits(rng, 50)}*{random_digits(rng, 50)}"
lines = {d: f"{random_digits(rng, d)}*{random_digits(rng, d)}" for d in (200, 400, 1000)}
task = get_task("multiplication")
t = time.perf_counter()
with Runtime("multiplication", "ort", allow_unverified_sizes=True) as rt:
    r = rt.solve([lines[1000]])[0]
want = task.answer(task.parse(lines[1000]))
a, w = (r.answer or "")[::-1], want[::-1]
wrong = [i for i in range(max(len(a), len(w))) if a[i:i+1] != w[i:i+1]]
out = {"digits": 1000, "engine": "ort", "seconds": round(time.perf_counter() - t, 1), "steps": r.steps, "converged": r.converged,
       "exact": r.answer == want, "wrong_digits": len(wrong), "first_wrong_digit": wrong[0] if wrong else None}
print(json.dumps(out)); open("bench/results/multiplication_1000_ort_cpu.json", "w").write(json.dumps(out))
