"""What the benchmark measures: the tasks, their sizes, and what one token costs.

Every task runs in a fresh worker process per implementation (workers.py), so one's memory and
thread pools never touch the other's. A task name maps to its settings here; the workers read
them, the report labels rows with them.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SEED = 1234  # the random prompt ids: the same in every worker
PROMPT_LEN = 128  # the short tasks' prompt
NEW_TOKENS = 100  # generate
DECODE_STEPS = 32  # timed decode steps per round at context ~PROMPT_LEN
DECODE_WARMUP = 4
LONG = 1024  # the long prompts: GPT-2's whole context
PREFILL_LENGTHS = (128, 256, 512, 1024)  # the prefill curve (batch 1, logits of the last position)
DECODE_CONTEXTS = (128, 384, 640, 900)  # the decode curve (batch 1 and 8): context before the timed steps
CURVE_STEPS = 16  # timed decode steps at each context of the curve
BEAMS, BEAM_PROMPT, BEAM_NEW_TOKENS = 4, 32, 64  # beam search (issue 24): 4 beams, 32-token prompt, 64 new tokens
# Training (issues 31 and 32): [batch, seq] of llm.c's test (4 x 64) and a larger one (8 x 256).
# "backward": one forward + backward (the loss of next-token prediction, every gradient);
# "train": a full step: forward, backward, clip to norm 1, AdamW (lr 1e-4, weight decay 0.1 on
# the 2-d parameters, as nanoGPT groups them).
TRAIN_SHAPES = {"4": (4, 64), "8": (8, 256)}
TRAIN_LR, TRAIN_WEIGHT_DECAY, TRAIN_CLIP = 1e-4, 0.1, 1.0

# name: (batch, label). The short tasks are issue 4's; the rest are the long-context ones.
TASKS = {
    "load": (1, "load"),
    "prefill": (1, "prefill 1x128, all logits"),
    "forward8": (8, "forward 8x128, all logits"),
    "decode1": (1, "decode b1 at context ~150"),
    "decode8": (8, "decode b8 at context ~150"),
    "generate1": (1, "generate b1, 100 tokens"),
    "generate8": (8, "generate b8, 100 tokens"),
    "prefill_curve": (1, "prefill 1xT, last logits, T = 128..1024"),
    "prefill8_long": (8, "prefill 8x1024, last logits"),
    "decode_curve1": (1, "decode b1 at context 128..900"),
    "decode_curve8": (8, "decode b8 at context 128..900"),
    "score8_long": (8, "score 8x1024 (loss of every token)"),
    "family": (1, "load, decode b1, peak RSS of a larger model"),
    "beam1": (1, "beam search b1: 4 beams, prompt 32, 64 new tokens"),
    "beam4": (4, "beam search b4: 4 beams, prompt 32, 64 new tokens"),
    "backward4": (4, "forward + backward 4x64"),
    "backward8": (8, "forward + backward 8x256"),
    "train4": (4, "training step 4x64: forward, backward, clip, AdamW"),
    "train8": (8, "training step 8x256: forward, backward, clip, AdamW"),
}
TRAINING_TASKS = ("backward4", "backward8", "train4", "train8")
FAMILY_TASK = "family"  # run once per family model, with that model

# (warmup, iterations) per kind of task inside one worker; --quick uses the second set.
ITERS = {
    "full": {
        "prefill": (2, 10),
        "forward8": (1, 4),
        "decode": (1, 3),
        "generate": (1, 2),
        "curve": (1, 3),
        "long": (0, 2),
        "score": (0, 1),
        "train": (1, 3),
    },
    "quick": {
        "prefill": (1, 3),
        "forward8": (1, 2),
        "decode": (1, 1),
        "generate": (1, 1),
        "curve": (1, 1),
        "long": (0, 1),
        "score": (0, 1),
        "train": (1, 1),
    },
}


def row_tokens(task: str) -> int:
    """The most tokens the task puts in one row (prompt and generated): what a runtime that
    allocates its whole KV cache up front (llama.cpp) must make room for."""
    if task in ("decode1", "decode8", "family"):
        return PROMPT_LEN + DECODE_WARMUP + DECODE_STEPS
    if task.startswith("generate"):
        return PROMPT_LEN + NEW_TOKENS
    if task.startswith("decode_curve"):
        return max(DECODE_CONTEXTS) + DECODE_WARMUP + CURVE_STEPS
    if task in ("prefill_curve", "prefill8_long", "score8_long"):
        return LONG
    if task in TRAINING_TASKS:
        return TRAIN_SHAPES[task[-1]][1]
    return PROMPT_LEN  # load, prefill, forward8


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


def beam_cache_bytes(config, batch: int) -> int:
    """The beams' KV cache at its fullest: keys and values, every layer, batch x BEAMS rows, float32."""
    return 2 * config.n_layer * batch * BEAMS * (BEAM_PROMPT + BEAM_NEW_TOKENS) * config.n_embd * 4
