"""Which Ray actor scores which rows: does every actor of score_dataset get work?

    python scripts/experiments/ray_balance.py [--texts 120] [--actors 2] [--batch-size 64]

A local Ray with --actors CPUs scores bench_score.py's corpus (decoded to text) with gpt2np.ray's
Scorer, extended to note the process id of the actor that scored each row, twice: with Ray's
default queue of batches per actor, and with one batch in flight per actor (what score_dataset
asks for). Prints, for each, the time and the rows each actor scored. The model: real GPT-2 124M
when present, else the random 124M-shaped test model; the tokenizer is the one gpt2np ships.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpt2np.ray import Scorer  # noqa: E402
from scripts.bench.bench_score import corpus, resolve_model  # noqa: E402

TOKENIZER = ROOT / "gpt2np" / "tokenizer_files"


class ScorerWithPid(Scorer):
    def __call__(self, batch):
        out = super().__call__(batch)
        out["pid"] = os.getpid()  # the actor's process
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=120)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="rows per Ray batch, as score_dataset's batch_size")
    args = p.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # 1 CPU per actor, as bench_score.py runs Ray
    import ray
    import ray.data

    from gpt2np import Tokenizer

    model = resolve_model(None)
    tok = Tokenizer.from_pretrained(TOKENIZER)
    texts = [tok.decode(ids.tolist()) for ids in corpus(args.texts, vocab=50000)]
    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    for label, in_flight in (("Ray's default queue per actor", None), ("one batch in flight per actor", 1)):
        ds = ray.data.from_items(
            [{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=4 * args.actors
        )
        start = time.perf_counter()
        rows = ds.map_batches(
            ScorerWithPid,
            fn_constructor_kwargs={"model": str(model), "tokenizer": str(TOKENIZER)},
            batch_size=args.batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=args.actors, max_tasks_in_flight_per_actor=in_flight),
            num_cpus=1,
        ).take_all()
        seconds = time.perf_counter() - start
        per_actor = sorted(collections.Counter(r["pid"] for r in rows).values(), reverse=True)
        print(f"{label}: {seconds:.1f} s, rows per actor {per_actor} (of {len(rows)})", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
