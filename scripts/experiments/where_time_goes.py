"""Where a forward's time goes, component by component, and experiments that did not pay.

    python scripts/experiments/where_time_goes.py prefill 1 1024       # a 1x1024 prefill (last logits)
    python scripts/experiments/where_time_goes.py decode 8 900         # a decode step at batch 8, context 900
    python scripts/experiments/where_time_goes.py split-attention 8    # decode attention split over 2 threads
    python scripts/experiments/where_time_goes.py weights-in-memory 1  # decode, weights mapped or copied into memory
    python scripts/experiments/where_time_goes.py transposed-weights 1 # decode, weights stored [in, out] or [out, in]
    python scripts/experiments/where_time_goes.py products 8           # a forward's products alone at 8 rows, each way
    python scripts/experiments/where_time_goes.py page-faults 1 128    # malloc tuned (gpt2np/heap.py) or left alone
    python scripts/experiments/where_time_goes.py blas-threads 8       # decode, BLAS at 2 threads or 1
    python scripts/experiments/where_time_goes.py own-threads 8        # decode split over our own 2 threads, BLAS at 1

The first two time each call of linear, attention, LayerNorm, GELU and the output layer inside a
real forward of the random 124M-shaped model (weights/test-models/gpt2-shaped, built if absent;
$GPT2NP_TEST_MODELS instead of weights/test-models, as for the bench),
2 BLAS threads, median over repeats. "split-attention" times a decode step's attention products
over 12 layers of a cold KV cache at context 900, each layer after a GEMM (as in a real step),
done by NumPy as one stack, or split over two Python threads, with BLAS at 2 threads and at 1;
and the same with einsum, which uses no BLAS and releases the GIL: if its split gains only when
BLAS has 1 thread, what holds the second core is BLAS's idle worker, not a lock inside BLAS.

The last two time decode steps (batch B at context 150 and 900) of two copies of the model in one
process, taking turns and alternating which goes first (a fixed order favoured the second by up to
10% here): "weights-in-memory" compares the memory-mapped checkpoint (how much of it the kernel
maps with 2 MB pages is printed: that depends on how the file came into the page cache) with the
same weights copied into ordinary memory, which NumPy asks to back with 2 MB pages;
"transposed-weights" compares GPT-2's [in, out] linear weights with the same weights stored
[out, in] (what a torch Linear holds; the same [in, out] view of them), both copied into memory;
"blas-threads" runs one model with BLAS at 2 threads and at 1; "own-threads" compares BLAS at 2
threads with BLAS at 1 and the step split over two Python threads instead (linear layers and the
output layer by columns, decode attention by heads).

"products B" times the matrix products of a forward at B rows, nothing else: the 48 linear
products of the 12 blocks, their weights read from memory one after the other as in a real step
(340 MB, far beyond the caches), and the output layer over wte, each in several ways: GPT-2's
[in, out] weights as stored (X @ W), the same weights stored [out, in] (X @ Wt.T, a transposed
view, as transposed-weights runs it) and (Wt @ X.T).T, which hands OpenBLAS the big matrix as its
first operand (and [in, out] again, 512 columns at a time, each panel small enough for the L2
cache); the output layer as gpt2np's lm_head, x @ wte.T and (wte @ x.T).T. The fastest way
of each is NumPy's floor for those products with this BLAS kernel: no layout of the weights
makes a NumPy forward's products faster than that.

"page-faults B T" runs a BxT prefill (last logits) and a decode step at batch B, context T, in
fresh processes with glibc's malloc tuned as gpt2np/heap.py does and left alone
(GPT2NP_TUNE_MALLOC=1 / 0), 6 processes each, taking turns, and prints each one's minor page
faults per forward (the kernel zero-filling a page malloc had given back), median time and peak
RSS, then the medians over the processes. The faults are the robust figure; a forward's time
moves by up to ~10% from one process to the next whatever the setting. T < n_positions (1024):
the decode step sits at position T.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


MODELS = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))  # as the bench


def _load_124m_shaped():
    from gpt2np.tools.random_model import build_test_model
    from scripts.bench.impl_gpt2np import Gpt2np

    impl = Gpt2np(threads=2)
    impl.load(build_test_model("gpt2-shaped", MODELS))
    return impl


def components(kind: str, batch: int, length: int, repeats: int) -> None:
    import gpt2np.attention as attention
    import gpt2np.layers as layers
    import gpt2np.model as model

    impl = _load_124m_shaped()  # the bench's own prefill / decode-state code
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

    # Each function where it is looked up: mlp (layers.py) calls layers.linear and layers.gelu;
    # self_attention (attention.py) its own imported linear; GPT2.norm and forward model.py's.
    timed(layers, "linear", "linear (MLP)")
    timed(attention, "linear", "linear (attention's c_attn, c_proj)")
    timed(attention, "attention_in_blocks", "attention (scores, softmax, weighted sum)")
    timed(model, "layer_norm", "LayerNorm")
    timed(layers, "gelu", "GELU")
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

    def products(layer: int, rows: slice) -> None:  # BLAS: one call per sequence and head
        scores = q[rows] @ keys[layer, rows].swapaxes(-1, -2)  # [b, H, 1, T]
        _ = scores @ values[layer, rows]  # [b, H, 1, D]

    def products_einsum(layer: int, rows: slice) -> None:  # NumPy's own loops: no BLAS, the GIL released
        scores = np.einsum("bhd,bhtd->bht", q[rows, :, 0], keys[layer, rows])  # [b, H, T]
        _ = np.einsum("bht,bhtd->bhd", scores, values[layer, rows])  # [b, H, D]

    def stacked(layer: int, fn=products) -> None:
        fn(layer, slice(None))

    def split(layer: int, fn=products) -> None:
        half = pool.submit(fn, layer, slice(0, batch // 2))
        fn(layer, slice(batch // 2, batch))
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
        variants = (
            ("one stack", stacked),
            ("split over 2 threads", split),
            ("einsum, one thread", lambda layer: stacked(layer, products_einsum)),
            ("einsum, split over 2", lambda layer: split(layer, products_einsum)),
        )
        for name, fn in variants:
            print(f"  BLAS {threads} thread(s), {name:22s} {(run(fn, threads) - base) * 1e3:7.1f} ms")


def _with_arrays(impl, fn, linear_weight=None):
    """The model again, every weight array replaced by fn(array) (a linear layer's weight by
    linear_weight(array) when given)."""
    import dataclasses

    from gpt2np import GPT2
    from gpt2np.weights import Linear

    def swap(node):
        if node is None:
            return None
        if isinstance(node, np.ndarray):
            return fn(node)
        if isinstance(node, list):
            return [swap(n) for n in node]
        if isinstance(node, Linear) and linear_weight is not None:
            return Linear(linear_weight(node.weight), fn(node.bias))
        return dataclasses.replace(node, **{f.name: swap(getattr(node, f.name)) for f in dataclasses.fields(node)})

    w = impl.model.weights
    wte = fn(w.wte)  # tied: lm_head is the same array
    weights = dataclasses.replace(swap(dataclasses.replace(w, wte=None, lm_head=None)), wte=wte, lm_head=wte)
    other = copy.copy(impl)  # the same bench wrapper (prefill, step), another model inside
    other.model = GPT2(impl.model.config, weights)
    return other


@contextlib.contextmanager
def _own_threads(on: bool):
    """While on: linear layers and the output layer split their columns, decode attention its
    heads, over two Python threads (this one and a pool's), the way BLAS's own threads would."""
    if not on:
        yield
        return
    import gpt2np.attention as attention
    import gpt2np.model as model

    pool = ThreadPoolExecutor(1)
    real_linear, real_attention, real_lm_head = model.linear, attention.attention_in_blocks, model.lm_head

    def linear(x, layer):
        rows, w = x.reshape(-1, x.shape[-1]), layer.weight  # [N, n_in], [n_in, n_out]
        half = w.shape[1] // 32 * 16
        out = np.empty((rows.shape[0], w.shape[1]), rows.dtype)
        left = pool.submit(lambda: np.add(rows @ w[:, :half], layer.bias[:half], out=out[:, :half]))
        np.add(rows @ w[:, half:], layer.bias[half:], out=out[:, half:])
        left.result()
        return out.reshape(*x.shape[:-1], w.shape[1])

    def attention_in_blocks(q, k, v, mask, scale, budget=None):
        if q.shape[2] != 1:  # not a decode step
            return real_attention(q, k, v, mask, scale, budget)
        out, half = np.empty_like(q), q.shape[1] // 2

        def heads(h: slice) -> None:
            out[:, h] = real_attention(q[:, h], k[:, h], v[:, h], mask, scale, budget)

        left = pool.submit(heads, slice(0, half))
        heads(slice(half, None))
        left.result()
        return out

    def lm_head(x, weight):
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] != 1:
            return real_lm_head(x, weight)
        out, half = np.empty((1, weight.shape[0]), x.dtype), weight.shape[0] // 2
        left = pool.submit(lambda: np.matmul(rows, weight[:half].T, out=out[:, :half]))
        np.matmul(rows, weight[half:].T, out=out[:, half:])
        left.result()
        return out.reshape(*x.shape[:-1], weight.shape[0])

    model.linear = attention.linear = linear
    attention.attention_in_blocks, model.lm_head = attention_in_blocks, lm_head
    try:
        yield
    finally:
        model.linear = attention.linear = real_linear
        attention.attention_in_blocks, model.lm_head = real_attention, real_lm_head
        pool.shutdown()


def decode_ab(kind: str, batch: int, repeats: int) -> None:
    """Decode steps of two variants, taking turns; a variant is (model, BLAS threads, own threads)."""
    impl = _load_124m_shaped()
    if kind == "weights-in-memory":
        variants = {"memory-mapped": (impl, 2, False), "copied into memory": (_with_arrays(impl, np.array), 2, False)}
    elif kind == "transposed-weights":
        transposed = _with_arrays(impl, np.array, lambda a: np.ascontiguousarray(a.T).T)
        variants = {
            "[in, out], in memory": (_with_arrays(impl, np.array), 2, False),
            "[out, in], in memory": (transposed, 2, False),
        }
        del impl
    elif kind == "blas-threads":
        variants = {"BLAS at 2 threads": (impl, 2, False), "BLAS at 1 thread": (impl, 1, False)}
    else:  # own-threads
        variants = {"BLAS at 2 threads": (impl, 2, False), "2 Python threads, BLAS at 1": (impl, 1, True)}
    rng = np.random.default_rng(0)
    for context in (150, 900):
        ids = rng.integers(0, 50257, (1, context))
        states = {name: m.repeat_rows(m.prefill(ids, context + 1), batch) for name, (m, _, _) in variants.items()}
        times: dict[str, list[float]] = defaultdict(list)
        for r in range(repeats):
            for name in list(variants)[:: 1 if r % 2 else -1]:
                (m, threads, own), state = variants[name], states[name]
                steps = []
                with threadpool_limits(threads), _own_threads(own):
                    for _ in range(4):
                        state["cache"].length = state["length"] = context  # the same step again
                        t = time.perf_counter()
                        m.step(state)
                        steps.append(time.perf_counter() - t)
                times[name].append(float(np.median(steps)))
        cells = ", ".join(f"{name} {np.median(times[name]) * 1e3:.1f} ms" for name in variants)
        print(f"decode step, batch {batch}, context {context}, median of {repeats} turns: {cells}")
    if kind == "weights-in-memory":
        path = MODELS / "gpt2-shaped" / "model.safetensors"
        from scripts.bench.measure import mapped_pages

        pages = mapped_pages(path)
        mb = "not mapped" if pages is None else f"{pages['pmd'] >> 20} MB of {pages['resident'] >> 20} MB resident"
        print(f"the mapped checkpoint in 2 MB pages: {mb}")


def _in_panels(x: np.ndarray, w: np.ndarray, width: int) -> np.ndarray:
    """x @ w a panel of `width` columns of w at a time (each panel [n_in, width] fits in L2)."""
    out = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    for c in range(0, w.shape[1], width):
        np.matmul(x, w[:, c : c + width], out=out[:, c : c + width])
    return out


def products(batch: int, repeats: int) -> None:
    from gpt2np.layers import lm_head

    impl = _load_124m_shaped()
    w = impl.model.weights
    linears = [layer for b in w.h for layer in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
    stored = [np.array(layer.weight) for layer in linears]  # [in, out], in memory (as the other layouts)
    transposed = [np.ascontiguousarray(layer.weight.T) for layer in linears]  # [out, in]
    wte = np.array(w.wte)  # [vocab, C]
    rng = np.random.default_rng(0)
    xs = {n: rng.standard_normal((batch, n), dtype=np.float32) for n in {a.shape[0] for a in stored}}
    ways = {
        "linear: X @ W, W [in, out] (gpt2np)": lambda: [xs[a.shape[0]] @ a for a in stored],
        "linear: X @ Wt.T, Wt [out, in]": lambda: [xs[a.shape[1]] @ a.T for a in transposed],
        "linear: (Wt @ X.T).T, Wt [out, in]": lambda: [
            np.ascontiguousarray((a @ xs[a.shape[1]].T).T) for a in transposed
        ],
        "linear: X @ W in panels of 512 columns": lambda: [_in_panels(xs[a.shape[0]], a, 512) for a in stored],
        "output layer: lm_head(x, wte) (gpt2np)": lambda: lm_head(xs[wte.shape[1]], wte),
        "output layer: x @ wte.T": lambda: xs[wte.shape[1]] @ wte.T,
        "output layer: (wte @ x.T).T": lambda: np.ascontiguousarray((wte @ xs[wte.shape[1]].T).T),
    }
    times: dict[str, list[float]] = defaultdict(list)
    with threadpool_limits(2):
        for r in range(repeats):
            for name in list(ways)[:: 1 if r % 2 else -1]:
                t = time.perf_counter()
                ways[name]()
                times[name].append(time.perf_counter() - t)
    from threadpoolctl import threadpool_info

    kernels = ", ".join(sorted({str(i.get("architecture")) for i in threadpool_info() if i["user_api"] == "blas"}))
    print(f"a forward's products alone at {batch} rows, median of {repeats} turns, 2 threads, OpenBLAS {kernels}:")
    for name in ways:
        print(f"  {name:44s} {np.median(times[name]) * 1e3:8.2f} ms")
    best = {
        part: min(np.median(t) for name, t in times.items() if name.startswith(part)) for part in ("linear", "output")
    }
    print(f"  NumPy's floor (the fastest way of each)      {sum(best.values()) * 1e3:8.2f} ms")


TURNS = 6  # fresh processes per setting: between processes a forward's time moves by up to ~10%


def page_faults(batch: int, length: int, repeats: int) -> None:
    import subprocess

    print(
        f"prefill {batch}x{length} (last logits) and a decode step at batch {batch}, context {length}; "
        f"median of {repeats}, each in a fresh process"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own knobs would interfere
    figures: dict[str, list[list[float]]] = defaultdict(list)
    for turn in range(TURNS):
        for tune in ("0", "1") if turn % 2 else ("1", "0"):
            out = subprocess.run(
                [sys.executable, __file__, "_page-faults", str(batch), str(length), "--repeats", str(repeats)],
                env=env | {"GPT2NP_TUNE_MALLOC": tune},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"  malloc {'tuned' if tune == '1' else 'as glibc sets it'}:{'' if tune == '1' else ' '} {out}")
            figures[tune].append([float(v) for v in re.findall(r"([0-9.]+) (?:ms|faults|MB)", out)])
    names = ["prefill ms", "prefill faults", "decode ms", "decode faults", "peak RSS MB"]
    medians = {tune: np.median(np.array(rows), axis=0) for tune, rows in figures.items()}
    print(f"median of the {TURNS} processes each (tuned / as glibc sets it):")
    print("  " + ", ".join(f"{n} {a:.1f} / {b:.1f}" for n, a, b in zip(names, medians["1"], medians["0"])))


def _page_faults_one(batch: int, length: int, repeats: int) -> None:
    """page_faults' worker: this process's figures on one line."""
    import resource

    impl = _load_124m_shaped()
    ids = np.random.default_rng(0).integers(0, impl.vocab_size, (batch, length))
    state: dict = {}

    def prefill() -> None:
        impl.forward(ids, logits_to_keep=1)

    def step() -> None:
        if not state:  # made after the prefills are timed: as in a process that has only run those
            state.update(impl.repeat_rows(impl.prefill(ids[:1], length + 1), batch))
        state["cache"].length = state["length"] = length  # the same step again
        impl.step(state)

    cells = []
    for name, run in (("prefill", prefill), ("decode step", step)):
        run()  # warm up
        faults, times = [], []
        for _ in range(repeats):
            before, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        cells.append(f"{name} {np.median(times) * 1e3:.1f} ms, {int(np.median(faults))} faults")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'; '.join(cells)}; peak RSS {rss:.0f} MB")  # page_faults reads the numbers back


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiments = ["split-attention", "weights-in-memory", "transposed-weights", "blas-threads", "own-threads"]
    p.add_argument("kind", choices=["prefill", "decode", "products", "page-faults", "_page-faults", *experiments])
    p.add_argument("batch", type=int, help="batch size")
    p.add_argument("length", type=int, nargs="?", default=900, help="prompt length (prefill) or context (decode)")
    p.add_argument("--repeats", type=int, help="default: 5 (components), 9 (the two-model experiments)")
    args = p.parse_args(argv)
    if args.kind == "split-attention":
        split_attention(args.batch)
    elif args.kind in ("page-faults", "_page-faults"):
        if args.length >= 1024:
            p.error(f"page-faults: T={args.length}, but the decode step sits at position T, so T must be below 1024")
        (page_faults if args.kind == "page-faults" else _page_faults_one)(args.batch, args.length, args.repeats or 9)
    elif args.kind == "products":
        products(args.batch, args.repeats or 9)
    elif args.kind in experiments:
        decode_ab(args.kind, args.batch, args.repeats or 9)
    else:
        components(args.kind, args.batch, args.length, args.repeats or 5)  # 2 BLAS threads, as Gpt2np(threads=2) sets
    return 0


if __name__ == "__main__":
    sys.exit(main())
