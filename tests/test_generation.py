"""Generation's own promises (transformers' tokens are checked in test_references.py and
test_against_transformers.py): a row alone equals the row in a batch, the cache changes
nothing, eos and padding, streaming, the default length, reproducible sampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, GenerationError, InputError, ModelError

FILLS = ["-inf", "-1e9", "min"]


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))


@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
@pytest.mark.parametrize("fill", FILLS)
def test_each_row_alone_equals_the_batch(model_dir, name, fill):
    model = GPT2.from_pretrained(model_dir(name), mask_fill=fill)
    batch = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=15)
    for row, mask in enumerate(SEED_ATTENTION_MASK.astype(bool)):
        alone = model.generate(SEED_INPUT_IDS[row][mask][None], max_new_tokens=15)
        np.testing.assert_array_equal(alone[0, mask.sum() :], batch[row, 8:])


def test_generated_text_is_not_a_degenerate_loop(tiny):
    """The checks above would be weak if the random model repeated one token forever."""
    out = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=15)
    assert all(len(set(row[8:])) >= 5 for row in out)
    assert len({tuple(row[8:]) for row in out}) == 3


def test_cache_on_and_off_give_the_same_tokens(tiny):
    a = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=12, use_cache=True)
    b = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=12, use_cache=False)
    np.testing.assert_array_equal(a, b)


def test_lengths_prompt_included(tiny):
    out = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_length=13)
    assert out.shape == (3, 13)
    np.testing.assert_array_equal(out[:, :8], SEED_INPUT_IDS)  # the prompt comes back unchanged
    assert tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).shape == (3, 20)  # default max_length
    # max_new_tokens wins over max_length, as in transformers
    assert tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_length=9, max_new_tokens=4).shape == (
        3,
        12,
    )
    one = tiny.generate(SEED_INPUT_IDS[1], max_new_tokens=3)
    assert one.shape == (11,)  # 1-D in, 1-D out


def test_eos_finishes_rows_and_pads_them(tiny):
    free = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)
    eos = int(free[0, 8 + 2])  # what row 0 says third: make it the end of text
    out = tiny.generate(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10, eos_token_id=eos, pad_token_id=7
    )
    for row in range(3):
        new = out[row, 8:]
        hits = np.flatnonzero(new == eos)
        if hits.size:  # after its eos, a row holds only the pad id
            assert (new[hits[0] + 1 :] == 7).all()
            np.testing.assert_array_equal(new[: hits[0] + 1], free[row, 8 : 8 + hits[0] + 1])
    assert (out[0, 8:11] == free[0, 8:11]).all() and (out[0, 11:] == 7).all()
    if not all((out[row, 8:] == eos).any() for row in range(3)):  # some row goes on: so does generation
        assert out.shape == (3, 18)
    # when every row has finished, generation stops early
    lone = tiny.generate(
        SEED_INPUT_IDS[:1], attention_mask=SEED_ATTENTION_MASK[:1], max_new_tokens=10, eos_token_id=eos
    )
    assert lone.shape == (1, 8 + 3)
    # eos_token_id=None: never stop
    assert tiny.generate(
        SEED_INPUT_IDS[:1], attention_mask=SEED_ATTENTION_MASK[:1], max_new_tokens=10, eos_token_id=None
    ).shape == (1, 18)


def test_streamer_sees_every_step(tiny):
    seen = []
    out = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=6, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, 8:])

    class Streamer:  # transformers' protocol: put(), then end()
        def __init__(self):
            self.steps, self.ended = [], False

        def put(self, tokens):
            self.steps.append(tokens.copy())

        def end(self):
            self.ended = True

    s = Streamer()
    tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=6, streamer=s)
    assert s.ended and len(s.steps) == 6


def test_sampling_is_reproducible_and_varies_with_the_seed(tiny):
    kw = dict(attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10, do_sample=True, top_k=0)
    a = tiny.generate(SEED_INPUT_IDS, seed=1, **kw)
    np.testing.assert_array_equal(a, tiny.generate(SEED_INPUT_IDS, seed=1, **kw))
    np.testing.assert_array_equal(a, tiny.generate(SEED_INPUT_IDS, seed=np.random.default_rng(1), **kw))
    assert not np.array_equal(a, tiny.generate(SEED_INPUT_IDS, seed=2, **kw))


def test_sampling_with_top_k_1_is_greedy(tiny):
    greedy = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=8)
    sampled = tiny.generate(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=8, do_sample=True, top_k=1, seed=0
    )
    np.testing.assert_array_equal(greedy, sampled)


@pytest.mark.parametrize("do_sample", [False, True])
def test_nan_logits_stop_generation_with_a_clear_error(tiny, monkeypatch, do_sample):
    """argmax of an all-NaN row is 0, and so is a draw from it: without the check, generation
    would quietly write token 0. (Real weights cannot be NaN, load refuses them; float32
    overflow of huge finite weights can still make NaN or inf.)"""
    model = tiny
    real = model.forward

    def nan_forward(*args, **kwargs):
        out = real(*args, **kwargs)
        out.logits[1] = np.nan  # row 1 breaks
        return out

    monkeypatch.setattr(model, "forward", nan_forward)
    with pytest.raises(GenerationError, match="row 1 at generation step 0 are NaN or"):
        model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=3, do_sample=do_sample)


def test_overflowing_logits_stop_generation_with_a_clear_error(overflowing_model_dir):
    """Finite weights, but so large that the logits overflow float32 to inf or NaN: refused at the
    first step, by the forward pass's own check, naming where the values went non-finite."""
    huge = GPT2.from_pretrained(overflowing_model_dir)
    with pytest.raises(ModelError, match=r"non-finite at ln_final\.hook_normalized.*outgrew float32"):
        huge.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=2)


# --- scores out ------------------------------------------------------------------------------


def test_scores_and_logits_out(tiny):
    out = tiny.generate(
        SEED_INPUT_IDS,
        attention_mask=SEED_ATTENTION_MASK,
        max_new_tokens=5,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    np.testing.assert_array_equal(
        out.sequences, tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=5)
    )
    assert out["sequences"] is out.sequences
    assert len(out.scores) == len(out.logits) == 5 and out.scores[0].shape == (3, tiny.config.vocab_size)
    for scores, logits in zip(out.scores, out.logits):  # greedy without processors: the scores are the logits
        np.testing.assert_array_equal(scores, logits)
    assert out.beam_indices is None and out.sequences_scores is None
    plain = tiny.generate(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=5, return_dict_in_generate=True
    )
    assert plain.scores is None and plain.logits is None


def test_transition_scores_are_the_chosen_tokens_log_probs(tiny):
    from gpt2np.layers import log_softmax

    out = tiny.generate(
        SEED_INPUT_IDS,
        attention_mask=SEED_ATTENTION_MASK,
        max_new_tokens=4,
        return_dict_in_generate=True,
        output_scores=True,
    )
    got = tiny.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert got.shape == (3, 4)
    for step, scores in enumerate(out.scores):
        expected = log_softmax(scores.astype(np.float64))[np.arange(3), out.sequences[:, 8 + step]]
        np.testing.assert_allclose(got[:, step], expected, atol=1e-5)
    raw = tiny.compute_transition_scores(out.sequences, out.scores)  # the logits themselves
    np.testing.assert_array_equal(raw[:, 0], out.scores[0][np.arange(3), out.sequences[:, 8]])


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_scores_are_the_sum_of_transition_scores_over_length(tiny, length_penalty):
    """transformers' documented identity: sequences_scores = sum of the beam's transition scores
    / new tokens ** length_penalty. With an eos that ends some beams early, their steps after
    the end are 0 and their length is their own."""
    kw = dict(attention_mask=SEED_ATTENTION_MASK, max_new_tokens=8, num_beams=3, num_return_sequences=3)
    kw |= dict(length_penalty=length_penalty, pad_token_id=1, return_dict_in_generate=True, output_scores=True)
    free = tiny.generate(SEED_INPUT_IDS, **kw)
    for eos in free.sequences[:, 9:].ravel().tolist():  # the first of the beams' own tokens that ends some early
        out = tiny.generate(SEED_INPUT_IDS, eos_token_id=eos, **kw)
        if (out.beam_indices < 0).any():
            break
    transition = tiny.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    lengths = (out.beam_indices >= 0).sum(axis=1)
    assert lengths.min() < lengths.max()  # some beams ended early
    np.testing.assert_allclose(transition.sum(axis=1) / lengths**length_penalty, out.sequences_scores, rtol=1e-5)
    assert (transition[out.beam_indices < 0] == 0).all()
    assert (np.diff(out.sequences_scores.reshape(3, 3), axis=1) <= 0).all()  # best first within each prompt


def test_a_negative_length_penalty_returns_the_finished_beams(tiny):
    """Issue 30: with length_penalty=-5 over 40 new tokens a finished beam's score is its sum of
    log-probs x 40 ** 5, far below -1e9, the placeholder of an empty slot in the finished list:
    the search returned the prompt alone with score -1e9. Now the beams, with their true scores."""
    kw = dict(attention_mask=SEED_ATTENTION_MASK, max_new_tokens=40, num_beams=2, num_return_sequences=2)
    kw |= dict(length_penalty=-5.0, eos_token_id=None, return_dict_in_generate=True, output_scores=True)
    out = tiny.generate(SEED_INPUT_IDS, **kw)
    assert out.sequences.shape == (6, 8 + 40) and (out.beam_indices >= 0).all()
    transition = tiny.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    np.testing.assert_allclose(transition.sum(axis=1) * 40.0**5, out.sequences_scores, rtol=1e-5)
    assert (out.sequences_scores < -1e9).all()  # the case: below the placeholder


@pytest.mark.parametrize("length_penalty", [1e300, -1e300, 30.0, -30.0])
def test_a_length_penalty_the_dtype_cannot_carry_is_refused(tiny, length_penalty):
    """n_new ** length_penalty overflowed (OverflowError at 1e300) or underflowed to 0 (every score
    -inf at -1e300; 40 ** 30 = 1e48 is beyond float32 already)."""
    with pytest.raises(
        InputError, match=r"length_penalty=.* is too large for 40 new tokens.*use a length_penalty between -12 and 12"
    ):
        tiny.generate(SEED_INPUT_IDS, max_new_tokens=40, num_beams=2, length_penalty=length_penalty)


@pytest.mark.parametrize("penalty", [1e-40, 1e-300, 1e300, 1e39])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_a_repetition_penalty_the_dtype_cannot_carry_is_refused_without_a_warning(tiny, penalty, num_beams):
    """Issue 30: 1e-40 (a subnormal in float32) or 1e-300 (0) gave NaN log-probs and token 0 every
    time, with NumPy's RuntimeWarnings on stderr; 1e300 leaked an overflow warning. transformers
    only asks for a positive float; the dtype's normal range is what can be computed with."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would fail the test
        with pytest.raises(InputError, match=r"repetition_penalty=.* in float32, the scores' dtype.*closer to 1"):
            tiny.generate(SEED_INPUT_IDS, max_new_tokens=2, do_sample=num_beams == 1, num_beams=num_beams,
                          repetition_penalty=penalty, seed=0)  # fmt: skip


def test_a_stop_string_holding_a_lone_surrogate_is_refused(tiny, tokenizer):
    """Issue 30: stop_strings='\\udcff' (a byte of argv that is not UTF-8) raised UnicodeEncodeError."""
    with pytest.raises(InputError, match=r"stop_strings holds a lone surrogate \('\\udcff' at character 0\)"):
        tiny.generate(SEED_INPUT_IDS, max_new_tokens=1, stop_strings="\udcff", tokenizer=tokenizer)


@pytest.mark.parametrize("kw", [dict(num_beams=2**40), dict(do_sample=True, num_return_sequences=2**40)])
def test_rows_beyond_the_machines_memory_are_refused_naming_the_size(tiny, kw):
    """Issue 30: generate(num_beams=2**40) ended in MemoryError."""
    with pytest.raises(
        InputError, match=r"=1099511627776 with 3 prompt\(s\) generates 3,298,534,883,328 rows at once.* available"
    ):
        tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=2, **kw)


# --- beam search's own promises --------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_beam_search_rows_are_independent(model_dir, name):
    """Each prompt's beams only compete among themselves: a row alone gives its sequences in the batch."""
    model = GPT2.from_pretrained(model_dir(name))
    kw = dict(max_new_tokens=10, num_beams=4, num_return_sequences=2)
    batch = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, **kw)
    for row, mask in enumerate(SEED_ATTENTION_MASK.astype(bool)):
        alone = model.generate(SEED_INPUT_IDS[row][mask][None], **kw)
        np.testing.assert_array_equal(alone[:, mask.sum() :], batch[2 * row : 2 * row + 2, 8:])


def test_beam_search_cache_reorder_equals_recomputing_every_beam(tiny):
    """use_cache=False runs every beam whole at every step: no cache to reorder. The same beams."""
    free = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10, num_beams=3)
    kw = dict(max_new_tokens=10, num_beams=3, num_return_sequences=3, eos_token_id=int(free[0, 10]), pad_token_id=1)
    a = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, use_cache=True, **kw)
    b = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, use_cache=False, **kw)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(r) for r in a}) == 9  # nine different sequences


def test_beam_search_finds_a_sequence_greedy_misses(tiny):
    """The point of beam search: its best sequence is at least as likely as greedy's, and here more."""
    kw = dict(attention_mask=SEED_ATTENTION_MASK, max_new_tokens=6, eos_token_id=None, return_dict_in_generate=True)
    greedy_out = tiny.generate(SEED_INPUT_IDS, output_scores=True, **kw)
    greedy_logp = tiny.compute_transition_scores(greedy_out.sequences, greedy_out.scores, normalize_logits=True).sum(1)
    beam = tiny.generate(SEED_INPUT_IDS, num_beams=4, length_penalty=0.0, output_scores=True, **kw)
    assert (beam.sequences_scores >= greedy_logp - 1e-4).all()
    assert (beam.sequences_scores > greedy_logp + 0.1).any()


# --- more sequences per prompt, processors, stop strings -----------------------------------


def test_num_return_sequences_with_sampling_are_the_prompt_repeated(tiny):
    """R draws per prompt are rows b * R .. b * R + R - 1, exactly as if each prompt had been
    given R times (the prompt runs once; its cache is copied)."""
    kw = dict(max_new_tokens=8, do_sample=True, top_k=0, seed=3)
    out = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, num_return_sequences=3, **kw)
    repeated = tiny.generate(
        np.repeat(SEED_INPUT_IDS, 3, axis=0), attention_mask=np.repeat(SEED_ATTENTION_MASK, 3, axis=0), **kw
    )
    np.testing.assert_array_equal(out, repeated)
    assert out.shape == (9, 16) and len({tuple(r) for r in out}) == 9
    no_cache = tiny.generate(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, num_return_sequences=3, use_cache=False, **kw
    )
    np.testing.assert_array_equal(out, no_cache)


def test_processors_come_before_the_warpers(tiny):
    """Ban each row's most likely token; top_k=1 then samples the best of what is left (the
    other order would leave nothing). Greedy with the ban picks the same."""
    free = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=1)
    banned = [[int(t)] for t in free[:, 8]]
    kw = dict(attention_mask=SEED_ATTENTION_MASK, max_new_tokens=1, bad_words_ids=banned)
    sampled = tiny.generate(SEED_INPUT_IDS, do_sample=True, top_k=1, seed=0, **kw)
    greedy_out = tiny.generate(SEED_INPUT_IDS, **kw)
    np.testing.assert_array_equal(sampled, greedy_out)
    assert not np.isin(sampled[:, 8], free[:, 8]).any()


def test_a_tiny_temperature_samples_the_greedy_token(tiny):
    """Issue 21, item 8: temperature=1e-38 overflowed to inf, then NaN, and returned token 0."""
    greedy_out = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=6)
    for t in (1e-38, 1e-45):
        cold = tiny.generate(
            SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=6, do_sample=True, temperature=t, seed=0
        )
        np.testing.assert_array_equal(cold, greedy_out)


def test_min_new_tokens_holds_eos_back(tiny):
    free = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)
    eos = int(free[2, 8 + 1])  # row 2 says it second
    row = dict(attention_mask=SEED_ATTENTION_MASK[2:], max_new_tokens=10, eos_token_id=eos)
    early = tiny.generate(SEED_INPUT_IDS[2:], **row)
    assert early.shape == (1, 8 + 2)
    held = tiny.generate(SEED_INPUT_IDS[2:], min_new_tokens=3, **row)
    assert eos not in held[0, 8:11].tolist() and held.shape[1] > 11  # not among the first 3
    same = tiny.generate(SEED_INPUT_IDS[2:], min_length=11, **row)
    np.testing.assert_array_equal(same, held)  # min_length counts the prompt: 8 + 3


def test_stop_strings_end_rows_and_pad_them(tiny, tokenizer):
    free = tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)
    text = tokenizer.decode(free[1, 8:])
    stop = tokenizer.decode(free[1, 10:12])[2:6]  # ends inside the 12th column's token, starts in the 11th
    assert stop and stop in text
    out = tiny.generate(
        SEED_INPUT_IDS,
        attention_mask=SEED_ATTENTION_MASK,
        max_new_tokens=10,
        stop_strings=stop,
        tokenizer=tokenizer,
        pad_token_id=7,
    )
    np.testing.assert_array_equal(out[1, :12], free[1, :12])
    assert (out[1, 12:] == 7).all()
    for row in (0, 2):
        if stop not in tokenizer.decode(free[row, 8:]):
            np.testing.assert_array_equal(out[row], free[row])


def test_a_streamer_that_is_not_one_is_refused_before_any_work(tiny):
    """Issue 21, item 20: streamer=object() was a TypeError from deep inside."""
    from gpt2np import InputError

    for bad in (object(), 3, "print"):
        with pytest.raises(
            InputError, match=r"streamer must be a function called with each step's new tokens, or an object with \.put"
        ):
            tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=2, streamer=bad)
    with pytest.raises(InputError, match="streamer cannot be used with beam search"):
        tiny.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=2, streamer=print, num_beams=2)


@pytest.mark.parametrize("setting", [{"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9}, {"min_p": 0.1}])
def test_a_sampling_setting_without_do_sample_warns_as_transformers_does(tiny, setting):
    """Issue 35: generate(temperature=0.7) alone is greedy; transformers warns that the setting is
    unused, in these words, and so do we (the tokens stay greedy's)."""
    (name, value), ids = next(iter(setting.items())), SEED_INPUT_IDS[1:2]
    with pytest.warns(UserWarning, match=rf"`do_sample` is set to `False`. However, `{name}` is set to `{value}`"):
        warned = tiny.generate(ids, max_new_tokens=3, **setting)
    np.testing.assert_array_equal(warned, tiny.generate(ids, max_new_tokens=3))


def test_defaults_and_sampling_do_not_warn(tiny):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny.generate(SEED_INPUT_IDS[1:2], max_new_tokens=2)
        tiny.generate(SEED_INPUT_IDS[1:2], max_new_tokens=2, do_sample=True, temperature=0.7, top_k=5, seed=0)
