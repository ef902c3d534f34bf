"""Benchmark gpt2np against transformers (torch) on the same GPT-2 124M weights.

    /work/venv/bin/python scripts/bench.py                 # full run: 5 repeats, ~10 minutes
    /work/venv/bin/python scripts/bench.py --quick         # 2 repeats, fewer iterations: a fast check
    /work/venv/bin/python scripts/bench.py --tasks decode1,decode8 --repeats 3
    /work/venv/bin/python scripts/bench.py --model path/to/folder --threads 1 --json out.json

The weights: the real GPT-2 124M when it is on this machine (weights/gpt2/ or the Hugging Face
cache, found with gpt2np.hub.resolve_model_files("gpt2", local_files_only=True)); otherwise a
random 124M-shaped model (same shapes, so the same speed) built once under
weights/test-models/gpt2-shaped/, where the tests build it too. --model FOLDER benchmarks any
folder with config.json + model.safetensors.

What is measured (prompt = 128 random token ids, float32, no padding):

  load             GPT2.from_pretrained / GPT2LMHeadModel.from_pretrained, start to usable
                   model, file already in the OS page cache. gpt2np memory-maps the
                   checkpoint, so its load is lazy: the pages are faulted in by the first
                   forward. So we also report "load + first forward" (a 1x128 prefill
                   straight after loading), which is the honest comparison.
  prefill 1x128    model(ids) for one 128-token sequence, logits at every position.
  forward 8x128    the same for a batch of 8.
  decode b1 / b8   one generation step with a KV cache, at context 132..164: the 128-token
                   prompt is prefilled (not timed), 4 warm-up steps, then 32 single-token
                   steps are timed, each forward + argmax of the last logits (3 rounds of
                   this per worker, after one warm-up round). gpt2np: model.forward with a
                   gpt2np.kv_cache.KVCache and last_logits_only=True; transformers: the model
                   called with past_key_values (its DynamicCache) and use_cache=True. Both
                   get the growing attention mask and explicit position ids, as their
                   generate loops do. ms/token is per step (a step makes B tokens);
                   tokens/s = B / step time.
  generate b1 / b8 model.generate(prompt, max_new_tokens=100), greedy, end-of-text
                   disabled so both make exactly 100 tokens per row (gpt2np:
                   eos_token_id=None; transformers: generation_config.eos_token_id=None,
                   do_sample=False, pad_token_id=eos). The process's peak RSS (VmHWM) is
                   taken at the end of this task: load + prefill + 100 steps.

Each (implementation, task) runs in a fresh worker process (this script with --worker), so
one's memory, caches and thread pools never affect the other: the parent runs them in turns,
repeat after repeat, alternating which goes first, and reports the median over repeats of
each worker's median. A worker loads the model, warms up, times the task several times and
prints its numbers as JSON. Threads: every worker gets OPENBLAS_NUM_THREADS, OMP_NUM_THREADS
and MKL_NUM_THREADS = --threads in its environment, plus threadpoolctl's limit (gpt2np) or
torch.set_num_threads (transformers), so both use the same number of cores.

The machine's limits, measured in the same run by a third kind of worker:
  bandwidth  GB/s of a float32 matrix-vector product over a matrix as large as the model's
             weights (far larger than the caches), in both layouts, and of a raw read (sdot,
             np.sum) for comparison. The best of these is "the" bandwidth. A batch-1 decode
             step must read every weight once, so its floor is weight bytes / bandwidth;
             batch 8 reads the same bytes but does 8x the FLOPs, so its floor is the larger
             of that and FLOPs / peak GEMM rate. Also timed: OpenBLAS's GEMVs on the model's
             own matrix shapes and layout (what a b1 step's matmuls cost with no overhead).
  GEMM       GFLOP/s of the exact float32 matmuls of a prefill (128x768 @ 768x2304, ...,
             128x768 @ 768x50257 for the output layer) and of an 8x128 forward. The prefill
             floor is the time of those matmuls alone (attention, LayerNorm, GELU: free).

Output: one table (medians, gpt2np/transformers speedups, each figure against the machine
limit, the issue's targets with PASS/MISS), the BLAS in use (threadpoolctl) and torch's
parallel setup, and a JSON file with every raw number (default bench-results.json in the
repository root, git-ignored). Another busy process ruins a benchmark on 2 cores, so before
each worker we wait (up to --max-wait s) for the machine to be idle, record the CPU time other
processes took while the worker ran, and run it again (up to --retries times) if that was
more than 0.15 of a core; the table warns if disturbed numbers remain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata, util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT_LEN = 128  # prefill / forward / decode context / generate prompt
NEW_TOKENS = 100  # generate
DECODE_STEPS = 32  # timed decode steps per round, from context PROMPT_LEN on
DECODE_WARMUP = 4
SEED = 1234  # the random prompt ids: the same in every worker

TASKS = {  # name: (batch, label)
    "load": (1, "load"),
    "prefill": (1, "prefill 1x128"),
    "forward8": (8, "forward 8x128"),
    "decode1": (1, "decode b1"),
    "decode8": (8, "decode b8"),
    "generate1": (1, "generate b1"),
    "generate8": (8, "generate b8"),
}

# (warmup, iterations) per task inside one worker; --quick uses the second set.
ITERS = {
    "full": {"prefill": (2, 10), "forward8": (1, 4), "decode": (1, 3), "generate": (1, 2)},
    "quick": {"prefill": (1, 3), "forward8": (1, 2), "decode": (1, 1), "generate": (1, 1)},
}

RESULT_MARK = "BENCH-RESULT "  # the worker's JSON line on stdout starts with this


# ----------------------------------------------------------------------------------------
# Small utilities shared by parent and workers
# ----------------------------------------------------------------------------------------


def median(xs):
    return statistics.median(xs) if xs else None


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon, RssFile of this process, in bytes."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak if sys.platform == "darwin" else peak * 1024
    return out


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def prompt_ids(batch: int, length: int, vocab: int):
    import numpy as np

    return np.random.default_rng(SEED).integers(0, vocab, size=(batch, length), dtype=np.int64)


def weight_bytes_and_flops(config) -> dict:
    """What one token costs, from the config: bytes read per decode step (every parameter
    except wpe, of which a step reads one row per token; the tied output layer once) and the
    matmul parameters (each used for 2 FLOPs per token)."""
    from gpt2np.weights import expected_shapes

    n_params = 0
    n_matmul = 0
    for name, shape in expected_shapes(config).items():
        size = 1
        for d in shape:
            size *= d
        if name == "wpe.weight" or (name == "wte.weight" and not config.tie_word_embeddings):
            continue  # a step only gathers one row of these per token
        n_params += size
        if len(shape) == 2:  # block matrices and the output layer (wte when tied, else lm_head)
            n_matmul += size
    return {"decode_bytes": 4 * n_params, "matmul_params": n_matmul}


# ----------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line
# ----------------------------------------------------------------------------------------


def worker_main(args) -> None:
    t0 = time.perf_counter()
    if args.worker == "machine":
        result = machine_worker(args)
    elif args.worker == "gpt2np":
        result = gpt2np_worker(args, t0)
    elif args.worker == "transformers":
        result = transformers_worker(args, t0)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    result["rss"] = proc_status()
    result["worker_wall_s"] = time.perf_counter() - t0
    print(RESULT_MARK + json.dumps(result), flush=True)


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads", "filepath")
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def limit_blas_threads(n: int):
    """OPENBLAS_NUM_THREADS is already in our environment (set by the parent before NumPy
    loaded OpenBLAS); threadpoolctl makes sure, and is what reports it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def gpt2np_worker(args, t0: float) -> dict:
    import numpy as np

    import gpt2np
    from gpt2np import GPT2
    from gpt2np.kv_cache import KVCache

    import_s = time.perf_counter() - t0
    _limits = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the whole run)
    task, it = args.task, ITERS[args.iters]
    res = {"impl": "gpt2np", "task": task, "import_s": import_s, "rss_before_load": proc_status(),
           "versions": {"gpt2np": gpt2np.__version__, "numpy": np.__version__}, "blas": blas_info()}  # fmt: skip

    start = time.perf_counter()
    model = GPT2.from_pretrained(args.model)
    res["load_s"] = time.perf_counter() - start
    cfg = model.config
    batch = TASKS[task][0]
    ids = prompt_ids(batch, PROMPT_LEN, cfg.vocab_size)
    mask = np.ones_like(ids)

    if task == "load":
        start = time.perf_counter()
        logits = model(ids, attention_mask=mask).logits  # faults the mmapped weights in
        res["first_forward_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model(ids, attention_mask=mask)
        res["warm_forward_s"] = time.perf_counter() - start
        assert logits.shape == (1, PROMPT_LEN, cfg.vocab_size) and logits.dtype == np.float32
    elif task in ("prefill", "forward8"):
        res["times"] = timed(lambda: model(ids, attention_mask=mask).logits, *it[task])
        logits = model(ids, attention_mask=mask).logits
        assert logits.shape == (batch, PROMPT_LEN, cfg.vocab_size) and logits.dtype == np.float32
    elif task.startswith("decode"):
        warm_rounds, rounds = it["decode"]
        steps = []
        for r in range(warm_rounds + rounds):
            total = PROMPT_LEN + DECODE_WARMUP + DECODE_STEPS
            cache = KVCache(cfg.n_layer, batch, cfg.n_head, total, cfg.head_dim, model.dtype)
            full_mask = np.ones((batch, total), dtype=np.int64)
            positions = np.broadcast_to(np.arange(PROMPT_LEN), ids.shape)
            logits = model.forward(ids, full_mask[:, :PROMPT_LEN], positions, cache, last_logits_only=True).logits[:, -1]
            for s in range(DECODE_WARMUP + DECODE_STEPS):
                length = PROMPT_LEN + s + 1  # tokens in the cache after this step
                start = time.perf_counter()
                next_ids = logits.argmax(axis=-1)[:, None]  # [B, 1] greedy pick of the previous step
                step_pos = np.full((batch, 1), length - 1, dtype=np.int64)
                out = model.forward(next_ids, full_mask[:, :length], step_pos, cache, last_logits_only=True)
                logits = out.logits[:, -1]
                elapsed = time.perf_counter() - start
                if r >= warm_rounds and s >= DECODE_WARMUP:
                    steps.append(elapsed)
            assert logits.dtype == np.float32
        res["step_times"] = steps
    elif task.startswith("generate"):
        warmup, iters = it["generate"]
        for _ in range(warmup):  # a short run: warms the pages and code paths, not the clock
            model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None)
        res["rss_before_generate"] = proc_status()
        times, out = [], None
        for _ in range(iters):
            start = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, eos_token_id=None)
            times.append(time.perf_counter() - start)
        assert out.shape == (batch, PROMPT_LEN + NEW_TOKENS), out.shape
        res["times"] = times
        res["new_tokens"] = out[:, PROMPT_LEN:].tolist()
        res["kv_cache_bytes"] = 2 * cfg.n_layer * batch * (PROMPT_LEN + NEW_TOKENS) * cfg.n_embd * model.dtype.itemsize
    res["blas_after"] = blas_info()  # OpenBLAS starts its threads lazily: report them in use
    return res


def transformers_worker(args, t0: float) -> dict:
    import numpy as np
    import torch
    import transformers
    from transformers import GPT2LMHeadModel

    import_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    _limits = limit_blas_threads(args.threads)  # noqa: F841  (NumPy's OpenBLAS is loaded here too)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    task, it = args.task, ITERS[args.iters]
    res = {"impl": "transformers", "task": task, "import_s": import_s, "rss_before_load": proc_status(),
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
           "torch": torch_info(), "blas": blas_info()}  # fmt: skip

    start = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    res["load_s"] = time.perf_counter() - start
    res["attn_implementation"] = model.config._attn_implementation
    cfg = model.config
    batch = TASKS[task][0]
    ids = torch.from_numpy(prompt_ids(batch, PROMPT_LEN, cfg.vocab_size))
    mask = torch.ones_like(ids)

    with torch.inference_mode():  # no autograd bookkeeping: the fair setting for inference
        if task == "load":
            start = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask).logits
            res["first_forward_s"] = time.perf_counter() - start
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            res["warm_forward_s"] = time.perf_counter() - start
            assert tuple(logits.shape) == (1, PROMPT_LEN, cfg.vocab_size) and logits.dtype == torch.float32
        elif task in ("prefill", "forward8"):
            res["times"] = timed(lambda: model(input_ids=ids, attention_mask=mask).logits, *it[task])
            logits = model(input_ids=ids, attention_mask=mask).logits
            assert tuple(logits.shape) == (batch, PROMPT_LEN, cfg.vocab_size) and logits.dtype == torch.float32
        elif task.startswith("decode"):
            warm_rounds, rounds = it["decode"]
            steps = []
            for r in range(warm_rounds + rounds):
                total = PROMPT_LEN + DECODE_WARMUP + DECODE_STEPS
                full_mask = torch.ones((batch, total), dtype=torch.int64)
                positions = torch.arange(PROMPT_LEN).expand(batch, -1)
                out = model(input_ids=ids, attention_mask=full_mask[:, :PROMPT_LEN], position_ids=positions, use_cache=True, logits_to_keep=1)
                past, logits = out.past_key_values, out.logits[:, -1]
                for s in range(DECODE_WARMUP + DECODE_STEPS):
                    length = PROMPT_LEN + s + 1
                    start = time.perf_counter()
                    next_ids = logits.argmax(dim=-1)[:, None]
                    step_pos = torch.full((batch, 1), length - 1, dtype=torch.int64)
                    out = model(input_ids=next_ids, attention_mask=full_mask[:, :length], position_ids=step_pos,
                                past_key_values=past, use_cache=True)  # fmt: skip
                    past, logits = out.past_key_values, out.logits[:, -1]
                    elapsed = time.perf_counter() - start
                    if r >= warm_rounds and s >= DECODE_WARMUP:
                        steps.append(elapsed)
                assert past.get_seq_length() == total and logits.dtype == torch.float32
            res["step_times"] = steps
        elif task.startswith("generate"):
            model.generation_config.eos_token_id = None  # exactly NEW_TOKENS tokens, as gpt2np's eos_token_id=None
            settings = dict(attention_mask=mask, do_sample=False, pad_token_id=cfg.eos_token_id, use_cache=True)
            warmup, iters = it["generate"]
            for _ in range(warmup):
                model.generate(ids, max_new_tokens=8, **settings)
            res["rss_before_generate"] = proc_status()
            times, out = [], None
            for _ in range(iters):
                start = time.perf_counter()
                out = model.generate(ids, max_new_tokens=NEW_TOKENS, **settings)
                times.append(time.perf_counter() - start)
            assert tuple(out.shape) == (batch, PROMPT_LEN + NEW_TOKENS), tuple(out.shape)
            res["times"] = times
            res["new_tokens"] = out[:, PROMPT_LEN:].tolist()
    res["blas_after"] = blas_info()
    return res


def torch_info() -> dict:
    import torch

    parallel = torch.__config__.parallel_info()
    backend = next((line.split(":", 1)[1].strip() for line in parallel.splitlines() if "parallel backend" in line), None)
    return {
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "parallel_backend": backend,
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": next((p.split("=", 1)[1] for p in torch.__config__.show().replace(",", " ").split() if p.startswith("BLAS_INFO=")), None),
        "parallel_info": parallel,
    }


def machine_worker(args) -> dict:
    """This machine's limits with NumPy (the same OpenBLAS gpt2np uses)."""
    import numpy as np

    from gpt2np.config import GPT2Config

    _limits = limit_blas_threads(args.threads)  # noqa: F841
    cfg = GPT2Config.from_json_file(Path(args.model) / "config.json")
    C, F, V = cfg.n_embd, cfg.mlp_width, cfg.vocab_size
    nbytes = weight_bytes_and_flops(cfg)["decode_bytes"]
    rng = np.random.default_rng(0)
    reps = 5 if args.iters == "full" else 3

    # Bandwidth. One matrix as large as the weights (far beyond the 32 MB-class L3), so every
    # pass streams it from DRAM; filled with random data, so every page is really there.
    rows = nbytes // (4 * C)
    A = np.empty((rows, C), dtype=np.float32)
    for i in range(0, rows, 65536):
        A[i : i + 65536] = rng.standard_normal((min(65536, rows - i), C), dtype=np.float32)
    x_c, x_r = np.ones(C, np.float32), np.ones(rows, np.float32)
    flat = A.reshape(-1)

    def gbps(fn):
        return A.nbytes / median(timed(fn, 1, reps)) / 1e9

    bandwidth = {
        "gemv_rows": gbps(lambda: A @ x_c),  # [N, C] @ [C]: one dot product per row (BLAS gemv "T" on row-major)
        "gemv_cols": gbps(lambda: x_r @ A),  # [N] @ [N, C]: axpy-like, gpt2np's x @ W layout (gemv "N")
        "sdot": gbps(lambda: np.dot(flat, flat)),  # raw read through BLAS (same array: read once)
        "np_sum": gbps(lambda: flat.sum()),  # raw read, NumPy's own single-threaded loop
    }
    del A, flat, x_r

    # What OpenBLAS's GEMV achieves on the model's own matrix shapes (a decode step at batch 1
    # minus everything else): x @ W over 12 layers of [C,3C], [C,C], [C,F], [F,C] in gpt2np's
    # Conv1D layout, then wte @ x for the output layer; distinct arrays, so nothing stays cached.
    mats = [rng.standard_normal(s, dtype=np.float32) for _ in range(cfg.n_layer) for s in ((C, 3 * C), (C, C), (C, F), (F, C))]
    wte = rng.standard_normal((V, C), dtype=np.float32)
    xs = {n: np.ones(n, np.float32) for n in (C, F)}

    def model_gemvs():
        for m in mats:
            xs[m.shape[0]] @ m
        wte @ xs[C]

    t = median(timed(model_gemvs, 1, reps))
    bandwidth["model_gemvs"] = (sum(m.nbytes for m in mats) + wte.nbytes) / t / 1e9
    gemv_model_s = t
    del mats

    # GEMM: the matmuls of a forward of M tokens, in gpt2np's layouts (Conv1D weights [in, out];
    # the output layer is x @ wte.T with wte stored [vocab, C]).
    shapes = {"c_attn": (C, 3 * C), "attn.c_proj": (C, C), "c_fc": (C, F), "mlp.c_proj": (F, C)}
    gemm = {}
    for M in (PROMPT_LEN, 8 * PROMPT_LEN):
        entry, floor = {}, 0.0
        for name, (k, n) in shapes.items():
            a, b = rng.standard_normal((M, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
            t = median(timed(lambda: a @ b, 2, reps))
            entry[name] = {"shape": [M, k, n], "s": t, "gflops": 2 * M * k * n / t / 1e9}
            floor += cfg.n_layer * t
        a = rng.standard_normal((M, C), dtype=np.float32)
        t = median(timed(lambda: a @ wte.T, 1, reps if M == PROMPT_LEN else 2))
        entry["lm_head"] = {"shape": [M, C, V], "s": t, "gflops": 2 * M * C * V / t / 1e9}
        floor += t
        flops = 2 * M * (cfg.n_layer * sum(k * n for k, n in shapes.values()) + C * V)
        gemm[str(M)] = {"matmuls": entry, "floor_s": floor, "flops": flops, "gflops": flops / floor / 1e9}
    return {"impl": "machine", "bandwidth_gbps": bandwidth, "gemv_model_s": gemv_model_s, "gemm": gemm, "blas": blas_info()}


# ----------------------------------------------------------------------------------------
# The parent: find the model, run the workers in turns, aggregate, print, write JSON
# ----------------------------------------------------------------------------------------


def resolve_model(arg: str | None) -> tuple[Path, str]:
    from gpt2np.errors import GPT2npError
    from gpt2np.hub import resolve_model_files
    from gpt2np.tools.random_model import build_test_model

    if arg:
        files = resolve_model_files(arg, local_files_only=True)
        return files["model.safetensors"].parent, f"{arg}"
    try:
        files = resolve_model_files("gpt2", local_files_only=True)
        # config.json and model.safetensors sit side by side (weights/gpt2/ or a hub snapshot)
        return files["model.safetensors"].parent, "real GPT-2 124M (gpt2)"
    except GPT2npError:
        root = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))
        print(f"real GPT-2 weights not found; using the random 124M-shaped model in {root / 'gpt2-shaped'}", file=sys.stderr)
        return build_test_model("gpt2-shaped", root), "random 124M-shaped (real GPT-2 weights not on this machine)"


def have_transformers() -> bool:
    return util.find_spec("torch") is not None and util.find_spec("transformers") is not None


def version_of(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        pass
    thp = None
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_total": mem, "platform": platform.platform(),
        "python": platform.python_version(), "transparent_hugepage": thp,
        "versions": {p: version_of(p) for p in ("gpt2np", "numpy", "torch", "transformers", "threadpoolctl")},
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOMP_"))},
    }  # fmt: skip


class CpuMonitor:
    """CPU time used by *other* processes: /proc/stat's busy time minus what our workers used.
    The parent itself sleeps in wait(), so it adds nothing."""

    @staticmethod
    def snapshot() -> tuple[float, float]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return 0.0, 0.0
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        steal = fields[7] if len(fields) > 7 else 0
        guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
        busy = sum(fields) - idle - guest
        return busy / hz, steal / hz

    @classmethod
    def busy_cores(cls, seconds: float = 1.0) -> float:
        b0, _ = cls.snapshot()
        time.sleep(seconds)
        b1, _ = cls.snapshot()
        return (b1 - b0) / seconds


BUSY_CORES = 0.15  # other processes using more than this share of a core: the run is disturbed


def wait_until_idle(max_wait: float, threshold: float = BUSY_CORES) -> float:
    """Wait (up to max_wait s) until other processes use less than `threshold` of a core.
    Returns the load seen last."""
    deadline = time.monotonic() + max_wait
    load = CpuMonitor.busy_cores(0.5)
    while load > threshold and time.monotonic() < deadline:
        load = CpuMonitor.busy_cores(1.0)
    return load


def run_worker(kind: str, task: str | None, model_dir: Path, args) -> dict:
    """Run one worker; run it again (up to --retries times) if another process took a
    significant share of the CPU meanwhile. The discarded attempts stay in the JSON."""
    attempts = []
    for _ in range(1 + max(0, args.retries)):
        result = run_worker_once(kind, task, model_dir, args)
        attempts.append(result)
        if "error" in result or result["monitor"]["other_load_cores"] <= BUSY_CORES:
            break
    best = min(attempts, key=lambda r: r["monitor"]["other_load_cores"])  # the quietest attempt
    best["monitor"]["attempts"] = len(attempts)
    if len(attempts) > 1:
        best["discarded_attempts"] = [{"monitor": a["monitor"], "error": a.get("error")} for a in attempts if a is not best]
    return best


def run_worker_once(kind: str, task: str | None, model_dir: Path, args) -> dict:
    import resource

    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--model", str(model_dir),
           "--threads", str(args.threads), "--iters", "quick" if args.quick else "full"]  # fmt: skip
    if task:
        cmd += ["--task", task]
    env = dict(os.environ)
    # Set before the child's NumPy/torch load their BLAS and OpenMP runtimes: the clean way.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from a timed process
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    idle_before = wait_until_idle(args.max_wait) if args.max_wait > 0 else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = CpuMonitor.snapshot()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - start
    busy1, steal1 = CpuMonitor.snapshot()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_MARK)), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        print(f"  ! {kind} {task or ''} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        result = {"impl": kind, "task": task, "error": tail or f"exit {proc.returncode}"}
    else:
        result = json.loads(line[len(RESULT_MARK) :])
    result["monitor"] = {
        "wall_s": wall,
        "worker_cpu_s": child_cpu,
        "other_load_cores": max(0.0, (busy1 - busy0) - child_cpu) / wall,
        "steal_cores": (steal1 - steal0) / wall,
        "idle_before_cores": idle_before,
    }
    return result


# --- aggregation ---------------------------------------------------------------------------


def task_metrics(r: dict) -> dict:
    """One worker's result -> its figures (one number each, medians within the worker)."""
    if "error" in r:
        return {}
    task, out = r["task"], {}
    batch = TASKS[task][0]
    if task == "load":
        out = {"load_s": r["load_s"], "load_first_forward_s": r["load_s"] + r["first_forward_s"],
               "first_forward_s": r["first_forward_s"], "warm_forward_s": r["warm_forward_s"], "import_s": r["import_s"]}  # fmt: skip
    elif task in ("prefill", "forward8"):
        out = {"time_s": median(r["times"])}
    elif task.startswith("decode"):
        step = median(r["step_times"])
        out = {"step_s": step, "tokens_per_s": batch / step}
    elif task.startswith("generate"):
        t = median(r["times"])
        out = {"time_s": t, "tokens_per_s": batch * NEW_TOKENS / t, "ms_per_step": 1e3 * t / NEW_TOKENS,
               "peak_rss": r["rss"]["VmHWM"]}  # fmt: skip
    return out


def aggregate(results: list[dict]) -> dict:
    """Median over repeats of each figure, with the spread of the per-repeat values."""
    by_key: dict = {}
    for r in results:
        if r.get("impl") == "machine" or "error" in r:
            continue
        for name, value in task_metrics(r).items():
            by_key.setdefault((r["impl"], r["task"], name), []).append(value)
    agg: dict = {}
    for (impl, task, name), values in by_key.items():
        m = median(values)
        agg.setdefault(impl, {}).setdefault(task, {})[name] = {
            "median": m, "min": min(values), "max": max(values), "n": len(values),
            "spread": (max(values) - min(values)) / m if m else None,
        }  # fmt: skip
    return agg


def aggregate_machine(results: list[dict], cost: dict) -> dict:
    ms = [r for r in results if r.get("impl") == "machine" and "error" not in r]
    if not ms:
        return {}
    bw = {k: median([m["bandwidth_gbps"][k] for m in ms]) for k in ms[0]["bandwidth_gbps"]}
    best_bw = max(bw["gemv_rows"], bw["gemv_cols"], bw["sdot"])
    gemm = {}
    for M in ms[0]["gemm"]:
        gemm[M] = {
            "floor_s": median([m["gemm"][M]["floor_s"] for m in ms]),
            "gflops": median([m["gemm"][M]["gflops"] for m in ms]),
            "flops": ms[0]["gemm"][M]["flops"],
            "matmuls": {name: {"shape": e["shape"], "gflops": median([m["gemm"][M]["matmuls"][name]["gflops"] for m in ms])}
                        for name, e in ms[0]["gemm"][M]["matmuls"].items()},  # fmt: skip
        }
    peak_gemm = max(e["gflops"] for g in gemm.values() for e in g["matmuls"].values())
    decode_b1 = cost["decode_bytes"] / (best_bw * 1e9)
    # Batch 8 reads the same weights once per step but does 8x the FLOPs: whichever is slower.
    decode_b8 = max(decode_b1, 2 * 8 * cost["matmul_params"] / (peak_gemm * 1e9))
    return {
        "bandwidth_gbps": bw, "bandwidth_best_gbps": best_bw, "gemm": gemm, "gemm_peak_gflops": peak_gemm,
        "gemv_model_s": median([m["gemv_model_s"] for m in ms]),
        "floors_s": {"decode1": decode_b1, "decode8": decode_b8, "prefill": gemm[str(PROMPT_LEN)]["floor_s"],
                     "forward8": gemm[str(8 * PROMPT_LEN)]["floor_s"]},
    }  # fmt: skip


# --- the table -----------------------------------------------------------------------------


def fmt(v, digits=3):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits - 1}f}" if abs(v) >= 1 else f"{v:.{digits}f}"


def build_report(agg, machine, cost, ckpt_bytes, with_tf) -> tuple[list[str], list[dict]]:
    """-> (table lines, targets)."""

    def get(impl, task, name):
        return agg.get(impl, {}).get(task, {}).get(name, {}).get("median")

    def spread(impl, task, name):
        s = agg.get(impl, {}).get(task, {}).get(name, {}).get("spread")
        return "-" if s is None else f"{100 * s:.0f}%"

    floors = machine.get("floors_s", {})
    rows = []  # figure, np, tf, speedup, vs limit, spread

    def row(label, task, name, scale=1.0, higher_is_better=False, limit=None):
        n, t = get("gpt2np", task, name), get("transformers", task, name)
        if n is None and t is None:
            return  # a task left out with --tasks
        n_s = None if n is None else n * scale
        t_s = None if t is None else t * scale
        if n is None or t is None:
            speed = "-" if with_tf else "n/a"
        else:
            speed = f"{(n / t) if higher_is_better else (t / n):.2f}x"
        rows.append([label, fmt(n_s), fmt(t_s) if with_tf else "n/a", speed, limit or "", f"{spread('gpt2np', task, name)}/{spread('transformers', task, name)}"])

    def vs_floor(value, floor, unit_scale, unit):
        if value is None or not floor:
            return ""
        return f"{value / floor:.2f}x floor ({fmt(floor * unit_scale)} {unit})"

    row("load (s)", "load", "load_s")
    row("load + first forward 1x128 (s)", "load", "load_first_forward_s")
    row("  import of the library (s)", "load", "import_s")
    row("prefill 1x128, all logits (ms)", "prefill", "time_s", 1e3, limit=vs_floor(get("gpt2np", "prefill", "time_s"), floors.get("prefill"), 1e3, "ms"))
    row("forward 8x128, all logits (ms)", "forward8", "time_s", 1e3, limit=vs_floor(get("gpt2np", "forward8", "time_s"), floors.get("forward8"), 1e3, "ms"))
    row("decode b1 (ms/token)", "decode1", "step_s", 1e3, limit=vs_floor(get("gpt2np", "decode1", "step_s"), floors.get("decode1"), 1e3, "ms"))
    row("decode b1 (tokens/s)", "decode1", "tokens_per_s", higher_is_better=True)
    row("decode b8 (ms/step of 8 tokens)", "decode8", "step_s", 1e3, limit=vs_floor(get("gpt2np", "decode8", "step_s"), floors.get("decode8"), 1e3, "ms"))
    row("decode b8 (tokens/s)", "decode8", "tokens_per_s", higher_is_better=True)
    for b in (1, 8):
        task = f"generate{b}"
        row(f"generate b{b}, 100 new tokens (s)", task, "time_s")
        step = get("gpt2np", task, "ms_per_step")
        row(f"generate b{b} (tokens/s)", task, "tokens_per_s", higher_is_better=True,
            limit=vs_floor(step / 1e3 if step else None, floors.get(f"decode{b}"), 1e3, "ms/step"))  # fmt: skip
    for b in (1, 8):
        task = f"generate{b}"
        n, t = get("gpt2np", task, "peak_rss"), get("transformers", task, "peak_rss")
        if n is None and t is None:
            continue
        ratio = f"{n / t:.2f}x" if n and t else ("n/a" if not with_tf else "-")
        limit = f"{n / ckpt_bytes:.2f}x checkpoint" if n else ""
        rows.append([f"peak RSS, generate b{b} (MB)", fmt(n / 1e6 if n else None), fmt(t / 1e6 if t else None) if with_tf else "n/a",
                     ratio + " (np/tf)", limit, f"{spread('gpt2np', task, 'peak_rss')}/{spread('transformers', task, 'peak_rss')}"])  # fmt: skip

    header = ["figure (median)", "gpt2np", "transformers", "speedup", "vs machine limit", "spread np/tf"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i in (0, 4) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in [header] + rows]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))

    # Targets of issue 4 (GPT-2 124M, float32, 2 threads).
    def speedup(task, name, higher=False):
        n, t = get("gpt2np", task, name), get("transformers", task, name)
        return None if n is None or t is None else (n / t if higher else t / n)

    d1 = get("gpt2np", "decode1", "step_s")
    rss1 = get("gpt2np", "generate1", "peak_rss")
    rss8 = get("gpt2np", "generate8", "peak_rss")
    tf_rss1 = get("transformers", "generate1", "peak_rss")
    targets = [
        ("decode b1 tokens/s >= 2.5x transformers", speedup("decode1", "tokens_per_s", True), 2.5, ">=", "x"),
        ("decode b1 within 1.15x of the bandwidth floor", d1 / floors["decode1"] if d1 and floors.get("decode1") else None, 1.15, "<=", "x floor"),
        ("decode b8 tokens/s >= 2.0x transformers", speedup("decode8", "tokens_per_s", True), 2.0, ">=", "x"),
        ("prefill 1x128 >= 1.5x transformers", speedup("prefill", "time_s"), 1.5, ">=", "x"),
        ("peak RSS generating (b1) <= 1.15x checkpoint bytes", rss1 / ckpt_bytes if rss1 else None, 1.15, "<=", "x ckpt"),
        ("peak RSS generating (b8) <= 1.15x checkpoint bytes", rss8 / ckpt_bytes if rss8 else None, 1.15, "<=", "x ckpt"),
        ("load (local files) <= 0.3 s", get("gpt2np", "load", "load_s"), 0.3, "<=", " s"),
        ("load + first forward <= 0.3 s (stricter, informative)", get("gpt2np", "load", "load_first_forward_s"), 0.3, "<=", " s"),
        ("(replaced) peak RSS b1 <= 0.5x transformers'", rss1 / tf_rss1 if rss1 and tf_rss1 else None, 0.5, "<=", "x"),
    ]
    out = []
    lines += ["", "targets (issue 4)"]
    for label, value, goal, op, unit in targets:
        if value is None:
            verdict = "n/a (no transformers)" if "transformers" in label and not with_tf else "n/a"
            shown = "-"
        else:
            ok = value >= goal if op == ">=" else value <= goal
            verdict, shown = ("PASS" if ok else "MISS"), f"{value:.2f}{unit}"
        out.append({"target": label, "value": value, "goal": goal, "op": op, "result": verdict})
        lines.append(f"  {label:<55s} {shown:>12s}   {verdict}")
    return lines, out


def describe_blas(results) -> tuple[str, str]:
    np_line, tf_line = "gpt2np worker: no result", "transformers worker: not run"
    for r in results:
        if r.get("impl") == "gpt2np" and "blas_after" in r:
            libs = [lib for lib in r["blas_after"] if lib.get("user_api") == "blas"]
            desc = ", ".join(f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')}, {lib.get('threading_layer')}, "
                             f"{lib.get('num_threads')} threads)" for lib in libs) or "no BLAS found by threadpoolctl"  # fmt: skip
            np_line = f"gpt2np worker: numpy {r['versions']['numpy']}, BLAS {desc}"
            break
    for r in results:
        if r.get("impl") == "transformers" and "torch" in r:
            t = r["torch"]
            tf_line = (f"transformers worker: transformers {r['versions']['transformers']}, torch {r['versions']['torch']} "
                       f"(BLAS {t['blas']}, mkldnn {t['mkldnn']}, {t['parallel_backend']}, {t['num_threads']} threads, "
                       f"CPU capability {t['cpu_capability']}, attention {r.get('attn_implementation')})")  # fmt: skip
            break
    return np_line, tf_line


def compare_tokens(results) -> dict:
    """Greedy outputs of the two implementations: equal? (a check that both did the same work;
    a float32 near-tie may legitimately differ late in a random model's sequence)."""
    out = {}
    for b in (1, 8):
        task = f"generate{b}"
        a = next((r["new_tokens"] for r in results if r.get("impl") == "gpt2np" and r.get("task") == task and "new_tokens" in r), None)
        t = next((r["new_tokens"] for r in results if r.get("impl") == "transformers" and r.get("task") == task and "new_tokens" in r), None)
        if a is None or t is None:
            continue
        same = [x == y for ra, rt in zip(a, t) for x, y in zip(ra, rt)]
        first = [next((i for i, (x, y) in enumerate(zip(ra, rt)) if x != y), None) for ra, rt in zip(a, t)]
        out[task] = {"identical_fraction": sum(same) / len(same), "first_difference_per_row": first}
    return out


# --- main ----------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a model folder (config.json + model.safetensors) or name; default: real gpt2 if present, else the random 124M-shaped model")
    p.add_argument("--repeats", type=int, default=None, help="worker runs per (implementation, task) (default 5, --quick 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and iterations: a fast check, noisier numbers")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--threads", type=int, default=2, help="threads for both implementations (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "bench-results.json", help="where to write all raw numbers")
    p.add_argument("--no-transformers", action="store_true", help="run gpt2np only")
    p.add_argument("--no-machine", action="store_true", help="skip measuring bandwidth and GEMM rate")
    p.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for an idle machine before each worker (0: don't)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a worker disturbed by another process's CPU use (default 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a worker is abandoned")
    # internal: what the parent passes to a worker
    p.add_argument("--worker", choices=("gpt2np", "transformers", "machine"), help=argparse.SUPPRESS)
    p.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    p.add_argument("--iters", choices=list(ITERS), default="full", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.task_list if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0

    from gpt2np.config import GPT2Config

    model_dir, source = resolve_model(args.model)
    ckpt = model_dir / "model.safetensors"
    ckpt_bytes = ckpt.stat().st_size
    config = GPT2Config.from_json_file(model_dir / "config.json")
    cost = weight_bytes_and_flops(config)
    with_tf = have_transformers() and not args.no_transformers
    impls = ["gpt2np"] + (["transformers"] if with_tf else [])
    why_no_tf = None if with_tf else ("--no-transformers" if args.no_transformers else "torch/transformers not installed")
    ckpt.read_bytes()  # the checkpoint in the OS page cache: every load below is a warm-cache load

    print(f"model: {source}\n  {model_dir}  ({ckpt_bytes / 1e6:.1f} MB checkpoint, {cost['decode_bytes'] / 1e6:.1f} MB read per decode step)")
    print(f"threads {args.threads}, repeats {args.repeats}{' (quick)' if args.quick else ''}, tasks {','.join(args.task_list)}, "
          f"implementations {' + '.join(impls)}{'' if with_tf else f' (transformers skipped: {why_no_tf})'}")  # fmt: skip
    results = []
    started = time.time()
    for rep in range(args.repeats):
        if not args.no_machine:
            print(f"[repeat {rep + 1}/{args.repeats}] machine limits", flush=True)
            results.append({**run_worker("machine", None, model_dir, args), "repeat": rep})
        for task in args.task_list:
            order = impls if rep % 2 == 0 else impls[::-1]  # alternate who goes first
            for impl in order:
                r = run_worker(impl, task, model_dir, args)
                r["repeat"] = rep
                results.append(r)
                m = task_metrics(r)
                shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k != "peak_rss")
                load = r["monitor"]["other_load_cores"]
                print(f"[repeat {rep + 1}/{args.repeats}] {impl:12s} {task:9s} {shown}" + (f"  (other load {load:.2f} cores!)" if load > BUSY_CORES else ""), flush=True)

    agg = aggregate(results)
    machine = aggregate_machine(results, cost)
    lines, targets = build_report(agg, machine, cost, ckpt_bytes, with_tf)
    np_line, tf_line = describe_blas(results)
    tokens = compare_tokens(results)
    info = machine_info()
    loads = [r["monitor"]["other_load_cores"] for r in results]
    steals = [r["monitor"]["steal_cores"] for r in results]

    out = [""]
    out.append(f"gpt2np vs transformers: {source}, float32, {args.threads} threads, prompt {PROMPT_LEN} random tokens, "
               f"{NEW_TOKENS} new tokens greedy; median of {args.repeats} worker runs each")  # fmt: skip
    out.append(f"machine: {info['cpu']}, {info['cores']} cores; checkpoint {ckpt_bytes / 1e6:.1f} MB, "
               f"{cost['decode_bytes'] / 1e6:.1f} MB of weights read per decode step")  # fmt: skip
    if machine:
        bw = machine["bandwidth_gbps"]
        g128, g1024 = machine["gemm"][str(PROMPT_LEN)], machine["gemm"][str(8 * PROMPT_LEN)]
        out.append(f"bandwidth {machine['bandwidth_best_gbps']:.1f} GB/s, best of: GEMV [N,C]@x {bw['gemv_rows']:.1f}, GEMV x@[N,C] "
                   f"{bw['gemv_cols']:.1f}, sdot {bw['sdot']:.1f} (np.sum, 1 thread: {bw['np_sum']:.1f})")  # fmt: skip
        out.append(f"GEMVs on the model's matrix shapes and layout (a b1 decode step's matmuls alone): "
                   f"{1e3 * machine['gemv_model_s']:.2f} ms = {bw['model_gemvs']:.1f} GB/s")  # fmt: skip
        out.append(f"GEMM {g128['gflops']:.0f} GFLOP/s over a 1x128 forward's matmuls ({g128['flops'] / 1e9:.1f} GFLOP), "
                   f"{g1024['gflops']:.0f} over 8x128's; peak {machine['gemm_peak_gflops']:.0f}")  # fmt: skip
        f = machine["floors_s"]
        out.append(f"floors: decode b1 {1e3 * f['decode1']:.2f} ms (weights / bandwidth), decode b8 {1e3 * f['decode8']:.2f} ms, "
                   f"prefill 1x128 {1e3 * f['prefill']:.1f} ms, forward 8x128 {1e3 * f['forward8']:.1f} ms (matmuls alone)")  # fmt: skip
    out.append(np_line)
    out.append(tf_line if with_tf else f"transformers: not run ({why_no_tf}); gpt2np only")
    out.append("")
    out += lines
    out.append("")
    out.append("speedup = transformers time / gpt2np time (>1: gpt2np faster); spread = (max-min)/median over repeats")
    for task, c in tokens.items():
        out.append(f"greedy tokens {task}: {100 * c['identical_fraction']:.1f}% identical to transformers' "
                   f"(first difference per row: {c['first_difference_per_row']})")  # fmt: skip
    base = {impl: median([r["rss_before_load"]["VmHWM"] for r in results if r.get("impl") == impl and "rss_before_load" in r]) for impl in impls}
    out.append("process RSS before loading the model: " + ", ".join(f"{impl} {v / 1e6:.0f} MB" for impl, v in base.items() if v)
               + " (interpreter + library imports; included in the peaks)")  # fmt: skip
    kv8 = next((r["kv_cache_bytes"] for r in results if r.get("task") == "generate8" and "kv_cache_bytes" in r), None)
    if kv8:
        out.append(f"KV cache of generate b8: {kv8 / 1e6:.0f} MB ({PROMPT_LEN}+{NEW_TOKENS} positions x 8 rows), in both implementations")
    out.append(f"background load from other processes during workers: median {median(loads):.2f}, max {max(loads):.2f} cores; "
               f"CPU steal max {max(steals):.2f} cores")  # fmt: skip
    if max(loads) > BUSY_CORES:
        out.append("WARNING: other processes used the CPU during some workers; those numbers are pessimistic. Re-run on an idle machine.")
    errors = [r for r in results if "error" in r]
    if errors:
        out.append(f"WARNING: {len(errors)} worker(s) failed: " + "; ".join(f"{r['impl']} {r.get('task')}" for r in errors))
    out.append(f"total time {time.time() - started:.0f} s; raw numbers in {args.json}")
    print("\n".join(out))

    report = {
        "model": {"source": source, "folder": str(model_dir), "checkpoint_bytes": ckpt_bytes, **cost, "config": config.to_dict()},
        "settings": {"threads": args.threads, "repeats": args.repeats, "quick": args.quick, "tasks": args.task_list,
                     "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS, "decode_steps": DECODE_STEPS, "implementations": impls},
        "machine": {**info, "limits": machine},
        "summary": agg, "targets": targets, "greedy_tokens": tokens, "table": out,
        "workers": results,
    }  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
