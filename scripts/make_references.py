"""Run transformers on the random test models and store its outputs as test references.

    python scripts/make_references.py      # needs torch==2.13.0 and transformers (pip install -e '.[test]')

Writes tests/data/references.npz (arrays) and tests/data/references.json (what was run, with
which versions, and the sha256 of each test model's weights). tests/test_references.py then
checks gpt2np against these numbers on machines without torch; tests/test_against_transformers.py
does the same comparisons live when transformers is installed.

Nothing here is computed by gpt2np: the models are built from seeds by plain NumPy
(random_model.py, which never runs gpt2np's forward pass), the position ids of a padded batch
are transformers' own (the function its `generate` calls), and every stored number comes out of
transformers or torch.

What is stored, for each test model, input batch and attention implementation (eager, sdpa):
- float32: the logits at every real (non-pad) position, restricted to a fixed set of 512
  vocabulary columns plus each position's 5 best tokens (the full [B, T, 50257] arrays would be
  megabytes), and the last hidden state (after ln_f) at every real position;
- the logits of transformers' plain forward, which uses position_ids = arange(T) even for a
  left-padded batch (gpt2np reproduces it when given position_ids=arange);
- greedy `generate` outputs: max_new_tokens, max_length, and with an eos token that makes
  rows stop at different steps.
And once per model and batch, transformers run in float64 (eager): the same logit columns, the
top logits and the last hidden state, and the log-probability of every scored token (real, with
a real token before it) from log_softmax of the float64 logits. gpt2np's float64 mode must
match these to ~1e-9, which catches bugs far below float32's noise (a GELU constant off in its
fourth digit, eps outside the square root).
Finally transformers' sampling warpers (temperature, top-k, top-p, in its order) on fixed random
logits, so the sampling filters are checked without torch too.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpt2np.hub import sha256_of  # noqa: E402
from gpt2np.tools.random_model import TEST_MODELS, build_test_model  # noqa: E402

OUT = ROOT / "tests" / "data"
MODELS_DIR = ROOT / "weights" / "test-models"
N_COLUMNS = 512
N_TOP = 5
NEW_TOKENS = 12
# (temperature, top_k, top_p) for the stored warper outputs: each filter alone, and chained
# settings where the order (temperature, then top-k, then top-p) changes which tokens survive.
WARPER_SETTINGS = [
    (1.0, 50, 1.0),
    (0.7, 0, 0.9),
    (1.3, 10, 0.5),
    (1.0, 0, 0.95),
    (0.5, 200, 0.8),
    (2.0, 1, 1.0),
    (1.0, 5000, 0.3),
    (1.0, 0, 1e-6),
    (0.4, 0, 0.9),
    (3.0, 0, 0.6),
    (1.0, 20, 0.4),
    (2.5, 30, 0.7),
]

# The seed's left-padded batch ("It will rain in the", "I want to eat a big bowl of", "My dog is").
SEED_IDS = [[50256, 50256, 50256, 1026, 481, 6290, 287, 262],
            [40, 765, 284, 4483, 257, 1263, 9396, 286],
            [50256, 50256, 50256, 50256, 50256, 3666, 3290, 318]]  # fmt: skip
SEED_MASK = [[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8, [0, 0, 0, 0, 0, 1, 1, 1]]


def batches(vocab_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The inputs: the seed batch (real vocab only), a random left-padded batch with a
    one-token row, and one unpadded sequence."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(4, 12))
    pads = np.array([5, 0, 11, 2])  # row 2 is a single real token
    mask = (np.arange(12)[None, :] >= pads[:, None]).astype(np.int64)
    ids[mask == 0] = vocab_size - 1  # pads carry the pad id (eos), as a tokenizer would put there
    out = {"random": (ids, mask), "single": (ids[1:2, :9].copy(), np.ones((1, 9), dtype=np.int64))}
    if vocab_size == 50257:
        out["seed"] = (np.array(SEED_IDS), np.array(SEED_MASK))
    return out


def transformers_positions(model, t_ids, t_mask):
    """The position ids transformers' `generate` gives a padded batch: its own function."""
    return model._prepare_position_ids_for_generation(t_ids, {"attention_mask": t_mask})


def scored_logprobs(logits64: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log p(token t | before) from float64 logits, at tokens that are real with a real token
    before them (the logits at t - 1 predict token t). [N] in row-major (b, t) order."""
    import torch

    logprobs = torch.log_softmax(torch.tensor(logits64), dim=-1).numpy()  # [B, T, V] float64
    b, t = np.nonzero((mask[:, 1:] == 1) & (mask[:, :-1] == 1))  # t indexes columns 1..T-1
    return logprobs[b, t, ids[b, t + 1]]


def warpers(arrays: dict) -> None:
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = (np.random.default_rng(11).standard_normal((6, 400)) * 3).astype(np.float32)  # [6, 400]
    arrays["warpers/logits"] = logits
    arrays["warpers/settings"] = np.array(WARPER_SETTINGS, dtype=np.float64)
    for i, (temperature, top_k, top_p) in enumerate(WARPER_SETTINGS):
        scores = torch.tensor(logits)
        if temperature != 1.0:
            scores = TemperatureLogitsWarper(temperature)(None, scores)
        if top_k:
            scores = TopKLogitsWarper(top_k=int(top_k))(None, scores)
        if top_p < 1.0:
            scores = TopPLogitsWarper(top_p=top_p)(None, scores)
        arrays[f"warpers/{i}"] = scores.numpy()


def main() -> None:
    import torch
    import transformers
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)
    arrays, meta = (
        {},
        {
            "generated_by": "python scripts/make_references.py",
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "n_columns": N_COLUMNS,
            "n_top": N_TOP,
            "new_tokens": NEW_TOKENS,
            "models": {},
            "cases": [],
        },
    )
    for m_index, name in enumerate(TEST_MODELS):
        folder = build_test_model(name, MODELS_DIR)
        config = json.loads((folder / "config.json").read_text())
        V = config["vocab_size"]
        columns = np.sort(np.random.default_rng(100 + m_index).choice(V, size=min(N_COLUMNS, V), replace=False))
        arrays[f"{name}/columns"] = columns
        meta["models"][name] = {
            "sha256": sha256_of(folder / "model.safetensors"),
            "eos_token_id": config["eos_token_id"],
        }
        models = {
            attn: GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation=attn).eval()
            for attn in ("eager", "sdpa")
        }
        model64 = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float64).eval()
        for b_name, (ids, mask) in batches(V, 7 + m_index).items():
            key = f"{name}/{b_name}"
            meta["cases"].append(key)
            arrays[f"{key}/input_ids"], arrays[f"{key}/attention_mask"] = ids, mask
            real = mask.astype(bool)
            t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
            t_pos = transformers_positions(models["eager"], t_ids, t_mask)
            arrays[f"{key}/position_ids"] = t_pos.numpy()  # transformers' own, stored so the test can show them
            for attn, model in models.items():
                k = f"{key}/{attn}"
                with torch.no_grad():
                    out = model(t_ids, attention_mask=t_mask, position_ids=t_pos, output_hidden_states=True)
                    logits = out.logits.numpy()[real]  # [n_real, V]
                    arrays[f"{k}/logits_columns"] = logits[:, columns]
                    top = np.argsort(-logits, axis=-1, kind="stable")[:, :N_TOP]
                    arrays[f"{k}/top_ids"] = top
                    arrays[f"{k}/top_logits"] = np.take_along_axis(logits, top, axis=-1)
                    arrays[f"{k}/last_hidden"] = out.hidden_states[-1].numpy()[real]
                    plain = model(t_ids, attention_mask=t_mask).logits.numpy()[real]  # arange positions
                    arrays[f"{k}/arange_logits_columns"] = plain[:, columns]
                    gen = dict(attention_mask=t_mask, do_sample=False, pad_token_id=config["eos_token_id"])
                    new = model.generate(t_ids, max_new_tokens=NEW_TOKENS, **gen).numpy()
                    arrays[f"{k}/generate_new_tokens"] = new
                    arrays[f"{k}/generate_max_length"] = model.generate(
                        t_ids, max_length=ids.shape[1] + 5, **gen
                    ).numpy()
                    # eos stopping: take a token the first row generates at its 4th step as "eos",
                    # so that row stops early while others (probably) go on; finished rows get pad 0.
                    eos = int(new[0, ids.shape[1] + 3])
                    arrays[f"{k}/eos_token_id"] = np.array(eos)
                    arrays[f"{k}/generate_eos"] = model.generate(
                        t_ids,
                        attention_mask=t_mask,
                        do_sample=False,
                        max_new_tokens=NEW_TOKENS,
                        eos_token_id=eos,
                        pad_token_id=0,
                    ).numpy()
            with torch.no_grad():  # the float64 truth
                out = model64(t_ids, attention_mask=t_mask, position_ids=t_pos, output_hidden_states=True)
            logits64 = out.logits.numpy()  # [B, T, V] float64
            k = f"{key}/float64"
            arrays[f"{k}/logits_columns"] = logits64[real][:, columns]
            top = arrays[f"{key}/eager/top_ids"]
            arrays[f"{k}/top_logits"] = np.take_along_axis(logits64[real], top, axis=-1)
            arrays[f"{k}/last_hidden"] = out.hidden_states[-1].numpy()[real]
            arrays[f"{k}/scored_logprobs"] = scored_logprobs(logits64, ids, mask)
            print(f"{key}: done")
    warpers(arrays)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "references.npz", **arrays)
    (OUT / "references.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (OUT / "references.npz").stat().st_size
    print(f"wrote {OUT / 'references.npz'} ({size / 1e6:.2f} MB) and references.json")


if __name__ == "__main__":
    main()
