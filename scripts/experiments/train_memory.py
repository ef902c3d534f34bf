"""Peak memory and time of one GPT2.loss_and_grads (forward + backward), in a fresh process.

    python scripts/experiments/train_memory.py [--model FOLDER] [--batch-size 4] [--seq-len 1024] [--dtype float32]
        [--gradient-checkpointing]

Prints the process's peak resident memory (ru_maxrss) after loading the model, and after one
loss_and_grads of a random [B, T] batch (the second row left-padded by a quarter), with the time
it took. Default model: the random 124M-shaped test model (gpt2np.tools.random_model, built on
first use under weights/test-models). What the numbers mean: the peak includes the weights (500
MB in float32), the gradients (the same again) and the activations the backward keeps: every
block's insides by default, only each block's input with --gradient-checkpointing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder (default: the 124M-shaped test model)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute each block's insides")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from gpt2np import GPT2
    from gpt2np.tools.random_model import build_test_model

    folder = args.model or build_test_model("gpt2-shaped", ROOT / "weights" / "test-models")
    model = GPT2.from_pretrained(folder, dtype=args.dtype)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    for a in model.weights.arrays():  # touch every weight: the memory map counts once read
        a.sum()
    loaded = peak_mb()
    B, T = args.batch_size, args.seq_len
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[min(1, B - 1), : T // 4] = 0
    start = time.perf_counter()
    loss, grads = model.loss_and_grads(ids, attention_mask=mask)
    seconds = time.perf_counter() - start
    n_grads = sum(g.nbytes for g in grads.values()) / 2**20
    print(
        f"{args.dtype} B={B} T={T}{' checkpointing' * args.gradient_checkpointing}: loss {loss:.4f}; peak RSS {loaded:.0f} MB after loading, {peak_mb():.0f} MB after "
        f"loss_and_grads (gradients {n_grads:.0f} MB); {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
