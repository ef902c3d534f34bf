"""Is one version of gpt2np's code slower than another? Both in one process, taking turns.

    python scripts/experiments/compare_versions.py 19763e5 HEAD           # before and after a change
    python scripts/experiments/compare_versions.py 19763e5 HEAD --rounds 20

Each git revision's `gpt2np/` is exported (git archive) into a temporary folder as the package
`gpt2np_a` / `gpt2np_b` (the package imports itself relatively, so a renamed copy runs as it
is). Both load the same memory-mapped random 124M-shaped model (built under
weights/test-models/gpt2-shaped if absent, as for the bench), so both read the same pages of
the page cache, with the same share in 2 MB pages: between processes that share moves a
decode step by 10% or more, which hides a change of a few percent (the bench's separate
workers showed +10% and -13% on rows this script finds equal). Then, alternating who goes
first, round after round:

    decode b1 and b8 at context 150   median of 20 steps per round (the cache reset to 150 each round)
    prefill 1x128, last logits        one forward per round

and prints the median of the rounds' figures and the ratio b/a. 2 BLAS threads; the OpenBLAS
kernel is whatever the environment gives (run it once more with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset to see the other one). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[2]
CONTEXT, STEPS, PROMPT = 150, 20, 128


def export(rev: str, name: str, into: Path) -> None:
    """gpt2np/ at git revision `rev`, as the package `name` under `into`."""
    archive = subprocess.run(["git", "archive", rev, "gpt2np"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")  # -> into/gpt2np
    (into / "gpt2np").rename(into / name)


class Version:
    """One exported version with its model and a decoding state per batch size."""

    def __init__(self, package: str, folder: Path):
        self.gpt2np = importlib.import_module(package)
        self.kv_cache = importlib.import_module(package + ".kv_cache")
        self.model = self.gpt2np.GPT2.from_pretrained(folder)

    def decoding_state(self, ids: np.ndarray, batch: int) -> dict:
        """ids [1, CONTEXT] prefilled, the cache's row repeated to `batch` rows. (The bench's
        impl_gpt2np.prefill / repeat_rows do the same, but with `gpt2np.kv_cache` itself; here each
        version runs with its own KVCache.)"""
        cfg, room = self.model.config, CONTEXT + STEPS + 1
        one = self.kv_cache.KVCache(cfg.n_layer, 1, cfg.n_head, room, cfg.head_dim, self.model.dtype)
        mask = np.ones((1, room), dtype=np.int64)
        logits = self.model.forward(ids, mask[:, :CONTEXT], np.arange(CONTEXT)[None], one, logits_to_keep=1).logits
        cache = self.kv_cache.KVCache(cfg.n_layer, batch, cfg.n_head, room, cfg.head_dim, self.model.dtype)
        cache.keys[:, :, :, :CONTEXT] = one.keys[:, :1, :, :CONTEXT]  # every row the same prompt
        cache.values[:, :, :, :CONTEXT] = one.values[:, :1, :, :CONTEXT]
        cache.length = CONTEXT
        return {
            "cache": cache,
            "mask": np.ones((batch, room), dtype=np.int64),
            "last": np.repeat(logits[:, -1], batch, 0),
        }

    def decode(self, state: dict) -> float:
        """Median time of STEPS greedy decode steps from context CONTEXT (seconds)."""
        cache, times = state["cache"], []
        cache.length = CONTEXT
        for length in range(CONTEXT + 1, CONTEXT + STEPS + 1):
            next_ids = state["last"].argmax(-1)[:, None]  # [B, 1]
            positions = np.full(next_ids.shape, length - 1, dtype=np.int64)
            start = time.perf_counter()
            out = self.model.forward(next_ids, state["mask"][:, :length], positions, cache, logits_to_keep=1)
            times.append(time.perf_counter() - start)
            state["last"] = out.logits[:, -1]
        return statistics.median(times)

    def prefill(self, ids: np.ndarray) -> float:
        start = time.perf_counter()
        self.model(ids, attention_mask=np.ones_like(ids), logits_to_keep=1)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="git revision of the first version (e.g. the commit before a change)")
    parser.add_argument("b", help="git revision of the second version (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from gpt2np.tools.random_model import build_test_model
    from scripts.experiments.where_time_goes import MODELS

    folder = build_test_model("gpt2-shaped", MODELS)
    limits = threadpool_limits(2)  # noqa: F841 (kept for the whole run)
    kernels = sorted({f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info()})
    with tempfile.TemporaryDirectory() as tmp:
        for name, rev in (("gpt2np_a", args.a), ("gpt2np_b", args.b)):
            export(rev, name, Path(tmp))
        sys.path.insert(0, tmp)
        versions = {"a": Version("gpt2np_a", folder), "b": Version("gpt2np_b", folder)}
        print(f"a = {args.a}, b = {args.b}; {folder}; 2 threads, {', '.join(kernels)}; {args.rounds} rounds")
        ids = np.random.default_rng(0).integers(0, versions["a"].model.config.vocab_size, (1, CONTEXT))
        rows = []
        for batch in (1, 8):
            states = {k: v.decoding_state(ids, batch) for k, v in versions.items()}
            rows.append((f"decode b{batch} at context {CONTEXT} (ms/step)", {k: [] for k in versions}))
            for r in range(args.rounds):
                for k in ("a", "b") if r % 2 else ("b", "a"):
                    rows[-1][1][k].append(versions[k].decode(states[k]))
        rows.append((f"prefill 1x{PROMPT}, last logits (ms)", {k: [] for k in versions}))
        for r in range(2 * args.rounds):
            for k in ("a", "b") if r % 2 else ("b", "a"):
                rows[-1][1][k].append(versions[k].prefill(ids[:, :PROMPT]))
    print(f"{'':40s} {'a':>9s} {'b':>9s}   b/a")
    for label, times in rows:
        a, b = statistics.median(times["a"]) * 1e3, statistics.median(times["b"]) * 1e3
        print(f"{label:40s} {a:9.2f} {b:9.2f} {b / a:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
