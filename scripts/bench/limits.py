"""This machine's limits, measured with NumPy (the same OpenBLAS gpt2np uses), and the floors
they put under each figure.

  bandwidth  GB/s of a float32 matrix-vector product over a matrix as large as the model's
             weights (far larger than the caches), in both layouts, and of a raw read (sdot,
             np.sum). The best is "the" bandwidth. A decode step must read every weight, and
             the KV cache, once: its floor is those bytes / bandwidth (or, with a batch, the
             FLOPs / the peak GEMM rate, if that is larger).
  GEMM       GFLOP/s of the exact float32 matmuls of a forward over M tokens (M = 128 ... 1024),
             in gpt2np's layouts. The prefill floor is the time of those matmuls, plus the
             causal half of attention's two matmuls at the peak rate: LayerNorm, GELU and
             softmax count as free, so no implementation can beat it.
"""

from __future__ import annotations

from pathlib import Path

from .measure import blas_info, limit_blas_threads, median, timed
from .tasks import DECODE_CONTEXTS, PREFILL_LENGTHS, PROMPT_LEN, weight_bytes_and_flops

GEMM_ROWS = tuple(sorted({PROMPT_LEN, *PREFILL_LENGTHS, 8 * PROMPT_LEN}))


def machine_limits(model: str, threads: int, iters: str) -> dict:
    import numpy as np

    from gpt2np.config import GPT2Config

    _limits = limit_blas_threads(threads)
    cfg = GPT2Config.from_json_file(Path(model) / "config.json")
    C, F, V = cfg.n_embd, cfg.mlp_width, cfg.vocab_size
    nbytes = weight_bytes_and_flops(cfg)["decode_bytes"]
    rng = np.random.default_rng(0)
    reps = 5 if iters == "full" else 3

    # Bandwidth: one matrix as large as the weights, random, so every page is really there.
    rows = nbytes // (4 * C)
    A = np.empty((rows, C), dtype=np.float32)
    for i in range(0, rows, 65536):
        A[i : i + 65536] = rng.standard_normal((min(65536, rows - i), C), dtype=np.float32)
    x_c, x_r = np.ones(C, np.float32), np.ones(rows, np.float32)
    flat = A.reshape(-1)

    # The noqa F821s: pyflakes sees the `del` below, but every function here has run before it.
    def gbps(fn):
        return A.nbytes / median(timed(fn, 1, reps)) / 1e9  # noqa: F821

    bandwidth = {
        "gemv_rows": gbps(lambda: A @ x_c),  # noqa: F821  [N, C] @ [C]: one dot product per row
        "gemv_cols": gbps(lambda: x_r @ A),  # noqa: F821  [N] @ [N, C]: gpt2np's x @ W layout
        "sdot": gbps(lambda: np.dot(flat, flat)),  # noqa: F821  raw read through BLAS
        "np_sum": gbps(lambda: flat.sum()),  # noqa: F821  raw read, NumPy's own single-threaded loop
    }
    del A, flat, x_r

    # GEMM: the matmuls of a forward of M tokens ([in, out] weights; the output layer is
    # x @ wte.T with wte stored [vocab, C]).
    shapes = {"c_attn": (C, 3 * C), "attn.c_proj": (C, C), "c_fc": (C, F), "mlp.c_proj": (F, C)}
    wte = rng.standard_normal((V, C), dtype=np.float32)
    gemm = {}
    for M in GEMM_ROWS:
        entry, blocks = {}, 0.0
        for name, (k, n) in shapes.items():
            a, b = rng.standard_normal((M, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
            t = median(timed(lambda: a @ b, 1, reps))  # noqa: B023  timed() calls it in this iteration
            entry[name] = {"shape": [M, k, n], "s": t, "gflops": 2 * M * k * n / t / 1e9}
            blocks += cfg.n_layer * t
        a = rng.standard_normal((M, C), dtype=np.float32)
        t = median(timed(lambda: a @ wte.T, 1, reps if M <= PROMPT_LEN else 2))  # noqa: B023  (as above)
        entry["lm_head"] = {"shape": [M, C, V], "s": t, "gflops": 2 * M * C * V / t / 1e9}
        gemm[str(M)] = {"matmuls": entry, "blocks_s": blocks, "lm_head_s": t}

    # What NumPy itself charges where BLAS cannot help, for the "NumPy floor" (numpy_floors):
    # exp, per float32 element, in cache (softmax needs one per causal score, GELU one per MLP
    # activation); and a decode step's matmuls with 1 and 8 rows (BLAS's small-M GEMM), over
    # as many distinct matrices as the model has, so that they come from memory as in a real
    # step (one matrix timed again and again would sit in the cache).
    e = rng.standard_normal(1 << 16, dtype=np.float32)
    e_out = np.empty_like(e)
    exp_ns = median(timed(lambda: np.exp(e, out=e_out), 5, 20 * reps)) / e.size * 1e9
    matrices = [rng.standard_normal(kn, dtype=np.float32) for _ in range(cfg.n_layer) for kn in shapes.values()]
    step = {}
    for M in (1, 8):
        xs = {k: rng.standard_normal((M, k), dtype=np.float32) for k in (C, F)}
        blocks = median(timed(lambda: [xs[w.shape[0]] @ w for w in matrices], 1, reps))  # noqa: B023, F821  (as above)
        a = xs[C]
        step[str(M)] = {"blocks_s": blocks, "lm_head_s": median(timed(lambda: a @ wte.T, 1, 2 * reps))}  # noqa: B023
    del matrices
    # And a decode step's attention products at the longest context, as NumPy does them: one
    # [1, D] @ [D, T] and one [1, T] @ [T, D] per sequence and head: a stack of small matrix-
    # vector products, each too short for BLAS to stream at the full bandwidth (about 10 GB/s
    # against 18.6 for one long product, measured), over n_layer distinct caches so that they
    # come from memory. Softmax and the rest are left out: free, as everywhere in these floors.
    H, D, T = cfg.n_head, cfg.head_dim, max(DECODE_CONTEXTS)

    def attention_products(M: int) -> float:
        caches = [rng.standard_normal((2, M, H, T, D), dtype=np.float32) for _ in range(cfg.n_layer)]  # [k | v]
        q, p = rng.standard_normal((M, H, 1, D), dtype=np.float32), rng.standard_normal((M, H, 1, T), dtype=np.float32)
        return median(timed(lambda: [(q @ kv[0].swapaxes(-1, -2), p @ kv[1]) for kv in caches], 1, reps))

    for M in (1, 8):
        step[str(M)]["attention_s"] = attention_products(M)
    return {
        "impl": "machine",
        "bandwidth_gbps": bandwidth,
        "gemm": gemm,
        "exp_ns": exp_ns,
        "decode_gemm": step,
        "blas": blas_info(),
    }


def prefill_floors(machine: dict, cfg) -> dict:
    """Aggregated machine numbers -> the floor (seconds) of each prefill figure, by name."""
    peak = machine["gemm_peak_gflops"] * 1e9
    gemm = machine["gemm"]
    C, L = cfg.n_embd, cfg.n_layer

    def attention_flops(batch, T):  # q k^T and p v over the causal lower triangle
        return batch * L * 2 * 2 * C * T * (T + 1) / 2

    def prefill(batch, T, all_logits):
        g = gemm[str(T)]
        lm_head = g["lm_head_s"] if all_logits else 2 * C * cfg.vocab_size * batch / peak
        return batch * g["blocks_s"] + (batch * lm_head if all_logits else lm_head) + attention_flops(batch, T) / peak

    out = {"prefill": prefill(1, PROMPT_LEN, True), "forward8": prefill(8, PROMPT_LEN, True)}
    out |= {f"prefill_last_{T}": prefill(1, T, False) for T in PREFILL_LENGTHS}
    out["prefill8_long"] = prefill(8, max(PREFILL_LENGTHS), False)
    return out


def decode_floor(machine: dict, cfg, decode_bytes: int, matmul_params: int, batch: int, context: int) -> float:
    """A decode step reads every weight and the whole KV cache once, and does 2 FLOPs per
    parameter per row: the slower of bytes / bandwidth and FLOPs / peak GEMM rate."""
    kv_bytes = 2 * cfg.n_layer * batch * context * cfg.n_embd * 4  # the cache's keys and values
    flops = 2 * batch * (matmul_params + 2 * cfg.n_layer * context * cfg.n_embd)  # weights, then q k^T and p v
    return max(
        (decode_bytes + kv_bytes) / (machine["bandwidth_best_gbps"] * 1e9), flops / (machine["gemm_peak_gflops"] * 1e9)
    )


def numpy_floors(machine: dict, cfg) -> dict:
    """Tighter floors for a NumPy implementation (seconds): the prefill floor plus the
    exponentials NumPy must take at its measured rate (softmax: one per causal score; GELU:
    one per MLP activation), and for a decode step at the longest context (batch 1 and 8), the step's
    matmuls timed alone at that many rows plus its attention products timed alone (a stack of
    one-row products over the KV cache, which reads it no faster than one core can). No NumPy code can
    go below these on this machine; a target needing less is out of its reach."""
    if "exp_ns" not in machine:
        return {}
    exp_s, L, H, F = machine["exp_ns"] * 1e-9, cfg.n_layer, cfg.n_head, cfg.mlp_width
    floors = prefill_floors(machine, cfg)
    T = max(PREFILL_LENGTHS)
    exps = L * (H * T * (T + 1) / 2 + T * F)  # 1 sequence of T tokens
    out = {"prefill_last_1024": floors[f"prefill_last_{T}"] + exps * exp_s, "exps_1024": exps}
    out["prefill8_long"] = floors["prefill8_long"] + 8 * exps * exp_s
    context, bandwidth = max(DECODE_CONTEXTS), machine["bandwidth_best_gbps"] * 1e9
    for batch in (1, 8):
        g = machine["decode_gemm"][str(batch)]
        kv_bytes = 2 * L * batch * context * cfg.n_embd * 4  # the cache's keys and values, read once
        # the attention products as NumPy runs them (measured), never below the cache's bytes / bandwidth
        attention = max(g.get("attention_s", 0.0), kv_bytes / bandwidth)
        out[f"decode{batch}"] = g["blocks_s"] + g["lm_head_s"] + attention
    return out
