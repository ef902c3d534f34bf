"""gpt2np against transformers, live (needs torch + transformers; required in CI).

Every comparison is at real (non-pad) positions: what a pad position computes is meaningless
and differs by design (see gpt2np/attention.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2
from gpt2np.stopping import StopStrings

TOLERANCE = 1e-4  # max |logits - transformers| (issue 2)
FILLS = ["-inf", "-1e9", "min"]
MODELS = ["tiny", "small-outliers", "odd", "gpt2-shaped"]


def batch_for(model_name):
    """The seed batch for real-vocabulary models; a random left-padded one for "odd"."""
    if model_name != "odd":
        return SEED_INPUT_IDS, SEED_ATTENTION_MASK
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(3, 10))
    mask = (np.arange(10)[None, :] >= np.array([0, 4, 9])[:, None]).astype(np.int64)
    return ids, mask


def transformers_generate_positions(hf, ids, mask):
    """The position ids transformers' `generate` gives a padded batch, from transformers itself
    (never from gpt2np: a reference must not be computed by the code it checks)."""
    import torch

    return hf._prepare_position_ids_for_generation(torch.tensor(ids), {"attention_mask": torch.tensor(mask)}).numpy()


def run_hf(hf, ids, mask, position_ids="generate", **kwargs):
    """transformers' forward with the positions its `generate` would use ("generate"), or
    given ones, or None (its plain forward: arange even with pads)."""
    import torch

    if isinstance(position_ids, str):
        position_ids = transformers_generate_positions(hf, ids, mask)
    with torch.no_grad():
        return hf(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=None if position_ids is None else torch.tensor(position_ids),
            **kwargs,
        )


def test_transformers_positions_skip_the_pads(model_dir, hf_model):
    """What the comparisons rely on, said with a formula written here: pads are not counted."""
    hf = hf_model(model_dir("tiny"))
    for name in MODELS:
        ids, mask = batch_for(name)
        expected = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0)
        np.testing.assert_array_equal(transformers_generate_positions(hf, ids, mask), expected)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", MODELS)
def test_logits_hidden_states_and_attentions(model_dir, hf_model, name, attn):
    folder = model_dir(name)
    hf = hf_model(folder, attn)
    ids, mask = batch_for(name)
    real = mask.astype(bool)
    ref = run_hf(hf, ids, mask, output_hidden_states=True, output_attentions=attn == "eager")
    worst = 0.0
    for fill in FILLS:
        out = GPT2.from_pretrained(folder, mask_fill=fill)(
            ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
        diff = np.abs(out.logits - ref.logits.numpy())[real].max()
        worst = max(worst, diff)
        assert diff <= TOLERANCE, f"{name} {attn} fill={fill}: max |logits diff| = {diff:.3g}"
        assert len(out.hidden_states) == len(ref.hidden_states)
        for layer, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
            theirs = theirs.numpy()
            scale = max(1.0, float(np.abs(theirs[real]).max()))  # outlier dimensions reach hundreds
            assert np.abs(ours - theirs)[real].max() <= TOLERANCE * scale, f"hidden state {layer}"
        if attn == "eager":  # sdpa cannot return its weights
            for ours, theirs in zip(out.attentions, ref.attentions):
                rows = np.broadcast_to(real[:, None, :], ours.shape[:3])  # real query rows
                assert np.abs(ours - theirs.numpy())[rows].max() <= 1e-5
    print(f"{name} {attn}: max |logits - transformers| over fills = {worst:.3g}")


@pytest.mark.parametrize("name", MODELS)
def test_unpadded_batch_and_arange_positions(model_dir, hf_model, name):
    """No padding: defaults agree with transformers' plain forward. With padding,
    position_ids=arange reproduces transformers' plain forward (which does not derive
    positions from the mask)."""
    folder = model_dir(name)
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    ids, mask = batch_for(name)
    full = np.ones_like(mask)
    ref = run_hf(hf, ids, full, position_ids=None)
    assert np.abs(model(ids).logits - ref.logits.numpy()).max() <= TOLERANCE
    ref = run_hf(hf, ids, mask, position_ids=None)  # transformers: arange even with pads
    ours = model(ids, attention_mask=mask, position_ids=np.arange(ids.shape[1])).logits
    assert np.abs(ours - ref.logits.numpy())[mask.astype(bool)].max() <= TOLERANCE


@pytest.mark.parametrize("name", ["tiny", "odd", "gpt2-shaped"])
def test_generate_matches_transformers(model_dir, hf_model, name):
    """Greedy, left-padded, token for token: eager and sdpa, every fill, cache on and off,
    max_new_tokens, max_length, and eos stopping with a pad id of its own."""
    import torch

    folder = model_dir(name)
    ids, mask = batch_for(name)
    eos_default = GPT2.from_pretrained(folder).config.eos_token_id
    refs = {}
    for attn in ("eager", "sdpa"):
        hf = hf_model(folder, attn)
        common = dict(attention_mask=torch.tensor(mask), do_sample=False)
        refs[attn, "new"] = hf.generate(
            torch.tensor(ids), max_new_tokens=10, pad_token_id=eos_default, **common
        ).numpy()
        refs[attn, "len"] = hf.generate(
            torch.tensor(ids), max_length=ids.shape[1] + 4, pad_token_id=eos_default, **common
        ).numpy()
        eos = int(refs[attn, "new"][1, ids.shape[1] + 2])  # row 1's third token: that row stops early
        refs[attn, "eos"] = hf.generate(
            torch.tensor(ids), max_new_tokens=10, eos_token_id=eos, pad_token_id=1, **common
        ).numpy()
        refs[attn, "eos_id"] = eos
    assert refs["eager", "eos_id"] == refs["sdpa", "eos_id"]
    for fill in FILLS:
        model = GPT2.from_pretrained(folder, mask_fill=fill)
        for use_cache in (True, False):
            for attn in ("eager", "sdpa"):
                got = model.generate(ids, attention_mask=mask, max_new_tokens=10, use_cache=use_cache)
                np.testing.assert_array_equal(got, refs[attn, "new"])
                got = model.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 4, use_cache=use_cache)
                np.testing.assert_array_equal(got, refs[attn, "len"])
                got = model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=10,
                    eos_token_id=refs[attn, "eos_id"],
                    pad_token_id=1,
                    use_cache=use_cache,
                )
                np.testing.assert_array_equal(got, refs[attn, "eos"])


@pytest.mark.parametrize("name", MODELS)
def test_float32_is_as_close_to_float64_truth_as_transformers(model_dir, hf_model, name):
    """The fidelity standard: our float32 logits are no further from transformers-in-float64
    than transformers' own float32 logits are. Measured as the RMS error over all real
    logits (the max over millions of values is too noisy to rank two float32 codes); the
    max is reported. Our float64 mode must agree with transformers' float64 to ~1e-9."""
    folder = model_dir(name)
    ids, mask = batch_for(name)
    real = mask.astype(bool)
    truth = run_hf(hf_model(folder, "eager", "float64"), ids, mask).logits.numpy()[real]
    theirs = run_hf(hf_model(folder, "eager", "float32"), ids, mask).logits.numpy()[real].astype(np.float64)
    ours = GPT2.from_pretrained(folder)(ids, attention_mask=mask).logits[real].astype(np.float64)
    ours64 = GPT2.from_pretrained(folder, dtype="float64")(ids, attention_mask=mask).logits[real]

    def rms(d):
        return float(np.sqrt(np.mean(d**2)))

    print(
        f"{name}: rms ours {rms(ours - truth):.3g} vs transformers {rms(theirs - truth):.3g}; "
        f"max ours {np.abs(ours - truth).max():.3g} vs {np.abs(theirs - truth).max():.3g}"
    )
    assert rms(ours - truth) <= rms(theirs - truth)
    assert ours64.dtype == np.float64 and np.abs(ours64 - truth).max() <= 1e-9


# --- generation beyond greedy: beam search, processors, stop strings, scores -----------------

BEAM_SETTINGS = [
    dict(num_beams=2),
    dict(num_beams=3, length_penalty=0.0),
    dict(num_beams=4, num_return_sequences=4, length_penalty=2.0),
    dict(num_beams=5, num_return_sequences=2, length_penalty=-1.0, early_stopping=True),
    dict(num_beams=3, num_return_sequences=3, early_stopping="never", length_penalty=1.5),
    dict(num_beams=3, early_stopping="never", length_penalty=-0.5),
    dict(num_beams=4, num_return_sequences=2, early_stopping=True),
    dict(num_beams=2, num_return_sequences=2, early_stopping=False, length_penalty=0.7),
]


def hf_generate(hf, ids, mask, tokenizer=None, **settings):
    """transformers' generate with scores, as numpy: (sequences, sequences_scores, beam_indices, scores)."""
    import torch

    with torch.no_grad():
        out = hf.generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **({"tokenizer": tokenizer} if tokenizer is not None else {}),
            **settings,
        )
    beams = settings.get("num_beams", 1) > 1
    return (
        out.sequences.numpy(),
        out.sequences_scores.numpy() if beams else None,
        out.beam_indices.numpy() if beams else None,
        [s.numpy() for s in out.scores],
    )


def assert_same_generation(model, ids, mask, ref, use_cache=True, tokenizer=None, **settings):
    sequences, sequences_scores, beam_indices, scores = ref
    out = model.generate(
        ids,
        attention_mask=mask,
        use_cache=use_cache,
        return_dict_in_generate=True,
        output_scores=True,
        tokenizer=tokenizer,
        **settings,
    )
    np.testing.assert_array_equal(out.sequences, sequences)
    if beam_indices is not None:
        np.testing.assert_array_equal(out.beam_indices, beam_indices)
        # sums of up to 12 float32 log-probs (up to ~500 with a negative length penalty)
        np.testing.assert_allclose(out.sequences_scores, sequences_scores, rtol=1e-5, atol=1e-5)
    assert len(out.scores) == len(scores)
    for ours, theirs in zip(out.scores, scores):
        np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))  # the same tokens forbidden
        finite = np.isfinite(theirs)
        assert np.abs(ours[finite] - theirs[finite]).max() <= TOLERANCE


def eos_in_play(model, ids, mask, settings):
    """A token of the beams' own (their 2nd to 4th new tokens, in a fixed order) that, made eos,
    ends some returned sequences before others; else one that changes the result (a length
    penalty > 1 can keep every short sequence out of the returned ones). Searched with gpt2np,
    which is quick; what is expected of it then comes from transformers alone."""
    free = model.generate(ids, attention_mask=mask, pad_token_id=1, **settings)
    T, changed = ids.shape[1], None
    for token in dict.fromkeys(free[:, T + 1 : T + 4].ravel().tolist()):
        out = model.generate(
            ids, attention_mask=mask, eos_token_id=token, pad_token_id=1, return_dict_in_generate=True, **settings
        )
        lengths = (out.beam_indices >= 0).sum(axis=1)
        if lengths.min() < lengths.max():
            return token
        if changed is None and (out.sequences.shape != free.shape or (out.sequences != free).any()):
            changed = token
    assert changed is not None, "no token of the beams changes the search as eos"
    return changed


BEAM_CASES = [(name, s) for name in ("tiny", "odd") for s in BEAM_SETTINGS] + [
    ("small-outliers", BEAM_SETTINGS[i]) for i in (1, 3, 4)
]


@pytest.mark.parametrize(
    "name, settings", BEAM_CASES, ids=[f"{n}-" + ",".join(f"{k}={v}" for k, v in s.items()) for n, s in BEAM_CASES]
)
def test_beam_search_matches_transformers(model_dir, hf_model, name, settings):
    """Token for token, with the beams each token came from and the scores: left-padded rows of
    very different lengths, without an eos the models produce and with one that ends some
    beams and not others; the KV cache reordered, and recomputed (use_cache=False)."""
    folder = model_dir(name)
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    ids, mask = batch_for(name)
    settings = dict(settings, max_new_tokens=10)
    ref = hf_generate(hf, ids, mask, pad_token_id=1, **settings)
    assert_same_generation(model, ids, mask, ref, pad_token_id=1, **settings)
    eos = eos_in_play(model, ids, mask, settings)
    ref = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=1, **settings)
    lengths = (ref[2] >= 0).sum(axis=1)
    early = lengths.min() < lengths.max()
    assert early or settings.get("length_penalty", 1.0) > 1.0 or name == "odd", "no returned sequence ended early"
    assert_same_generation(model, ids, mask, ref, eos_token_id=eos, pad_token_id=1, **settings)
    if name == "tiny":  # every beam recomputed whole at each step: no cache to reorder
        assert_same_generation(model, ids, mask, ref, use_cache=False, eos_token_id=eos, pad_token_id=1, **settings)


def test_beam_search_matches_transformers_on_the_124m_shape(model_dir, hf_model):
    folder = model_dir("gpt2-shaped")
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    settings = dict(num_beams=4, num_return_sequences=2, max_new_tokens=6, pad_token_id=1)
    ref = hf_generate(hf, SEED_INPUT_IDS, SEED_ATTENTION_MASK, **settings)
    assert_same_generation(model, SEED_INPUT_IDS, SEED_ATTENTION_MASK, ref, **settings)


PROCESSOR_SETTINGS = [
    dict(repetition_penalty=1.3),
    dict(repetition_penalty=0.7),
    dict(no_repeat_ngram_size=1),
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=3),
    dict(bad_words_ids="words"),
    dict(min_new_tokens=6, eos_token_id="eos"),
    dict(min_length=13, eos_token_id="eos"),
    dict(repetition_penalty=1.5, no_repeat_ngram_size=2, bad_words_ids="words", min_new_tokens=5, eos_token_id="eos"),
]


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("settings", PROCESSOR_SETTINGS, ids=lambda s: ",".join(s))
@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_processors_match_transformers_generate(model_dir, hf_model, name, settings, num_beams):
    """Greedy and beam search with each processor. The bad words and the eos come from what
    transformers generates freely, so they are really in play: single- and multi-token bad
    words of the continuation, and an eos that a row would say early."""
    folder = model_dir(name)
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    base = dict(max_new_tokens=12, pad_token_id=7, num_beams=num_beams)
    free = hf_generate(hf, ids, mask, **base)[0][:, 8:]
    eos = int(free[2, 3])
    single = next(int(t) for t in free[0, 1:] if t != eos)  # a word of one token that is not the eos
    filled = {
        "words": [[single], [int(free[1, 0]), int(free[1, 1])], [int(free[2, 2]), int(free[2, 3]), int(free[2, 4])]],
        "eos": eos,
    }
    settings = {k: filled.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    ref = hf_generate(hf, ids, mask, **base, **settings)
    assert_same_generation(model, ids, mask, ref, **base, **settings)
    if "bad_words_ids" in settings or "min_length" in settings or "min_new_tokens" in settings:
        assert not np.array_equal(ref[0][:, 8:], free[:, : ref[0].shape[1] - 8])  # the rule changed something


@pytest.mark.parametrize("num_beams", [1, 2])
@pytest.mark.parametrize("with_eos", [True, False])
def test_stop_strings_match_transformers(
    model_dir, hf_model, tokenizer, tokenizer_dir, transformers, num_beams, with_eos
):
    """Stop strings taken from the free continuation, spanning a token boundary and ending
    inside a token. With an eos, token for token. Without one (eos_token_id=None) transformers
    does not pad what follows a stop (greedy: the row runs on until every row has stopped;
    beams: -1); gpt2np pads it as after an eos, so there the tokens up to each stop must agree."""
    folder = model_dir("tiny")
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(str(tokenizer_dir))
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    base = dict(max_new_tokens=12, pad_token_id=7, num_beams=num_beams, eos_token_id=50256 if with_eos else None)
    free = hf_generate(hf, ids, mask, **base)[0][:, 8:]
    stops = [tokenizer.decode(free[0, 2:4])[2:6], tokenizer.decode(free[1, 4:6])[3:7]]
    assert all(len(s) == 4 for s in stops)
    ref = hf_generate(hf, ids, mask, tokenizer=hf_tok, stop_strings=stops, **base)
    if with_eos:
        assert ref[0].shape[1] < 8 + 12 or (ref[0][:, 8:] == 7).any()  # some row stopped
        assert_same_generation(model, ids, mask, ref, tokenizer=tokenizer, stop_strings=stops, **base)
        return
    got = model.generate(ids, attention_mask=mask, tokenizer=tokenizer, stop_strings=stops, **base)
    stop = StopStrings(stops, tokenizer, tokenizer.vocab_size)
    stopped = 0
    for ours, theirs in zip(got, ref[0]):
        ends = [t for t in range(9, len(theirs) + 1) if stop(theirs[None, :t])[0]]
        end = ends[0] if ends else len(theirs)  # transformers' row up to its first stop
        np.testing.assert_array_equal(ours[:end], theirs[:end])
        assert (ours[end:] == 7).all()
        stopped += bool(ends)
    assert stopped >= 1


SAMPLING_SETTINGS = [
    dict(temperature=0.7, top_k=0, min_p=0.05),
    dict(temperature=1.3, top_k=20, top_p=0.9, min_p=0.1),
    dict(top_k=50, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(top_p=0.8, bad_words_ids=[[262], [290, 257]], min_new_tokens=4, eos_token_id=11),
    dict(temperature=0.5, min_p=0.2, repetition_penalty=0.8, num_return_sequences=3),
]


@pytest.mark.parametrize("settings", SAMPLING_SETTINGS, ids=lambda s: ",".join(s))
def test_sampling_draws_from_the_distribution_transformers_builds(model_dir, hf_model, settings):
    """The draw cannot match torch's generator, so check what each step draws from: our
    processed scores equal the processor list transformers' generate builds for the same
    settings (its order: processors, then temperature, top-k, top-p, min-p), applied to our
    raw logits and our sequences so far."""
    import torch
    from transformers import GenerationConfig

    folder = model_dir("tiny")
    hf, model = hf_model(folder), GPT2.from_pretrained(folder)
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=8, do_sample=True, seed=4, pad_token_id=7,
        return_dict_in_generate=True, output_scores=True, output_logits=True, **settings,
    )  # fmt: skip
    R = settings.get("num_return_sequences", 1)
    eos = settings.get("eos_token_id", 50256)
    # transformers' generate fills in its defaults (top_k=50 among them) before building the list
    defaults = GenerationConfig._get_default_generation_params()
    config = GenerationConfig(**{**defaults, "do_sample": True, "pad_token_id": 7, "eos_token_id": eos, **settings})
    config._eos_token_tensor = torch.tensor([eos])
    t_mask = torch.tensor(np.repeat(mask, R, axis=0))
    chain = hf._get_logits_processor(
        config, input_ids_seq_length=8, model_kwargs={"attention_mask": t_mask}, device="cpu"
    )
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        expected = chain(torch.tensor(out.sequences[:, : 8 + step]), torch.tensor(logits)).numpy()
        np.testing.assert_array_equal(np.isneginf(scores), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(scores[finite], expected[finite], rtol=1e-5, atol=1e-6)
    assert out.sequences.shape[0] == 3 * R
