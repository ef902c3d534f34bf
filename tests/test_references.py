"""gpt2np against transformers' stored outputs (tests/data/references.*), without torch.

The references were made by scripts/data/make_references.py from the random test models; the
models are rebuilt here from their seeds (plain NumPy, no gpt2np forward pass), and their sha256
must equal the one recorded, so a mismatch can only mean gpt2np computes something else.

Two precisions:
- float32 against transformers' float32, within 1e-4 (the contract of issue 2): what a user
  sees. The clean error is 2e-6 .. 8e-6 (logits of size ~10), so a bug that moves the logits
  by less than ~1e-4 hides below this tolerance;
- float64 against transformers' float64, within 1e-9 (the clean error is <= 3e-14): gpt2np's
  float64 mode computes the same formulas, so any change to a formula shows, however small
  (GELU's constant in its 4th digit, eps outside the square root, ddof=1).
The cases are pinned here: a shrunken reference file fails instead of silently testing less.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA, build_model

from gpt2np import GPT2
from gpt2np.hub import sha256_of

TOLERANCE = 1e-4  # max |logits - transformers| at every real position, float32 (issue 2)
TOLERANCE_64 = 1e-9  # float64 against transformers in float64 (clean: <= 3e-14)
META = json.loads((DATA / "references.json").read_text())
REF = np.load(DATA / "references.npz")
FILLS = ["-inf", "-1e9", "min"]
CASES = [
    "tiny/random",
    "tiny/single",
    "tiny/seed",
    "small-outliers/random",
    "small-outliers/single",
    "small-outliers/seed",
    "odd/random",
    "odd/single",
    "gpt2-shaped/random",
    "gpt2-shaped/single",
    "gpt2-shaped/seed",
]
ATTNS = ["eager", "sdpa"]
N_WARPER_SETTINGS = 12


def test_the_reference_file_holds_every_pinned_case():
    assert META["cases"] == CASES
    stored = {k.rsplit("/", 2)[0] for k in REF.files if k.endswith("/eager/top_ids")}
    assert stored == set(CASES)
    assert len(REF["warpers/settings"]) == N_WARPER_SETTINGS


@pytest.fixture(scope="module")
def models():
    """models(name, fill, dtype) -> GPT2; weights loaded once per (name, dtype), the fill is a setting."""
    cache = {}

    def get(name, fill="min", dtype="float32"):
        if (name, dtype) not in cache:
            folder = build_model(name)
            digest = sha256_of(folder / "model.safetensors")
            assert digest == META["models"][name]["sha256"], (
                f"the rebuilt test model {name} differs from the one the references were made from; "
                "rerun scripts/data/make_references.py"
            )
            cache[(name, dtype)] = GPT2.from_pretrained(folder, dtype=dtype)
        model = cache[(name, dtype)]
        return GPT2(model.config, model.weights, dtype=dtype, mask_fill=fill)

    return get


def inputs(case):
    return REF[f"{case}/input_ids"], REF[f"{case}/attention_mask"]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(models, case, attn, fill):
    name = case.split("/")[0]
    model = models(name, fill)
    ids, mask = inputs(case)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.astype(bool)
    logits = out.logits[real]  # [n_real, V]
    columns = REF[f"{name}/columns"]
    k = f"{case}/{attn}"
    assert np.abs(logits[:, columns] - REF[f"{k}/logits_columns"]).max() <= TOLERANCE
    top_ids, top_logits = REF[f"{k}/top_ids"], REF[f"{k}/top_logits"]
    assert np.abs(np.take_along_axis(logits, top_ids, axis=-1) - top_logits).max() <= TOLERANCE
    # transformers' best token is ours too (or within the tolerance of our best)
    assert (logits.max(axis=-1) - np.take_along_axis(logits, top_ids[:, :1], axis=-1)[:, 0]).max() <= TOLERANCE
    assert np.abs(out.hidden_states[-1][real] - REF[f"{k}/last_hidden"]).max() <= TOLERANCE


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", CASES)
def test_arange_positions_reproduce_transformers_plain_forward(models, case, attn):
    """transformers' forward (outside generate) numbers positions 0..T-1 even for pads."""
    name = case.split("/")[0]
    ids, mask = inputs(case)
    logits = models(name)(ids, attention_mask=mask, position_ids=np.arange(ids.shape[1])).logits[mask.astype(bool)]
    expected = REF[f"{case}/{attn}/arange_logits_columns"]
    assert np.abs(logits[:, REF[f"{name}/columns"]] - expected).max() <= TOLERANCE


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_matches_transformers(models, case, fill, use_cache):
    """Token for token against transformers' generate, eager and sdpa alike."""
    name = case.split("/")[0]
    model = models(name, fill)
    ids, mask = inputs(case)
    new_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=META["new_tokens"], use_cache=use_cache)
    max_length = model.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 5, use_cache=use_cache)
    for attn in ATTNS:
        k = f"{case}/{attn}"
        np.testing.assert_array_equal(new_tokens, REF[f"{k}/generate_new_tokens"])
        np.testing.assert_array_equal(max_length, REF[f"{k}/generate_max_length"])
        eos = int(REF[f"{k}/eos_token_id"])
        got = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=META["new_tokens"],
            eos_token_id=eos,
            pad_token_id=0,
            use_cache=use_cache,
        )
        np.testing.assert_array_equal(got, REF[f"{k}/generate_eos"])


def test_eos_case_really_stops_a_row_early():
    """The eos references are only a test of stopping if some row did stop before the end."""
    stopped = 0
    for case in CASES:
        gen, eos = REF[f"{case}/eager/generate_eos"], int(REF[f"{case}/eager/eos_token_id"])
        T = REF[f"{case}/input_ids"].shape[1]
        stopped += int(((gen[:, T:-1] == eos).any(axis=1)).sum())
    assert stopped >= 3


def test_position_ids_are_transformers_own():
    """The references ran with the position ids transformers' generate computes (stored); a
    formula written here must agree, and gpt2np's default (no position_ids) is checked above
    against logits made with them."""
    for case in CASES:
        mask = REF[f"{case}/attention_mask"]
        expected = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0)  # count the real tokens before
        np.testing.assert_array_equal(REF[f"{case}/position_ids"], expected)


@pytest.mark.parametrize("fill", ["-inf", "min"])
@pytest.mark.parametrize("case", CASES)
def test_float64_matches_transformers_float64(models, case, fill):
    """Our float64 mode against transformers run in float64: the same formulas, to ~1e-14."""
    name = case.split("/")[0]
    model = models(name, fill, "float64")
    ids, mask = inputs(case)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.astype(bool)
    logits = out.logits[real]  # [n_real, V] float64
    assert logits.dtype == np.float64
    k = f"{case}/float64"
    assert np.abs(logits[:, REF[f"{name}/columns"]] - REF[f"{k}/logits_columns"]).max() <= TOLERANCE_64
    top_ids = REF[f"{case}/eager/top_ids"]
    assert np.abs(np.take_along_axis(logits, top_ids, axis=-1) - REF[f"{k}/top_logits"]).max() <= TOLERANCE_64
    assert np.abs(out.hidden_states[-1][real] - REF[f"{k}/last_hidden"]).max() <= TOLERANCE_64


@pytest.mark.parametrize("case", CASES)
def test_scores_match_transformers_log_softmax_float64(models, case):
    """model.score in float64 against log_softmax of transformers' float64 logits at t - 1,
    read at token t, for every real token with a real token before it."""
    name = case.split("/")[0]
    ids, mask = inputs(case)
    scores = models(name, "min", "float64").score(ids, attention_mask=mask)
    got = scores.token_logprobs[scores.scored]  # row-major, as stored
    expected = REF[f"{case}/float64/scored_logprobs"]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE_64


@pytest.mark.parametrize("i", range(N_WARPER_SETTINGS))
def test_sampling_filters_match_stored_transformers_warpers(i):
    """temperature -> top-k -> top-p, against transformers' warpers in that order (stored)."""
    from gpt2np.sampling import filter_logits

    temperature, top_k, top_p = REF["warpers/settings"][i]
    logits = REF["warpers/logits"]
    expected = REF[f"warpers/{i}"]
    got = filter_logits(logits.copy(), float(temperature), int(top_k), float(top_p))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))  # the same tokens survive
    kept = np.isfinite(expected)
    np.testing.assert_allclose(got[kept], expected[kept], rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "small-outliers", "odd", "gpt2-shaped"])
def test_float32_is_as_close_to_the_float64_truth_as_transformers(models, name):
    """The fidelity standard, without torch: our float32 logits are no further from
    transformers-in-float64 than transformers' own float32 logits (eager) are, as an RMS over
    the stored logits of every real position of the model's batches (one batch alone is too
    few numbers to rank two float32 codes)."""
    ours, theirs = [], []
    for case in [c for c in CASES if c.startswith(name + "/")]:
        ids, mask = inputs(case)
        logits = models(name)(ids, attention_mask=mask).logits[mask.astype(bool)][:, REF[f"{name}/columns"]]
        truth = REF[f"{case}/float64/logits_columns"]
        ours.append((logits.astype(np.float64) - truth).ravel())
        theirs.append((REF[f"{case}/eager/logits_columns"].astype(np.float64) - truth).ravel())

    def rms(d):
        return float(np.sqrt(np.mean(np.concatenate(d) ** 2)))

    ratio = rms(ours) / rms(theirs)
    print(f"{name}: rms ours {rms(ours):.3g} vs transformers {rms(theirs):.3g} (ratio {ratio:.2f})")
    assert ratio <= 1
    if name == "small-outliers":
        # Where the residual stream holds values in the hundreds, keeping it in float64 (model.py)
        # is what puts us well ahead: 0.35 (Haswell kernel) and 0.37 (SkylakeX) measured, against
        # 0.64 with a float32 stream, which this bound catches.
        assert ratio <= 0.5


# --- generation beyond greedy (issue 24): tests/data/generation.* ---------------------------

GEN_META = json.loads((DATA / "generation.json").read_text())
GEN = np.load(DATA / "generation.npz")
GENERATION_CASES = ["tiny/seed", "tiny/random", "small-outliers/seed", "odd/random", "gpt2-shaped/seed"]
N_GENERATION_RUNS = 94  # 23 settings on each case, less stop strings on "odd" (+ 1 of its own), 3 on the 124M shape
N_PROCESSOR_SETTINGS = 9
GENERATION_RUNS = [(case, setting) for case, runs in GEN_META["generation"].items() for setting in runs]


def test_the_generation_file_holds_every_pinned_run():
    assert GEN_META["cases"] == GENERATION_CASES
    assert len(GENERATION_RUNS) == N_GENERATION_RUNS
    assert {case for case, _ in GENERATION_RUNS} == set(GENERATION_CASES)
    assert len(GEN_META["processor_settings"]) == N_PROCESSOR_SETTINGS
    for name, info in GEN_META["models"].items():
        assert info["sha256"] == META["models"][name]["sha256"]  # the same test models as references.*


def test_the_stored_runs_put_eos_and_the_settings_in_play():
    """The runs test stopping only if some sequences really stop early, beams and rows alike."""
    early = []
    for case, setting in GENERATION_RUNS:
        lengths = GEN_META["generation"][case][setting]["lengths"]
        if setting.startswith("beams") and "eos" in setting:
            early.append(min(lengths) < max(lengths))
    assert sum(early) >= 0.8 * len(early)
    assert any(
        min(GEN_META["generation"][c]["greedy-stop"]["lengths"]) < 10
        for c in GEN_META["generation"]
        if "greedy-stop" in GEN_META["generation"][c]
    )


@pytest.mark.parametrize("case, setting", GENERATION_RUNS, ids=[f"{c}-{s}" for c, s in GENERATION_RUNS])
def test_generation_matches_stored_transformers(models, tokenizer, case, setting):
    """Beam search, the processors and stop strings, token for token against transformers'
    generate; with beams, the beams each token came from and the sequences' scores; and every
    generated token's transition score (transformers' compute_transition_scores)."""
    name = case.split("/")[0]
    settings = dict(GEN_META["generation"][case][setting]["settings"])
    k = f"{case}/generate/{setting}"
    ids, mask = GEN[f"{case}/input_ids"], GEN[f"{case}/attention_mask"]
    if "stop_strings" in settings:
        settings["tokenizer"] = tokenizer
    model = models(name)
    out = model.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **settings)
    np.testing.assert_array_equal(out.sequences, GEN[f"{k}/sequences"])
    if settings.get("num_beams", 1) > 1:
        np.testing.assert_array_equal(out.beam_indices, GEN[f"{k}/beam_indices"])
        np.testing.assert_allclose(out.sequences_scores, GEN[f"{k}/sequences_scores"], rtol=1e-5, atol=1e-5)
        transition = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    else:
        transition = model.compute_transition_scores(out.sequences, out.scores)  # the processed logits
    np.testing.assert_allclose(transition, GEN[f"{k}/transition_scores"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("i", range(N_PROCESSOR_SETTINGS))
def test_processors_and_warpers_match_stored_transformers(i):
    """The distribution sampling draws from: our processors then warpers, against the list
    transformers' generate builds (its order) on the same scores and left-padded sequences."""
    from gpt2np.processors import Processors
    from gpt2np.sampling import filter_logits

    s = GEN_META["processor_settings"][i]
    scores, seq, first_real = GEN["processors/scores"], GEN["processors/sequences"], GEN["processors/first_real"]
    V, prompt_len = scores.shape[1], seq.shape[1] - 2
    min_new = s.get("min_new_tokens", 0)
    processed = Processors(
        repetition_penalty=s.get("repetition_penalty", 1.0),
        first_real=first_real,
        no_repeat_ngram_size=s.get("no_repeat_ngram_size", 0),
        bad_words_ids=tuple(tuple(w) for w in s.get("bad_words_ids", ())),
        eos_token_id=V - 1,
        min_length=prompt_len + min_new if min_new else 0,
    )(scores.copy(), seq)
    got = filter_logits(processed, s.get("temperature", 1.0), s.get("top_k", 50), s.get("top_p", 1.0), s.get("min_p"))
    expected = GEN[f"processors/{i}"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    kept = np.isfinite(expected)
    np.testing.assert_allclose(got[kept], expected[kept], rtol=1e-6)
