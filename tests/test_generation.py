"""Generation's own promises (transformers' tokens are checked in test_references.py and
test_against_transformers.py): a row alone equals the row in a batch, the cache changes
nothing, eos and padding, streaming, the default length, reproducible sampling."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, GenerationError, ModelError

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
