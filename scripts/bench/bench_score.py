"""Benchmark corpus scoring: tokens scored per second, gpt2np against a batched transformers loop
computing the same numbers, in one run; and the Ray integration at 1 and 2 actors.

    /work/venv/bin/python scripts/bench/bench_score.py                  # gpt2np vs transformers, 5 repeats
    /work/venv/bin/python scripts/bench/bench_score.py --repeats 3 --texts 200
    /work/venv/bin/python scripts/bench/bench_score.py --ray 1,2 --tokenizer DIR   # + Ray Data, 1 and 2 actors
    /work/venv/bin/python scripts/bench/bench_score.py --skip-single --ray 1,2 --ray-batch-size 16 --tokenizer DIR
                                                                    # Ray only, smaller Ray batches

The corpus: --texts token-id sequences (seed 0) with lengths spread like lines of real text,
log-normal with median 64 tokens, clipped to 8..512, so both short and long texts occur and
batching by length matters. The model: real GPT-2 124M when on this machine, else the random
124M-shaped test model (same shapes, same speed), or --model FOLDER.

Each measured thing runs in a fresh worker process (this script with --worker), the kinds in
turns, repeat after repeat, alternating which goes first; a worker loads the model, warms up on
the first 16 texts, then scores the whole corpus once, timed, and prints tokens/s (scored tokens,
N - 1 per text) and every text's log-likelihood. The table gives the median over repeats and the
ratios. All workers get OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = --threads
(and torch.set_num_threads). The kinds:

  gpt2np              gpt2np.corpus.score_token_lists: texts sorted by length, batches of at
                      most --batch-size texts and --max-tokens padded tokens.
  transformers        the usual loop: batches of --batch-size texts in input order, left-padded,
                      position ids from the mask, GPT2LMHeadModel in inference_mode, then
                      cross_entropy(reduction="none") per token (log-softmax + pick, fused),
                      summed per text over the tokens that have a real token before them.
  transformers-sorted the same loop on gpt2np's length-sorted batches: the two engines on
                      identical batches.
  ray-N               gpt2np.ray.score_dataset on a local Ray (ray.init(num_cpus=N)) with N
                      actors of 1 CPU each, texts (the corpus decoded with --tokenizer) in a
                      Ray dataset; timed from score_dataset to the last row taken (actor
                      start-up included, ray.init not).

The machine is shared: other processes may take CPU while a worker runs. We record the CPU
time everything else on the machine used during each worker (from /proc/stat) and print it.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MARK = "BENCH-SCORE "


def corpus(n: int, vocab: int, seed: int = 0) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.exp(rng.normal(np.log(64), 0.9, size=n)).astype(int), 8, 512)  # [n] median 64
    return [rng.integers(0, vocab, size=int(n_tok)) for n_tok in lengths]


def cpu_busy() -> tuple[float, float]:
    """(busy jiffies of the whole machine, our process tree's jiffies): to estimate what others took."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return float(sum(fields) - fields[3] - fields[4]), time.time()


# --- workers ---------------------------------------------------------------------------------


def gpt2np_worker(args, lists) -> dict:
    from gpt2np import GPT2
    from gpt2np.corpus import score_token_lists

    model = GPT2.from_pretrained(args.model)
    score_token_lists(model, lists[:16], args.batch_size, args.max_tokens)  # warm-up: pages, code paths
    start = time.perf_counter()
    results = score_token_lists(model, lists, args.batch_size, args.max_tokens)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "loglik": [r.log_likelihood for r in results],
        "n_scored": [r.n_scored for r in results],
    }


def transformers_worker(args, lists, sorted_batches: bool) -> dict:
    import numpy as np
    import torch
    import transformers

    from gpt2np.corpus import left_pad, length_batches

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    model = transformers.GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32).eval()

    def batches(items):
        if sorted_batches:
            return length_batches([len(t) for t in items], args.batch_size, args.max_tokens)
        return [list(range(i, min(i + args.batch_size, len(items)))) for i in range(0, len(items), args.batch_size)]

    def score_all(items) -> list[float]:
        out = [0.0] * len(items)
        with torch.inference_mode():
            for batch in batches(items):
                ids, mask = left_pad([items[i] for i in batch])  # [B, T]
                positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0)  # as generate() does
                ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
                logits = model(input_ids=ids_t, attention_mask=mask_t, position_ids=torch.from_numpy(positions)).logits
                nll = torch.nn.functional.cross_entropy(
                    logits[:, :-1].transpose(1, 2), ids_t[:, 1:], reduction="none"
                )  # [B, T-1]
                scored = (mask_t[:, 1:] == 1) & (mask_t[:, :-1] == 1)  # a real token after a real token
                totals = -(nll * scored).sum(dim=1).double()  # [B]
                for b, i in enumerate(batch):
                    out[i] = float(totals[b])
        return out

    score_all(lists[:16])  # warm-up
    start = time.perf_counter()
    loglik = score_all(lists)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loglik": loglik, "n_scored": [len(t) - 1 for t in lists]}


def ray_worker(args, lists, actors: int) -> dict:
    import ray

    from gpt2np import Tokenizer
    from gpt2np.ray import score_dataset

    tok = Tokenizer.from_pretrained(args.tokenizer)
    texts = [tok.decode(t) for t in lists]
    ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=4 * actors)
    start = time.perf_counter()
    rows = score_dataset(
        ds, model=args.model, tokenizer=args.tokenizer, batch_size=args.ray_batch_size, concurrency=actors
    ).take_all()
    seconds = time.perf_counter() - start
    ray.shutdown()
    assert [r["id"] for r in rows] == list(range(len(texts)))
    return {"seconds": seconds, "loglik": None, "n_scored": [r["n_scored"] or 0 for r in rows]}


def worker_main(args) -> None:
    from gpt2np.config import GPT2Config

    vocab = GPT2Config.from_json_file(Path(args.model) / "config.json").vocab_size
    lists = corpus(args.texts, vocab)
    if args.worker == "gpt2np":
        res = gpt2np_worker(args, lists)
    elif args.worker in ("transformers", "transformers-sorted"):
        res = transformers_worker(args, lists, sorted_batches=args.worker == "transformers-sorted")
    elif args.worker.startswith("ray-"):
        res = ray_worker(args, lists, int(args.worker.split("-")[1]))
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    res["tokens"] = sum(res["n_scored"])
    print(MARK + json.dumps(res), flush=True)


# --- the parent ------------------------------------------------------------------------------


def run_worker(kind: str, args) -> dict:
    env = dict(os.environ)
    threads = "1" if kind.startswith("ray-") else str(args.threads)  # Ray: 1 CPU per actor
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = threads
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--model",
        str(args.model),
        "--texts",
        str(args.texts),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--max-tokens",
        str(args.max_tokens),
        "--ray-batch-size",
        str(args.ray_batch_size),
    ]
    if args.tokenizer:
        cmd += ["--tokenizer", str(args.tokenizer)]
    busy0, t0 = cpu_busy()
    ticks0 = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    busy1, t1 = cpu_busy()
    ticks1 = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARK))
    res = json.loads(line[len(MARK) :])
    ours = (ticks1.children_user + ticks1.children_system) - (ticks0.children_user + ticks0.children_system)  # s
    res["others_cores"] = max(0.0, (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - ours) / (t1 - t0)
    return res


def resolve_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from gpt2np.errors import GPT2npError
    from gpt2np.hub import resolve_model_files

    try:
        return resolve_model_files("gpt2", local_files_only=True)["model.safetensors"].parent
    except GPT2npError:
        from gpt2np.tools.random_model import build_test_model

        root = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))
        return build_test_model("gpt2-shaped", root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="a model folder (default: gpt2, else the random 124M-shaped model)")
    p.add_argument("--tokenizer", default=os.environ.get("GPT2NP_TOKENIZER_DIR"), help="tokenizer folder (for --ray)")
    p.add_argument("--texts", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--ray", default="", help="also Ray Data with these actor counts, e.g. 1,2")
    p.add_argument("--ray-batch-size", type=int, default=64, help="rows per Ray batch (score_dataset's batch_size)")
    p.add_argument("--skip-single", action="store_true", help="run the Ray kinds only (no gpt2np / transformers)")
    p.add_argument("--json", default=None, help="write every raw number here")
    args = p.parse_args()
    if args.worker:
        return worker_main(args)
    args.model = resolve_model(args.model)
    single = [] if args.skip_single else ["gpt2np", "transformers", "transformers-sorted"]
    kinds = single + [f"ray-{n}" for n in args.ray.split(",") if n]
    results = {k: [] for k in kinds}
    print(
        f"model {args.model}, {args.texts} texts, {args.threads} threads, batch {args.batch_size} / {args.max_tokens} tokens, "
        f"{args.repeats} repeats",
        flush=True,
    )
    for r in range(args.repeats):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            res = run_worker(kind, args)
            results[kind].append(res)
            ray_note = ": Ray's actors and daemons count as others" if kind.startswith("ray-") else ""
            print(
                f"  repeat {r + 1} {kind:<20} {res['tokens'] / res['seconds']:8.0f} tokens/s  "
                f"({res['seconds']:.2f} s; others used {res['others_cores']:.2f} cores{ray_note})",
                flush=True,
            )
    if single:
        ref = results["gpt2np"][0]["loglik"]
        for kind in ("transformers", "transformers-sorted"):
            diff = max(abs(a - b) for a, b in zip(ref, results[kind][0]["loglik"]))
            print(f"same numbers: max |log-likelihood gpt2np - {kind}| over the texts = {diff:.2e}")
    tps = {k: statistics.median(x["tokens"] / x["seconds"] for x in v) for k, v in results.items()}
    n_tokens = results[kinds[0]][0]["tokens"]
    base = kinds[0]  # gpt2np, or the first Ray kind
    print(f"\n{n_tokens} scored tokens per run; medians of {args.repeats}")
    print(f"| what | tokens/s | texts/s | {base} / this |\n| --- | ---: | ---: | ---: |")
    for k in kinds:
        print(f"| {k} | {tps[k]:.0f} | {tps[k] * args.texts / n_tokens:.1f} | {tps[base] / tps[k]:.2f}x |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
