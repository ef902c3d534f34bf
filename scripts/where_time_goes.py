"""Where a forward's time goes, component by component, and one experiment that did not pay.

    python scripts/where_time_goes.py prefill 1 1024     # a 1x1024 prefill (last logits)
    python scripts/where_time_goes.py decode 8 900       # a decode step at batch 8, context 900
    python scripts/where_time_goes.py split-attention 8  # decode attention split over 2 threads

The first two time each call of linear, attention, LayerNorm, GELU and the output layer inside a
real forward of the random 124M-shaped model (weights/test-models/gpt2-shaped, built if absent),
2 BLAS threads, median over repeats. "split-attention" times a decode step's attention products
over 12 layers of a cold KV cache at context 900, each layer after a GEMM (as in a real step),
done by NumPy as one stack, or split over two Python threads, with BLAS at 2 threads and at 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def components(kind: str, batch: int, length: int, repeats: int) -> None:
    import gpt2np.attention as attention
    import gpt2np.model as model
    from gpt2np.tools.random_model import build_test_model
    from scripts.bench.impl_gpt2np import Gpt2np  # the bench's own prefill / decode-state code

    impl = Gpt2np(threads=2)
    impl.load(build_test_model("gpt2-shaped", ROOT / "weights" / "test-models"))
    rng = np.random.default_rng(0)
    spent: dict[str, float] = defaultdict(float)

    def timed(module, name: str, label: str) -> None:
        fn = getattr(module, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[label] += time.perf_counter() - t
            return out

        setattr(module, name, wrapper)

    timed(model, "linear", "linear (MLP)")
    timed(attention, "linear", "linear (attention's c_attn, c_proj)")
    timed(attention, "attention_in_blocks", "attention (scores, softmax, weighted sum)")
    timed(model, "layer_norm", "LayerNorm")
    timed(model, "gelu", "GELU")
    timed(model, "lm_head", "output layer")

    if kind == "prefill":
        ids = rng.integers(0, impl.vocab_size, (batch, length))

        def run() -> None:
            impl.forward(ids, logits_to_keep=1)
    else:  # one row prefilled to `length` tokens, repeated to `batch` rows (as the bench does), then steps
        ids = rng.integers(0, impl.vocab_size, (1, length))
        state = impl.repeat_rows(impl.prefill(ids, length + 1), batch)

        def run() -> None:
            state["cache"].length = state["length"] = length  # the same step again, at the same context
            impl.step(state)

    run()  # warm up: pages in, buffers allocated
    totals, per_call = [], defaultdict(list)
    for _ in range(repeats):
        spent.clear()
        t = time.perf_counter()
        run()
        totals.append(time.perf_counter() - t)
        for label, s in spent.items():
            per_call[label].append(s)
    print(f"{kind} batch {batch}, {'tokens' if kind == 'prefill' else 'context'} {length}; median of {repeats}, ms")
    for label, values in sorted(per_call.items(), key=lambda kv: -np.median(kv[1])):
        print(f"  {label:44s} {np.median(values) * 1e3:9.1f}")
    print(f"  {'whole forward':44s} {np.median(totals) * 1e3:9.1f}")


def split_attention(batch: int, context: int = 900, n_layer: int = 12, n_head: int = 12, head_dim: int = 64) -> None:
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((n_layer, batch, n_head, context, head_dim), dtype=np.float32)
    values = rng.standard_normal((n_layer, batch, n_head, context, head_dim), dtype=np.float32)
    weights = [rng.standard_normal((768, 2304), dtype=np.float32) for _ in range(4)]
    x = rng.standard_normal((batch, 768), dtype=np.float32)
    q = rng.standard_normal((batch, n_head, 1, head_dim), dtype=np.float32)
    flush = np.ones(60_000_000, np.float32)  # 240 MB read between runs: the cache starts cold
    pool = ThreadPoolExecutor(1)

    def products(layer: int, rows: slice) -> None:
        scores = q[rows] @ keys[layer, rows].swapaxes(-1, -2)  # [b, H, 1, T]
        _ = scores @ values[layer, rows]  # [b, H, 1, D]

    def stacked(layer: int) -> None:
        products(layer, slice(None))

    def split(layer: int) -> None:
        half = pool.submit(products, layer, slice(0, batch // 2))
        products(layer, slice(batch // 2, batch))
        half.result()

    def run(fn, threads: int) -> float:
        times = []
        with threadpool_limits(threads):
            for _ in range(7):
                flush.sum()
                t = time.perf_counter()
                for layer in range(n_layer):
                    _ = x @ weights[layer % 4]  # a GEMM first, as in a real step: BLAS's threads wake
                    fn(layer)
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    mb = 2 * keys.nbytes / 1e6
    print(f"decode attention products, batch {batch}, context {context}, {n_layer} layers ({mb:.0f} MB of K and V)")
    for threads in (2, 1):
        base = run(lambda layer: None, threads)  # the GEMMs alone, subtracted below
        for name, fn in (("one stack", stacked), ("split over 2 threads", split)):
            print(f"  BLAS {threads} thread(s), {name:22s} {(run(fn, threads) - base) * 1e3:7.1f} ms")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["prefill", "decode", "split-attention"])
    p.add_argument("batch", type=int, help="batch size")
    p.add_argument("length", type=int, nargs="?", default=900, help="prompt length (prefill) or context (decode)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.kind == "split-attention":
        split_attention(args.batch)
    else:
        components(args.kind, args.batch, args.length, args.repeats)  # 2 BLAS threads, as Gpt2np(threads=2) sets
    return 0


if __name__ == "__main__":
    sys.exit(main())
