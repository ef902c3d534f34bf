"""What the "every weight is finite" check costs at load, measured in fresh processes.

    python scripts/experiments/finite_check_cost.py [--model FOLDER] [--repeats 5]

For each repeat, three fresh processes load the model and run one 1x128 forward:
  first load   an empty gpt2np cache: the check reads every weight (max and min of each tensor);
  remembered   the same cache again: the check's stamp (path, size, mtime, dtype) spares it;
  no check     the check switched off (weights.check_finite replaced), for comparison.
Prints the medians of "load" (GPT2.from_pretrained) and "load + first forward". Default model:
the random 124M-shaped test model (gpt2np.tools.random_model, built on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys, time
import numpy as np
import gpt2np.weights
if sys.argv[2] == "off":
    gpt2np.weights.check_finite = lambda params, source: None
from gpt2np import GPT2
ids = np.random.default_rng(0).integers(0, 50257, size=(1, 128))
start = time.perf_counter()
model = GPT2.from_pretrained(sys.argv[1], verify=False)
loaded = time.perf_counter()
model(ids)
print(json.dumps({"load": loaded - start, "load_forward": time.perf_counter() - start}))
"""


def run(folder: Path, mode: str, cache: str) -> dict:
    env = {**os.environ, "GPT2NP_CACHE": cache, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(folder), mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from gpt2np.tools.random_model import build_test_model

        args.model = build_test_model("gpt2-shaped", ROOT / "weights" / "test-models")
    results = {"first load": [], "remembered": [], "no check": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            results["first load"].append(run(args.model, "on", cache))
            results["remembered"].append(run(args.model, "on", cache))
            results["no check"].append(run(args.model, "off", cache))
    print(
        f"{args.model}, {args.repeats} repeats, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':<12} {'load (median)':>14} {'load + first forward':>22}")
    for name, runs in results.items():
        load = statistics.median(r["load"] for r in runs)
        both = statistics.median(r["load_forward"] for r in runs)
        print(f"{name:<12} {load:>12.3f} s {both:>20.3f} s")


if __name__ == "__main__":
    main()
