"""Scoring a corpus on a Ray cluster, with Ray Data (`pip install gpt2np[ray]`; docs/scale.md).

Ray Data is the standard engine for batch inference: it reads the corpus in blocks (Parquet,
JSONL, ...), streams them through a pool of actors and writes the results, on one machine or a
thousand. We write none of that; we give it the one thing it needs, a callable class for
`Dataset.map_batches`:

    import ray
    from gpt2np.ray import Scorer, score_dataset

    ds = ray.data.read_json("corpus.jsonl")                 # a column "text"
    scored = score_dataset(ds, model="gpt2", concurrency=4)  # + n_tokens, n_scored, log_likelihood, perplexity, error
    scored.write_parquet("scores/")

Each actor loads the model once, in its constructor. The weights are memory-mapped (checkpoint.py),
so the actors of one machine share a single copy of them in the page cache. A row that cannot be
scored (not a string, empty, longer than the context without `stride`) keeps its place, with
the reason in the `error` column and nulls in the number columns; it is never dropped.

This module is not part of the core: like the tools, it sits on top of it, and the core never
imports it or Ray (pyproject.toml's import contracts).
"""

from __future__ import annotations

import math
from pathlib import Path

from .corpus import check_batch_limits, score_texts
from .errors import InputError
from .model import GPT2
from .tokenizer import Tokenizer

COLUMNS = ("n_tokens", "n_scored", "log_likelihood", "perplexity", "error")  # the columns added


class Scorer:
    """For `Dataset.map_batches(Scorer, fn_constructor_kwargs=..., batch_format="pandas")`:
    adds the columns n_tokens, n_scored, log_likelihood, perplexity (the names of `gpt2np score
    --file`'s JSON lines) and error (None where the row was scored) to each batch."""

    def __init__(
        self,
        model="gpt2",
        tokenizer=None,
        text_column: str = "text",
        stride=None,
        batch_size: int = 8,
        max_tokens: int = 4096,
        dtype: str = "float32",
    ):
        # model, tokenizer: what from_pretrained takes: a name, a hub repo id or a folder. In a
        # cluster, a folder must exist at the same path on every node (docs/scale.md).
        self.model = GPT2.from_pretrained(model, dtype=dtype)  # memory-mapped: one copy per node
        self.tokenizer = Tokenizer.from_pretrained(tokenizer if tokenizer is not None else model)
        if self.model.config.vocab_size < self.tokenizer.vocab_size:
            raise InputError(
                f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model only "
                f"{self.model.config.vocab_size}; pass the model's own tokenizer"
            )
        self.text_column, self.stride = text_column, stride
        self.batch_size, self.max_tokens = batch_size, max_tokens  # per forward pass, as in score_texts

    def __call__(self, batch):
        """A pandas DataFrame of rows -> the same rows, in the same order, with the columns added."""
        import pandas as pd

        if self.text_column not in batch.columns:
            raise InputError(
                f"the dataset has no column {self.text_column!r} (columns: {list(batch.columns)}); "
                "name the text's column with text_column="
            )
        texts = [None if _is_missing(t) else t for t in batch[self.text_column].tolist()]
        results = score_texts(self.model, self.tokenizer, texts, self.batch_size, self.max_tokens, self.stride)
        ok = [r.error is None for r in results]
        out = batch.copy()
        out["n_tokens"] = pd.array([r.n_tokens for r in results], dtype="Int64")  # null where not tokenized
        out["n_scored"] = pd.array([r.n_scored if good else None for r, good in zip(results, ok)], dtype="Int64")
        out["log_likelihood"] = pd.array(
            [r.log_likelihood if good else None for r, good in zip(results, ok)], dtype="Float64"
        )
        # NaN perplexity (a one-token text: nothing scored) is null, as in the JSON lines
        out["perplexity"] = pd.array(
            [None if not good or math.isnan(r.perplexity) else r.perplexity for r, good in zip(results, ok)],
            dtype="Float64",
        )
        out["error"] = pd.array([r.error for r in results], dtype="string")
        return out


def _is_missing(value) -> bool:
    """A null cell: None, pandas' NA, or the NaN pandas puts in a column's empty cells."""
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def score_dataset(
    ds,
    model="gpt2",
    tokenizer=None,
    text_column: str = "text",
    batch_size: int = 64,
    concurrency: int = 1,
    stride=None,
    num_cpus: float | None = None,
    max_tokens: int = 4096,
    dtype: str = "float32",
):
    """A Ray Dataset with a text column -> the same rows, in the same order, with n_tokens,
    n_scored, log_likelihood, perplexity and error added.

    batch_size: rows per Ray batch (sorted by length inside it, and scored at most 8 texts or
    max_tokens tokens per forward pass); concurrency: how many actors, each with its model;
    num_cpus: CPUs each actor reserves (its BLAS threads: Ray sets OMP_NUM_THREADS to it, and to
    1 below 1); by default 1, or less so that the actors leave one CPU of the cluster free (see
    `actor_cpus`). The returned dataset keeps the input's row order: this sets Ray Data's
    preserve_order in the dataset's DataContext (which Ray shares between a dataset and the
    datasets derived from it; the global context is untouched)."""
    import ray.data

    check_arguments(model, tokenizer, text_column, batch_size, max_tokens, stride, dtype)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be a positive whole number of actors, got {concurrency!r}")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0):
        raise InputError(f"num_cpus must be a number of CPUs >= 0 (or None), got {num_cpus!r}")
    if not ray.is_initialized():
        ray.init()  # what Ray Data does when the dataset first runs; done here to see the cluster's CPUs
    cpus = actor_cpus(concurrency, num_cpus, float(ray.cluster_resources().get("CPU", 0)))
    scorer_kwargs = {
        "model": str(model),
        "tokenizer": None if tokenizer is None else str(tokenizer),
        "text_column": text_column,
        "stride": stride,
        "max_tokens": max_tokens,
        "dtype": dtype,
    }
    scored = ds.map_batches(
        Scorer,
        fn_constructor_kwargs=scorer_kwargs,  # each actor builds its own Scorer from these
        batch_size=batch_size,
        batch_format="pandas",
        # One batch at a time per actor. Ray's default queues up to 4 batches on an actor, and the
        # actor that starts first takes them before the others are up: with 2 actors, a corpus of
        # 120 texts in 2 batches ran wholly on one (70.5 s), and 75/45 with this (48.6 s;
        # scripts/experiments/ray_balance.py). A batch takes seconds, so a deeper queue gains nothing.
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
        num_cpus=cpus,
        udf_modifying_row_count=False,  # one row out per row in
    )
    scored.context.execution_options.preserve_order = True  # blocks come back in the input's order
    return scored


def check_arguments(model, tokenizer, text_column, batch_size, max_tokens, stride, dtype) -> None:
    """What the driver can judge before Ray starts an actor: a mistake is one clear error here,
    not a 20-70 line remote traceback from every actor seconds later. A model folder must exist
    here too (docs/scale.md: at the same path on every node); a hub name is left to the actors,
    which download it."""
    from .config import GPT2Config
    from .hub import looks_like_path, resolve_model_files, resolve_tokenizer_files
    from .model import _check_dtype
    from .scoring import check_stride

    _check_dtype(dtype)  # "dtype must be 'float32' or 'float64'"
    check_batch_limits(batch_size, max_tokens)  # "batch_size must be a positive whole number"
    if not isinstance(text_column, str) or not text_column:
        raise InputError(f"text_column must name the dataset's column of texts, got {text_column!r}")
    n_positions = None  # the context, known when the model is a folder here
    for name, resolve in ((model, resolve_model_files), (tokenizer, resolve_tokenizer_files)):
        if name is not None and (looks_like_path(str(name)) or Path(str(name)).expanduser().exists()):
            files = resolve(str(name), verify=False, local_files_only=True)  # ModelNotFoundError: not there
            if "config.json" in files and name is model:
                n_positions = GPT2Config.from_json_file(files["config.json"]).n_positions
    if stride is not None and n_positions is not None:
        check_stride(stride, n_positions)
    elif stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise InputError(f"stride must be a whole number of tokens >= 1 (below the model's context), got {stride!r}")


def actor_cpus(concurrency: int, num_cpus: float | None, cluster_cpus: float) -> float:
    """The CPUs each actor reserves, leaving one CPU of the cluster to the tasks around them.

    Ray Data starts the actor pool first; the tasks that read the data (read_json, ...) and
    repartition it each need one CPU of Ray's accounting. If the actors reserve every CPU, those
    tasks never start and the dataset waits forever, silently ("backpressured", ray-project/ray
    issue 44687): `ray.init(num_cpus=2)` with 2 actors of 1 CPU each hung. So by default each actor
    reserves 1 CPU, or (cluster CPUs - 1) / concurrency when that is less: 0.5 each for 2 actors
    on 2 CPUs. A reservation is bookkeeping, not a limit: an actor below 1 CPU still runs one BLAS
    thread and uses a core while it scores, and the reads share the cores for the moments they
    take. A num_cpus given explicitly is kept, unless the actors would take every CPU: then the
    run would hang, and we say so instead.

    actor_cpus(2, None, 2.0) -> 0.5; actor_cpus(2, None, 8.0) -> 1.0; actor_cpus(2, 1, 2.0) -> InputError
    """
    free = cluster_cpus - 1  # one CPU for the reads
    if num_cpus is None:
        return max(0.0, min(1.0, free / concurrency))
    if concurrency * num_cpus > free:
        raise InputError(
            f"concurrency={concurrency} actors of num_cpus={num_cpus:g} reserve {concurrency * num_cpus:g} of this "
            f"Ray cluster's {cluster_cpus:g} CPUs, and Ray Data's tasks that read the data need one CPU left "
            f"free: the dataset would wait forever. Give num_cpus={max(0.0, free / concurrency):.3g} or less, fewer "
            "actors, or leave num_cpus out (each actor then reserves at most 1 CPU and one is left free)"
        )
    return float(num_cpus)
