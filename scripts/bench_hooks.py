"""Do the hook points cost anything when unused? The plain forward and a decode step, timed for
this checkout and a baseline checkout (the code before the hooks), in one run.

    git worktree add /tmp/before <commit before the hooks>
    /work/venv/bin/python scripts/bench_hooks.py --baseline /tmp/before [--rounds 5]

Each (checkout, round) is a fresh worker process with that checkout first on sys.path; the
parent alternates them, round after round, so both see the same machine load. A worker loads
the random 124M-shaped test model (weights/test-models/gpt2-shaped, built if missing), warms
up, then times

  prefill 1x128   model(ids) on 128 random tokens (median of 7)
  decode b1       one KV-cached step at context ~130, forward + last logits (median of 32 steps)
  run_with_cache  the 1x128 forward recording every point (this checkout only: what asking costs)

with BLAS limited to one thread (less noise on a shared machine). Reported: the median over
rounds of each worker's median, this checkout / baseline, and the range of that ratio round by
round: the machine's noise, to read the median against.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(code_root: str, model_dir: str) -> dict:
    sys.path.insert(0, code_root)
    import numpy as np
    from threadpoolctl import threadpool_limits

    from gpt2np import GPT2
    from gpt2np.kv_cache import KVCache

    threadpool_limits(1)
    model = GPT2.from_pretrained(model_dir)
    cfg = model.config
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(1, 128))
    mask = np.ones_like(ids)

    def median_time(fn, n):
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out = {"prefill": median_time(lambda: model(ids), 7)}
    cache = KVCache(cfg.n_layer, 1, cfg.n_head, 128 + 40, cfg.head_dim, model.dtype)
    positions = np.arange(128)[None]
    model.forward(ids, mask, positions, cache, logits_to_keep=1)
    steps, full_mask, token = [], np.ones((1, 128 + 40), dtype=np.int64), ids[:, -1:]
    for step in range(36):
        length = 128 + step + 1
        t0 = time.perf_counter()
        logits = model.forward(token, full_mask[:, :length], np.array([[length - 1]]), cache, logits_to_keep=1).logits
        token = logits[:, -1].argmax(-1)[:, None]
        steps.append(time.perf_counter() - t0)
    out["decode"] = statistics.median(steps[4:])
    if hasattr(model, "run_with_cache"):
        out["run_with_cache"] = median_time(lambda: model.run_with_cache(ids), 5)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=False, help="a checkout of the code before the hooks")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    if not args.baseline:
        p.error("--baseline CHECKOUT is required")
    sys.path.insert(0, str(ROOT))
    from gpt2np.tools.random_model import build_test_model

    model_dir = str(
        build_test_model("gpt2-shaped", os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))
    )
    checkouts = {"this": str(ROOT), "baseline": str(Path(args.baseline).resolve())}
    results = {name: [] for name in checkouts}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for r in range(args.rounds):
        order = list(checkouts) if r % 2 == 0 else list(checkouts)[::-1]
        for name in order:
            cmd = [sys.executable, __file__, "--worker", checkouts[name], model_dir]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"gpt2-shaped (124M), 1 BLAS thread, {args.rounds} rounds, median of worker medians")
    for task, label in (("prefill", "prefill 1x128"), ("decode", "decode b1 step")):
        this = statistics.median(x[task] for x in results["this"])
        base = statistics.median(x[task] for x in results["baseline"])
        ratios = sorted(x[task] / y[task] for x, y in zip(results["this"], results["baseline"]))  # round by round
        print(
            f"  {label:<16} this {this * 1e3:8.2f} ms   baseline {base * 1e3:8.2f} ms   this/baseline {this / base:.3f}"
            f"   (per round {ratios[0]:.3f} .. {ratios[-1]:.3f})"
        )
    rwc = statistics.median(x["run_with_cache"] for x in results["this"])
    print(f"  run_with_cache   this {rwc * 1e3:8.2f} ms   (recording every point of the 1x128 forward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
