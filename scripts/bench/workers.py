"""A worker: one process, one implementation, one task. It loads the model, warms up, times
the task and prints its numbers as one JSON line (the parent, runner.py, reads it).

The task code is written once, against the small interface every impl_*.py offers (load,
forward, prefill, repeat_rows, step, generate, loss; beam_search for the
gpt2np and transformers columns only), so all implementations do exactly the
same work: the same prompts, positions, masks and number of steps.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from .measure import blas_info, mapped_pages, proc_status, timed
from .tasks import (
    BEAM_NEW_TOKENS,
    BEAM_PROMPT,
    BEAMS,
    CURVE_STEPS,
    DECODE_CONTEXTS,
    DECODE_STEPS,
    DECODE_WARMUP,
    ITERS,
    LONG,
    NEW_TOKENS,
    PREFILL_LENGTHS,
    PROMPT_LEN,
    TASKS,
    TRAIN_SHAPES,
    TRAINING_TASKS,
    prompt_ids,
    row_tokens,
)

RESULT_MARK = "BENCH-RESULT "  # the worker's JSON line on stdout starts with this


def make_impl(name: str, threads: int, onnx: str | None = None, gguf: str | None = None, task: str = "load"):
    if name.startswith("gpt2np"):  # "gpt2np" or "gpt2np-default-blas" (runner.py sets the environment)
        from .impl_gpt2np import Gpt2np

        return Gpt2np(threads)
    if name == "onnxruntime":
        from .impl_onnxruntime import OnnxRuntime

        if onnx is None:
            raise SystemExit("the onnxruntime worker needs --onnx (the parent passes the checked export)")
        return OnnxRuntime(threads, onnx)
    if name == "llama.cpp":
        from .impl_llamacpp import LlamaCpp

        if gguf is None:
            raise SystemExit("the llama.cpp worker needs --gguf (the parent passes the checked conversion)")
        return LlamaCpp(threads, gguf, TASKS[task][0], row_tokens(task))
    from .impl_transformers import Transformers

    return Transformers(threads, training=task in TRAINING_TASKS)


# --- the tasks: (impl, batch, iters) -> numbers ------------------------------------------


def first_forward(impl, batch, it):
    """Load is lazy for gpt2np (memory-mapped): the first forward pages the weights in."""
    ids = prompt_ids(1, PROMPT_LEN, impl.vocab_size)
    start = time.perf_counter()
    impl.forward(ids)
    first = time.perf_counter() - start
    start = time.perf_counter()
    impl.forward(ids)
    return {"first_forward_s": first, "warm_forward_s": time.perf_counter() - start}


def prefill(impl, batch, it):
    """Every position's logits for [batch, 128] tokens."""
    ids = prompt_ids(batch, PROMPT_LEN, impl.vocab_size)
    return {"times": timed(lambda: impl.forward(ids), *it["prefill" if batch == 1 else "forward8"])}


def decode_steps(impl, state, warmup: int, steps: int) -> list[float]:
    times = []
    for s in range(warmup + steps):
        start = time.perf_counter()
        impl.step(state)
        if s >= warmup:
            times.append(time.perf_counter() - start)
    return times


def decode(impl, batch, it):
    """Single-token steps at context ~PROMPT_LEN, rounds of DECODE_STEPS after a warm-up round."""
    ids = prompt_ids(batch, PROMPT_LEN, impl.vocab_size)
    warm_rounds, rounds = it["decode"]
    steps = []
    for r in range(warm_rounds + rounds):
        state = impl.prefill(ids, PROMPT_LEN + DECODE_WARMUP + DECODE_STEPS)
        times = decode_steps(impl, state, DECODE_WARMUP, DECODE_STEPS)
        if r >= warm_rounds:
            steps += times
    return {"step_times": steps}


def decode_curve(impl, batch, it):
    """Steps at several context lengths: one row prefilled to the context, repeated to
    `batch` rows, then CURVE_STEPS timed steps (after DECODE_WARMUP untimed)."""
    warm, rounds = it["curve"]
    out = {}
    for context in DECODE_CONTEXTS:
        ids = prompt_ids(1, context, impl.vocab_size)
        times = []
        for r in range(min(warm, 1) + rounds):
            state = impl.prefill(ids, context + DECODE_WARMUP + CURVE_STEPS)
            if batch > 1:
                state = impl.repeat_rows(state, batch)
            t = decode_steps(impl, state, DECODE_WARMUP, CURVE_STEPS)
            if r >= min(warm, 1):
                times += t
        out[str(context)] = times
    return {"curve_step_times": out}


def prefill_curve(impl, batch, it):
    """1 x T prompts, the last position's logits (what generation needs), T = 128 ... 1024."""
    out = {}
    for length in PREFILL_LENGTHS:
        ids = prompt_ids(1, length, impl.vocab_size)
        out[str(length)] = timed(lambda: impl.forward(ids, logits_to_keep=1), *it["curve"])  # noqa: B023  called at once
    return {"curve_times": out}


def prefill_long(impl, batch, it):
    """[8, 1024], the last position's logits."""
    impl.forward(prompt_ids(batch, 32, impl.vocab_size), logits_to_keep=1)  # pages the weights in, warms the code
    ids = prompt_ids(batch, LONG, impl.vocab_size)
    return {"times": timed(lambda: impl.forward(ids, logits_to_keep=1), *it["long"])}


def generate(impl, batch, it):
    """prompt 128, 100 new tokens, greedy, no end-of-text stop; peak RSS taken afterwards."""
    ids = prompt_ids(batch, PROMPT_LEN, impl.vocab_size)
    warmup, iters = it["generate"]
    for _ in range(warmup):  # a short run: warms the pages and code paths, not the clock
        impl.generate(ids, 8)
    times, out = [], None
    for _ in range(iters):
        start = time.perf_counter()
        out = impl.generate(ids, NEW_TOKENS)
        times.append(time.perf_counter() - start)
    assert out.shape == (batch, PROMPT_LEN + NEW_TOKENS), out.shape
    return {"times": times, "new_tokens": out[:, PROMPT_LEN:].tolist()}


def beam(impl, batch, it):
    """Beam search, BEAMS beams, a BEAM_PROMPT-token prompt, BEAM_NEW_TOKENS new tokens, no
    end-of-text stop (every step runs); peak RSS taken afterwards. The sequences are returned so
    the report can say whether both chose the same."""
    ids = prompt_ids(batch, BEAM_PROMPT, impl.vocab_size)
    warmup, iters = it["generate"]
    for _ in range(warmup):  # a short run: warms the pages and code paths, not the clock
        impl.beam_search(ids, 4, BEAMS)
    times, out = [], None
    for _ in range(iters):
        start = time.perf_counter()
        out = impl.beam_search(ids, BEAM_NEW_TOKENS, BEAMS)
        times.append(time.perf_counter() - start)
    assert out.shape == (batch, BEAM_PROMPT + BEAM_NEW_TOKENS), out.shape
    return {"times": times, "new_tokens": out[:, BEAM_PROMPT:].tolist()}


def left_padded_batch(batch: int, length: int, vocab: int):
    """[batch, length] ids with row b left-padded by b * length / 28 pads (1024: 0, 36, ..., 252)."""
    ids = prompt_ids(batch, length, vocab)
    mask = np.ones_like(ids)
    for b in range(batch):
        mask[b, : b * (length // 28)] = 0
    ids[mask == 0] = min(50256, vocab - 1)
    return ids, mask


def score_long(impl, batch, it):
    """The loss of every token of a left-padded 8 x 1024 batch; peak RSS taken afterwards."""
    impl.loss(*left_padded_batch(batch, 32, impl.vocab_size))  # pages the weights in, warms the code
    ids, mask = left_padded_batch(batch, LONG, impl.vocab_size)
    warm, iters = it["score"]
    losses = []
    times = timed(lambda: losses.append(impl.loss(ids, mask)), warm, iters)
    return {"times": times, "loss": losses[-1]}


def training(impl, batch, it, task):
    """backward*: forward + backward; train*: a full step (the weights change from step to step,
    as in training). The first step is untimed: it warms the code and (train) makes the optimizer,
    whose state and gpt2np's writable copy of the weights then stay for the timed steps; peak RSS
    taken afterwards."""
    B, T = TRAIN_SHAPES[task[-1]]
    ids = prompt_ids(B, T, impl.vocab_size)
    run = impl.train_step if task.startswith("train") else impl.backward
    losses = []
    times = timed(lambda: losses.append(run(ids)), *it["train"])
    return {"times": times, "loss": losses[-1], "tokens": B * T}


def family(impl, batch, it):
    """A larger model: decode b1 at context ~PROMPT_LEN, and the peak RSS of doing it."""
    ids = prompt_ids(1, PROMPT_LEN, impl.vocab_size)
    state = impl.prefill(ids, PROMPT_LEN + DECODE_WARMUP + DECODE_STEPS)
    return {"step_times": decode_steps(impl, state, DECODE_WARMUP, DECODE_STEPS)}


RUN = {
    "load": first_forward,
    "prefill": prefill,
    "forward8": prefill,
    "decode1": decode,
    "decode8": decode,
    "generate1": generate,
    "generate8": generate,
    "prefill_curve": prefill_curve,
    "prefill8_long": prefill_long,
    "decode_curve1": decode_curve,
    "decode_curve8": decode_curve,
    "score8_long": score_long,
    "family": family,
    "beam1": beam,
    "beam4": beam,
    **{task: partial(training, task=task) for task in TRAINING_TASKS},
}


def worker_main(
    impl_name: str, task: str, model: str, threads: int, iters: str, onnx: str | None = None, gguf: str | None = None
) -> None:
    t0 = time.perf_counter()
    if impl_name == "machine":
        from .limits import machine_limits

        result = machine_limits(model, threads, iters)
    else:
        impl = make_impl(impl_name, threads, onnx, gguf, task)
        result = {
            "impl": impl_name,
            "task": task,
            "import_s": time.perf_counter() - t0,
            "rss_before_load": proc_status(),
            "versions": impl.versions,
            **impl.info,
        }
        start = time.perf_counter()
        impl.load(model)
        result["load_s"] = time.perf_counter() - start
        result |= RUN[task](impl, TASKS[task][0], ITERS[iters])
        result["blas_after"] = blas_info()  # OpenBLAS starts its threads lazily: report them in use
        result["checkpoint_pages"] = mapped_pages(Path(model) / "model.safetensors")
        result["info"] = getattr(impl, "info", {})
    result["rss"] = proc_status()
    result["worker_wall_s"] = time.perf_counter() - t0
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
