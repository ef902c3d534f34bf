"""Run transformers on the random test models and store its outputs as test references.

    python scripts/data/make_references.py                  # both files; needs torch==2.13.0 and transformers (pip install -e '.[test]')
    python scripts/data/make_references.py --only generation    # only tests/data/generation.*

Writes tests/data/references.npz (arrays) and tests/data/references.json (what was run, with
which versions, and the sha256 of each test model's weights), and tests/data/generation.npz /
generation.json (the generation settings of issue 24, below). tests/test_references.py then
checks gpt2np against these numbers on machines without torch; tests/test_against_transformers.py
does the same comparisons live when transformers is installed. (float32 results move in their
last bits with the CPU's kernels, so regenerating on another machine rewrites some numbers:
the tests' tolerances cover that.)

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

generation.* holds generation beyond greedy (issue 24), for some of the (model, batch) cases above: transformers'
`generate` with beam search (2 to 5 beams, several length penalties, each early_stopping,
num_return_sequences > 1), the logits processors (repetition_penalty above and below 1,
no_repeat_ngram_size, bad_words_ids of one and several tokens, min_new_tokens with eos in play)
and stop_strings, each greedy and with beams: the sequences, and with beams sequences_scores and
beam_indices, and every generated token's transition score (transformers'
compute_transition_scores: with beams the processed log-probs, greedy the processed logits). The eos, the bad words and the
stop strings are taken from what transformers itself generates without them, so they are in
play: an eos "that ends some beams early" is searched among its beams' tokens until one ends
some returned sequences before others. And transformers' full processor list (as its generate
builds it, `_get_logits_processor`: processors, then temperature, top-k, top-p, min-p) on fixed
random scores and left-padded sequences: the distributions sampling draws from.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
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

# Generation settings (issue 24): name -> generate() keywords. "eos": "in-play" is an eos chosen
# from transformers' own output (see in_play_eos); "bad_words_ids": "free" and "stop_strings":
# "free" are taken from its free continuation (see free_words, free_stops).
GENERATION_NEW_TOKENS = 10
GENERATION_SETTINGS = {
    "beams2": dict(num_beams=2),
    "beams3-lp0": dict(num_beams=3, num_return_sequences=2, length_penalty=0.0),
    "beams4-r4-lp2": dict(num_beams=4, num_return_sequences=4, length_penalty=2.0),
    "beams5-r2-lp-1-early": dict(num_beams=5, num_return_sequences=2, length_penalty=-1.0, early_stopping=True),
    "beams3-never-lp1.5": dict(num_beams=3, num_return_sequences=3, early_stopping="never", length_penalty=1.5),
    "beams3-eos": dict(num_beams=3, num_return_sequences=3, eos_token_id="in-play"),
    "beams4-eos-early": dict(num_beams=4, num_return_sequences=2, early_stopping=True, eos_token_id="in-play"),
    "beams3-eos-never-lp-0.5": dict(num_beams=3, early_stopping="never", length_penalty=-0.5, eos_token_id="in-play"),
    "beams2-eos-never": dict(num_beams=2, early_stopping="never", eos_token_id="in-play"),
    "beams4-r2-eos-never-lp2": dict(num_beams=4, num_return_sequences=2, early_stopping="never", length_penalty=2.0, eos_token_id="in-play"),
    "greedy-repetition1.3": dict(repetition_penalty=1.3),
    "greedy-repetition0.7": dict(repetition_penalty=0.7),
    "beams3-repetition1.3": dict(num_beams=3, repetition_penalty=1.3),
    "greedy-ngram1": dict(no_repeat_ngram_size=1),
    "greedy-ngram2": dict(no_repeat_ngram_size=2),
    "beams3-ngram2": dict(num_beams=3, num_return_sequences=3, no_repeat_ngram_size=2),
    "greedy-bad-words": dict(bad_words_ids="free"),
    "beams3-bad-words": dict(num_beams=3, bad_words_ids="free"),
    "greedy-min-new-eos": dict(min_new_tokens=5, eos_token_id="in-play"),
    "beams3-min-new-eos": dict(num_beams=3, num_return_sequences=2, min_new_tokens=5, eos_token_id="in-play"),
    "greedy-stop": dict(stop_strings="free"),
    "beams2-stop": dict(num_beams=2, num_return_sequences=2, stop_strings="free"),
    "beams3-all-processors": dict(
        num_beams=3, repetition_penalty=1.5, no_repeat_ngram_size=3, bad_words_ids="free", min_new_tokens=4,
        eos_token_id="in-play",
    ),
}  # fmt: skip
# Runs for one case only. With early_stopping=True a row whose K finished slots are full takes
# no more, even a better sequence found later: this eos on odd/random is where that shows (found
# by trying the tokens of its beams; most settings never meet the case).
GENERATION_EXTRA = {
    "odd/random": {
        "beams5-r2-lp2-early-eos888": dict(
            num_beams=5, num_return_sequences=2, length_penalty=2.0, early_stopping=True, eos_token_id=888
        )
    },
}
GENERATION_CASES = ["tiny/seed", "tiny/random", "small-outliers/seed", "odd/random", "gpt2-shaped/seed"]
GENERATION_ON_124M = ["beams3-eos", "greedy-bad-words", "beams3-ngram2"]  # the 124M shape: a few, it is slow
PAD = 1  # finished rows get this id (not 0: transformers' beam search fills with eos when the pad id is 0)

# The processor list transformers builds, on fixed scores and sequences (the sampling distributions).
PROCESSOR_VOCAB, PROCESSOR_PROMPT = 300, 12
PROCESSOR_SETTINGS = [
    dict(repetition_penalty=1.3),
    dict(repetition_penalty=0.6, temperature=0.7),
    dict(no_repeat_ngram_size=2, top_k=20),
    dict(no_repeat_ngram_size=1, top_p=0.9),
    dict(bad_words_ids=[[5], [3, 4], [1, 2, 0]], min_p=0.1),
    dict(min_new_tokens=3, temperature=1.3, top_k=50, top_p=0.8, min_p=0.05),
    dict(min_p=0.3),
    dict(min_p=1.0, temperature=0.5),
    dict(repetition_penalty=1.2, no_repeat_ngram_size=3, bad_words_ids=[[6], [2, 1]], min_new_tokens=3, top_k=30, min_p=0.02),
]  # fmt: skip

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


def hf_generate(model, t_ids, t_mask, tokenizer=None, **settings):
    import torch

    with torch.no_grad():
        out = model.generate(
            t_ids,
            attention_mask=t_mask,
            do_sample=False,
            max_new_tokens=GENERATION_NEW_TOKENS,
            pad_token_id=PAD,
            return_dict_in_generate=True,
            output_scores=True,
            **({"tokenizer": tokenizer} if tokenizer is not None else {}),
            **settings,
        )
    return out


def returned_lengths(out, T: int):
    """New tokens of each returned sequence: beam_indices >= 0 with beams; else up to its first eos."""
    if getattr(out, "beam_indices", None) is not None:
        return (out.beam_indices >= 0).sum(-1).numpy()
    return np.array([len(row) - T for row in out.sequences.numpy()])


def in_play_eos(model, t_ids, t_mask, settings) -> int:
    """An eos transformers' own continuation reaches: a token of its output (the 2nd to 4th new
    tokens, in order) that, made eos, ends some returned sequences before others, or else the
    first that changes the output at all."""
    T = t_ids.shape[1]
    free = hf_generate(model, t_ids, t_mask, **settings).sequences.numpy()
    changed = None
    for token in dict.fromkeys(free[:, T + 1 : T + 4].ravel().tolist()):
        out = hf_generate(model, t_ids, t_mask, eos_token_id=token, **settings)
        seqs = out.sequences.numpy()
        if getattr(out, "beam_indices", None) is not None:
            lengths = returned_lengths(out, T)
            if lengths.min() < lengths.max():
                return int(token)
        elif (seqs[:, T:] == token).any(axis=1).any() and not (seqs[:, T:] == token).any(axis=1).all():
            return int(token)  # greedy: some rows stop, others do not
        if changed is None and (seqs.shape != free.shape or (seqs != free).any()):
            changed = int(token)
    assert changed is not None
    return changed


def free_words(free: np.ndarray, T: int, eos: int | None) -> list[list[int]]:
    """Bad words from the free continuation: a token of row 0, two of row 1, three of the last row."""
    single = next(int(t) for t in free[0, T + 1 :] if t != eos)
    return [[single], free[1 % len(free), T : T + 2].tolist(), free[-1, T + 2 : T + 5].tolist()]


def free_stops(free: np.ndarray, T: int, hf_tok) -> list[str]:
    """Stop strings from the free continuation, each spanning a token boundary and ending inside a token."""
    return [hf_tok.decode(free[0, T + 2 : T + 4])[2:6], hf_tok.decode(free[1 % len(free), T + 4 : T + 6])[3:7]]


def generation(arrays: dict, meta: dict, name: str, key: str, model, t_ids, t_mask, hf_tok) -> None:
    """Every GENERATION_SETTINGS run of transformers on one (model, batch) case."""
    T = t_ids.shape[1]
    for setting, settings in {**GENERATION_SETTINGS, **GENERATION_EXTRA.get(key, {})}.items():
        if name == "gpt2-shaped" and setting not in GENERATION_ON_124M:
            continue
        if settings.get("stop_strings") and name == "odd":
            continue  # stop strings need GPT-2's tokenizer: the real vocabulary
        settings = dict(settings)
        fixed = {k: v for k, v in settings.items() if not isinstance(v, str) or k == "early_stopping"}
        free = hf_generate(model, t_ids, t_mask, **fixed).sequences.numpy()
        if settings.get("eos_token_id") == "in-play":
            others = {k: v for k, v in fixed.items() if k != "eos_token_id"}
            settings["eos_token_id"] = in_play_eos(model, t_ids, t_mask, others)
        else:  # the model's own, given explicitly (gpt2np's default is the model's too)
            settings.setdefault("eos_token_id", model.config.eos_token_id)
        if settings.get("bad_words_ids") == "free":
            settings["bad_words_ids"] = free_words(free, T, settings["eos_token_id"])
        if settings.get("stop_strings") == "free":
            settings["stop_strings"] = free_stops(free, T, hf_tok)
        out = hf_generate(model, t_ids, t_mask, tokenizer=hf_tok if "stop_strings" in settings else None, **settings)
        k = f"{key}/generate/{setting}"
        arrays[f"{k}/sequences"] = out.sequences.numpy()
        beams = settings.get("num_beams", 1) > 1
        if beams:
            arrays[f"{k}/sequences_scores"] = out.sequences_scores.numpy()
            arrays[f"{k}/beam_indices"] = out.beam_indices.numpy()
            transition = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
        else:  # the processed logits of the chosen tokens. (Not normalize_logits=True: transformers' log-softmax
            # over that strided axis sums the 50257 terms in float32, up to ~2e-4 from the float64 value.)
            transition = model.compute_transition_scores(out.sequences, out.scores)
        arrays[f"{k}/transition_scores"] = transition.numpy()
        meta["generation"].setdefault(key, {})[setting] = {
            "settings": {**settings, "max_new_tokens": GENERATION_NEW_TOKENS, "pad_token_id": PAD},
            "lengths": returned_lengths(out, T).tolist(),
        }


def processors(arrays: dict) -> None:
    """transformers' processor list (processors, then warpers) on fixed scores and sequences."""
    import torch
    import transformers
    from transformers import GenerationConfig

    V, t = PROCESSOR_VOCAB, PROCESSOR_PROMPT + 2
    rng = np.random.default_rng(13)
    scores = (rng.standard_normal((6, V)) * 3).astype(np.float32)  # [6, 300]
    sequences = rng.integers(0, 6, size=(6, t))  # [6, 14] few distinct ids: n-grams and words repeat
    first_real = np.array([0, 3, 7, 0, 1, 13])
    sequences[np.arange(t)[None, :] < first_real[:, None]] = V - 1  # the pads: the pad id, also the eos
    arrays["processors/scores"], arrays["processors/sequences"] = scores, sequences
    arrays["processors/first_real"] = first_real
    config = transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=V, bos_token_id=V - 1, eos_token_id=V - 1
    )
    model = transformers.GPT2LMHeadModel(config)
    defaults = GenerationConfig._get_default_generation_params()  # as generate() fills them in
    mask = torch.tensor((np.arange(t)[None, :] >= first_real[:, None]).astype(np.int64))
    for i, settings in enumerate(PROCESSOR_SETTINGS):
        config = GenerationConfig(
            **{**defaults, "do_sample": True, "eos_token_id": V - 1, "pad_token_id": V - 1, **settings}
        )
        config._eos_token_tensor = torch.tensor([V - 1])
        chain = model._get_logits_processor(
            config, input_ids_seq_length=PROCESSOR_PROMPT, model_kwargs={"attention_mask": mask}, device="cpu"
        )
        arrays[f"processors/{i}"] = chain(torch.tensor(sequences), torch.tensor(scores)).numpy()


def run_info() -> dict:
    import torch
    import transformers

    return {
        "generated_by": "python scripts/data/make_references.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def write(name: str, arrays: dict, meta: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (OUT / f"{name}.npz").stat().st_size
    print(f"wrote {OUT / name}.npz ({size / 1e6:.2f} MB) and {name}.json")


def make_generation() -> None:
    """tests/data/generation.*: GENERATION_SETTINGS on GENERATION_CASES, and the processor lists."""
    import torch
    import transformers
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)
    arrays: dict = {}
    meta = {
        **run_info(),
        "models": {},
        "new_tokens": GENERATION_NEW_TOKENS,
        "cases": GENERATION_CASES,
        "generation": {},
        "processor_settings": PROCESSOR_SETTINGS,
    }
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(str(ROOT / "gpt2np" / "tokenizer_files"))
    for m_index, name in enumerate(TEST_MODELS):
        cases = [c for c in GENERATION_CASES if c.startswith(name + "/")]
        if not cases:
            continue
        folder = build_test_model(name, MODELS_DIR)
        meta["models"][name] = {"sha256": sha256_of(folder / "model.safetensors")}
        model = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        for b_name, (ids, mask) in batches(model.config.vocab_size, 7 + m_index).items():
            key = f"{name}/{b_name}"
            if key not in cases:
                continue
            arrays[f"{key}/input_ids"], arrays[f"{key}/attention_mask"] = ids, mask
            generation(arrays, meta, name, key, model, torch.tensor(ids), torch.tensor(mask), hf_tok)
            print(f"{key}: done")
    processors(arrays)
    write("generation", arrays, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["references", "generation"], help="write only this file")
    args = parser.parse_args()
    if args.only != "generation":
        make_references()
    if args.only != "references":
        make_generation()


def make_references() -> None:
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)
    arrays, meta = (
        {},
        {
            **run_info(),
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
    write("references", arrays, meta)


if __name__ == "__main__":
    main()
