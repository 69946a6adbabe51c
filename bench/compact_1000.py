#!/usr/bin/env python3
"""One random product of two 1,000-digit numbers (the first 1,000-digit row of
`bench/multiplication_sizes.py --sizes 100,200,400,1000 --problems 4,2,2,1 --families
random,unequal,all_nines,powers_of_ten,zeros`) through each given model, checked against Python's
decimal arithmetic. Writes bench/results/multiplication_compact_1000_seeds_ort_cpu.json.

    python bench/compact_1000.py runs/compact_seed0.onnx runs/compact_seed1.onnx runs/compact_seed2.onnx

(each from `sead export runs/compact_seedN.pt`, the checkpoints `bench/train_run.py multiplication
compact --seed N --save runs/compact_seedN.pt` keeps)
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from sead.runtime import Runtime
from sead.runtime.tasks import get_task

task = get_task("multiplication")
rng = np.random.default_rng(0)
for size, count in zip([100, 200, 400, 1000], [4, 2, 2, 1]):
    for family in ("random", "unequal", "all_nines", "powers_of_ten", "zeros"):
        lines = task.family_lines(family, size, count, rng)
        if (size, family) == (1000, "random"):
            line = lines[0]
rows = []
for model in sys.argv[1:]:
    start = time.perf_counter()
    with Runtime(model, "ort", allow_unverified_sizes=True) as rt:
        r = rt.solve([line])[0]
    rows.append({"model": model, "converged": r.converged, "steps": r.steps,
                 "exact": r.converged and r.answer == task.answer(task.parse(line)),
                 "seconds": round(time.perf_counter() - start, 1)})
    print(json.dumps(rows[-1]), flush=True)
out = Path("bench/results/multiplication_compact_1000_seeds_ort_cpu.json")
out.write_text(json.dumps({"command": "python bench/compact_1000.py " + " ".join(sys.argv[1:]), "digits": 1000,
                           "engine": "ort", "rows": rows}, indent=1) + "\n")
print(f"wrote {out}")
