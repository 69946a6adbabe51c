#!/usr/bin/env python3
"""The decision margins of the shipped rules on the states export's check visits, and how often
each runtime form (cf, cl, lookup) rounds a decision differently from the PyTorch step there.

    python bench/margins.py [--out bench/results/margins.json]

A form may differ from PyTorch only where a decision's margin is within float rounding
(export/verify.py); this records the smallest margin seen on real cells, per shipped model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

from sead.export.verify import verify_export
from sead.runtime.model_file import default_model_path
from sead.runtime.tasks import TASKS
from sead.train.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "margins.json")
    args = ap.parse_args()
    rows = []
    for name in TASKS:
        pt, step = default_model_path(name, ".pt"), default_model_path(name)
        if not (pt.is_file() and step.is_file()):
            continue
        model, _ = load_checkpoint(pt)
        report = verify_export(model, onnx.load(str(step)).SerializeToString())
        forms = [r for r in report if r["what"].startswith("runtime forms")]
        margins = [r["min_margin"] for r in forms if r["min_margin"] is not None]
        rows.append({"model": name, "states_checked": len(forms), "min_margin": min(margins),
                     "form_flips": sum(r["rounding_flips"] for r in forms),
                     "forms": sorted({f for r in forms for f in r["flips_by_form"]})})
        print(f"{name}: smallest margin {min(margins):.3g} over {len(forms)} states, "
              f"{rows[-1]['form_flips']} decisions rounded differently by the runtime's forms")
    args.out.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
