"""Bad inputs to the model and to generate: each gets an InputError that names the problem.

Token ids, attention masks, position ids, lengths, generation settings, mask_fill and dtype.
Every test checks the exception's class AND a phrase of its message (what is wrong, and for
most, how to fix it), and where it matters that the same input without the defect works.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import GPT2, ConfigError, GPT2Config, GPT2npError, InputError
from gpt2np.tools.random_model import random_tensors
from gpt2np.weights import weights_from_tensors

VOCAB, N_POS, EOS = 100, 16, 99
CONFIG = GPT2Config(
    vocab_size=VOCAB, n_positions=N_POS, n_embd=16, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=EOS
)


@pytest.fixture(scope="module")
def model():
    return GPT2(CONFIG, weights_from_tensors(random_tensors(CONFIG, seed=11), CONFIG))


IDS = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])


# --- token ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, VOCAB, VOCAB + 1000, -(2**40)])
def test_out_of_vocabulary_ids_are_refused(model, bad):
    ids = IDS.copy()
    ids[1, 2] = bad
    for call in (lambda: model(ids), lambda: model.generate(ids, max_new_tokens=1)):
        with pytest.raises(
            InputError, match=rf"input_ids\[1, 2\] = {bad} is not a token id: ids must lie in 0 \.\. {VOCAB - 1}"
        ):
            call()


def test_the_largest_and_smallest_ids_are_accepted(model):
    out = model(np.array([[0, VOCAB - 1]]))
    assert out.logits.shape == (1, 2, VOCAB)


@pytest.mark.parametrize(
    "ids, dtype_word",
    [
        (np.array([[1.0, 2.0]]), "float64"),
        (np.array([[1, 2]], dtype=np.float32), "float32"),
        (np.array([[True, False]]), "bool"),
        ([["a", "b"]], "<U1"),
        (np.array([[1 + 0j]]), "complex128"),
    ],
)
def test_non_integer_ids_are_refused(model, ids, dtype_word):
    with pytest.raises(
        InputError, match=rf"input_ids must hold integers, got dtype {dtype_word}.*np\.asarray\(ids, dtype=np\.int64\)"
    ):
        model(ids)
    with pytest.raises(InputError, match="must hold integers"):
        model.generate(ids, max_new_tokens=1)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_dtype_is_accepted_and_gives_the_same_logits(model, dtype):
    reference = model(IDS).logits
    np.testing.assert_array_equal(model(IDS.astype(dtype)).logits, reference)


def test_none_ids_are_refused(model):
    with pytest.raises(InputError, match="input_ids is None"):
        model(None)


def test_ragged_ids_are_refused_with_the_padding_recipe(model):
    with pytest.raises(InputError, match=r"ragged.*padding=True.*padding_side = 'left'"):
        model([[1, 2, 3], [4, 5]])
    with pytest.raises(InputError, match="ragged"):
        model.generate([[1, 2, 3], [4]], max_new_tokens=1)


@pytest.mark.parametrize("ids, shape", [(5, r"\[\]"), (np.zeros((1, 2, 3), dtype=np.int64), r"\[1, 2, 3\]")])
def test_ids_of_the_wrong_rank_are_refused(model, ids, shape):
    with pytest.raises(
        InputError, match=rf"input_ids must be 2-D \[batch, sequence\] \(or 1-D for one sequence\), got shape {shape}"
    ):
        model(ids)


@pytest.mark.parametrize(
    "ids",
    [[], [[]], np.zeros((0,), dtype=np.int64), np.zeros((1, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)],
)
def test_an_empty_prompt_is_refused_as_empty(model, ids):
    # np.asarray([]) is float64: the message must still say "empty", not "must hold integers".
    with pytest.raises(InputError, match="input_ids is empty .*give at least one token"):
        model(ids)
    with pytest.raises(InputError, match="input_ids is empty"):
        model.generate(ids, max_new_tokens=1)


def test_one_dimensional_ids_are_one_sequence_and_the_batch_axis_is_dropped(model):
    """transformers' forward accepts [T] as one sequence; so do we, and we return [T, vocab]."""
    seq = IDS[0]
    one = model(seq, output_hidden_states=True, output_attentions=True)
    batch = model(seq[None, :], output_hidden_states=True, output_attentions=True)
    assert one.logits.shape == (len(seq), VOCAB)
    np.testing.assert_array_equal(one.logits, batch.logits[0])
    assert [h.shape for h in one.hidden_states] == [h.shape[1:] for h in batch.hidden_states]
    assert [a.shape for a in one.attentions] == [a.shape[1:] for a in batch.attentions]
    out = model.generate(seq.tolist(), max_new_tokens=3, eos_token_id=None)
    assert out.ndim == 1
    np.testing.assert_array_equal(out, model.generate(seq[None, :], max_new_tokens=3, eos_token_id=None)[0])


# --- attention masks ---------------------------------------------------------------------


@pytest.mark.parametrize("mask_shape", [(2, 3), (2, 5), (1, 4), (3, 4), (4,), (2, 4, 1)])
def test_a_mask_of_another_shape_is_refused(model, mask_shape):
    mask = np.ones(mask_shape, dtype=np.int64)
    with pytest.raises(InputError, match=r"attention_mask has shape .* but input_ids has \[2, 4\]; they must match"):
        model(IDS, attention_mask=mask)
    with pytest.raises(InputError, match="attention_mask has shape"):
        model.generate(IDS, attention_mask=mask, max_new_tokens=1)


@pytest.mark.parametrize("bad", [2, -1, 0.5, np.nan, np.inf])
def test_mask_values_other_than_0_and_1_are_refused(model, bad):
    mask = np.ones(IDS.shape, dtype=np.float64)
    mask[0, 1] = bad
    with pytest.raises(InputError, match=r"attention_mask must hold only 0 \(pad\) and 1 \(real token\), found"):
        model(IDS, attention_mask=mask)
    with pytest.raises(InputError, match="must hold only 0"):
        model.generate(IDS, attention_mask=mask, max_new_tokens=1)


def test_a_non_numeric_mask_is_refused(model):
    with pytest.raises(InputError, match="attention_mask must hold 0s and 1s, got dtype <U1"):
        model(IDS, attention_mask=[["1"] * 4] * 2)
    with pytest.raises(InputError, match="attention_mask is ragged"):
        model(IDS, attention_mask=[[1, 1, 1, 1], [1, 1]])


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int64, np.float32, np.float64])
def test_masks_of_any_numeric_dtype_holding_0_and_1_are_the_same(model, dtype):
    mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    reference = model(IDS, attention_mask=mask).logits
    np.testing.assert_array_equal(model(IDS, attention_mask=mask.astype(dtype)).logits, reference)


def test_a_row_with_no_real_token_is_refused(model):
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    with pytest.raises(InputError, match="attention_mask row 1 has no 1: that sequence is all padding.*remove it"):
        model(IDS, attention_mask=mask)
    with pytest.raises(InputError, match="row 1 has no 1"):
        model.generate(IDS, attention_mask=mask, max_new_tokens=1)


def test_right_padding_is_refused_by_generate(model):
    """Our choice (docs/errors.md): transformers only warns, then appends after the pads and
    generates from a pad's position, which is quietly wrong. We refuse."""
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(InputError, match=r"row 0 of attention_mask ends with padding.*padding_side = 'left'"):
        model.generate(IDS, attention_mask=mask, max_new_tokens=1)
    left = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert model.generate(IDS, attention_mask=left, max_new_tokens=1).shape == (2, 5)


def test_right_padding_is_fine_for_a_forward_pass(model):
    """A forward pass may be right-padded (as in transformers): the real tokens never see the
    pads behind them, so their logits are those of the unpadded sequence."""
    ids = np.array([[5, 6, 7, EOS, EOS]])
    mask = np.array([[1, 1, 1, 0, 0]])
    padded = model(ids, attention_mask=mask).logits[0, :3]
    alone = model(ids[:, :3]).logits[0]
    np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)


def test_a_1d_mask_goes_with_a_single_sequence(model):
    out = model(IDS[0], attention_mask=[0, 1, 1, 1])
    np.testing.assert_array_equal(out.logits, model(IDS[:1], attention_mask=[[0, 1, 1, 1]]).logits[0])


# --- position ids ------------------------------------------------------------------------


def test_position_ids_out_of_range_are_refused(model):
    with pytest.raises(InputError, match=rf"position_ids must lie in 0 \.\. {N_POS - 1}"):
        model(IDS, position_ids=np.array([0, 1, 2, N_POS]))
    with pytest.raises(InputError, match="position_ids must lie in"):
        model(IDS, position_ids=np.array([-1, 0, 1, 2]))


def test_position_ids_of_the_wrong_shape_or_type_are_refused(model):
    with pytest.raises(InputError, match=r"position_ids has shape \[1, 3\]; it must be \[batch, sequence\] = \[2, 4\]"):
        model(IDS, position_ids=[0, 1, 2])
    with pytest.raises(InputError, match="position_ids must hold integers"):
        model(IDS, position_ids=[0.0, 1.0, 2.0, 3.0])


# --- lengths -----------------------------------------------------------------------------


def test_an_input_longer_than_n_positions_is_refused(model):
    with pytest.raises(
        InputError, match=rf"the input is {N_POS + 1} tokens, more than this model's n_positions = {N_POS}.*shorten"
    ):
        model(np.arange(N_POS + 1)[None, :])
    assert model(np.arange(N_POS)[None, :]).logits.shape == (1, N_POS, VOCAB)  # exactly n_positions is fine


def test_prompt_plus_new_tokens_past_n_positions_is_refused(model):
    prompt = np.arange(10)[None, :]
    with pytest.raises(
        InputError,
        match=rf"the prompt \(10\) plus 7 new tokens is 17 tokens, more than this model's n_positions = {N_POS}",
    ):
        model.generate(prompt, max_new_tokens=N_POS - 10 + 1)
    with pytest.raises(InputError, match="more than this model's n_positions"):
        model.generate(prompt, max_length=N_POS + 1)
    with pytest.raises(InputError, match="more than this model's n_positions"):
        model.generate(np.arange(N_POS + 1)[None, :], max_new_tokens=1)
    out = model.generate(prompt, max_new_tokens=N_POS - 10, eos_token_id=None)  # exactly n_positions is fine
    assert out.shape == (1, N_POS)


# --- generation settings -----------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf"), "hot", None])
def test_a_non_positive_temperature_is_refused_when_sampling(model, temperature):
    with pytest.raises(InputError, match=r"temperature must be a positive number when sampling.*do_sample=False"):
        model.generate(IDS, max_new_tokens=1, do_sample=True, temperature=temperature, seed=0)


def test_temperature_is_not_used_by_greedy_decoding(model):
    greedy = model.generate(IDS, max_new_tokens=2, eos_token_id=None)
    np.testing.assert_array_equal(model.generate(IDS, max_new_tokens=2, eos_token_id=None, temperature=0.0), greedy)


@pytest.mark.parametrize("top_p", [0, 0.0, -0.1, 1.0001, 2, float("nan"), "all"])
def test_top_p_outside_0_1_is_refused(model, top_p):
    with pytest.raises(InputError, match=r"top_p must be in \(0, 1\]"):
        model.generate(IDS, max_new_tokens=1, do_sample=True, top_p=top_p, seed=0)


@pytest.mark.parametrize("top_k", [-1, -50, 2.5, "10", None])
def test_a_negative_or_non_integer_top_k_is_refused(model, top_k):
    with pytest.raises(InputError, match=r"top_k must be an integer >= 0 \(0 keeps every token\)"):
        model.generate(IDS, max_new_tokens=1, do_sample=True, top_k=top_k, seed=0)


def test_boundary_sampling_settings_are_accepted(model):
    for kwargs in (
        dict(top_p=1.0),
        dict(top_p=1e-9),
        dict(top_k=0),
        dict(top_k=1),
        dict(temperature=1e-3),
        dict(temperature=100.0),
    ):
        out = model.generate(IDS, max_new_tokens=2, do_sample=True, seed=0, eos_token_id=None, **kwargs)
        assert out.shape == (2, 6)


@pytest.mark.parametrize("n", [0, -1, 1.0, 2.5, "5", True])
def test_max_new_tokens_below_1_or_not_an_integer_is_refused(model, n):
    with pytest.raises(InputError, match=rf"max_new_tokens must be an integer >= 1, got {n!r}"):
        model.generate(IDS, max_new_tokens=n)


def test_max_length_must_exceed_the_prompt(model):
    with pytest.raises(
        InputError, match=r"max_length=4 counts the prompt too, and the prompt is already 4 tokens.*max_new_tokens"
    ):
        model.generate(IDS, max_length=4)
    with pytest.raises(InputError, match="max_length=3 counts the prompt too"):
        model.generate(IDS, max_length=3)
    with pytest.raises(InputError, match="max_length must be a positive integer"):
        model.generate(IDS, max_length=0)
    with pytest.raises(InputError, match="max_length must be a positive integer"):
        model.generate(IDS, max_length=6.0)
    assert model.generate(IDS, max_length=5, eos_token_id=None).shape == (2, 5)


def test_the_default_max_length_of_20_is_named_when_the_prompt_reaches_it():
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=1, n_head=2, eos_token_id=EOS)
    model = GPT2(config, weights_from_tensors(random_tensors(config, seed=2), config))
    with pytest.raises(
        InputError, match=r"max_length=20 \(the default\) counts the prompt too, and the prompt is already 20 tokens"
    ):
        model.generate(np.arange(20)[None, :])


@pytest.mark.parametrize("do_sample", ["yes", "no", 1, None])
def test_do_sample_must_be_a_boolean(model, do_sample):
    with pytest.raises(InputError, match="do_sample must be True or False"):
        model.generate(IDS, max_new_tokens=1, do_sample=do_sample)


def test_use_cache_must_be_a_boolean(model):
    with pytest.raises(InputError, match="use_cache must be True or False"):
        model.generate(IDS, max_new_tokens=1, use_cache="no")


@pytest.mark.parametrize("seed", ["abc", 1.5, [1, 2], -1, -(2**40)])  # negative: NumPy's bare ValueError otherwise
def test_a_bad_seed_is_refused(model, seed):
    with pytest.raises(InputError, match="seed must be an integer >= 0 or a numpy.random.Generator"):
        model.generate(IDS, max_new_tokens=1, do_sample=True, seed=seed)


@pytest.mark.parametrize("name", ["eos_token_id", "pad_token_id"])
@pytest.mark.parametrize("value", [VOCAB, -2, 1.5])
def test_eos_and_pad_ids_must_be_token_ids(model, name, value):
    with pytest.raises(InputError, match=rf"{name} must be a token id in 0 \.\. {VOCAB - 1} or None, got {value!r}"):
        model.generate(IDS, max_new_tokens=1, **{name: value})


def test_a_config_eos_outside_the_vocabulary_is_refused_with_the_config():
    """Refused when the config is made (at load, naming config.json: tests/test_config.py), not
    at the first generate with a Python keyword as the advice."""
    with pytest.raises(ConfigError, match=r"'eos_token_id' is 50256, outside the vocabulary \(vocab_size=100"):
        GPT2Config(vocab_size=VOCAB, n_positions=N_POS, n_embd=16, n_layer=1, n_head=2)  # eos defaults to 50256


@pytest.mark.parametrize(
    "settings, phrase",
    [
        (dict(num_beams=0), r"num_beams must be an integer >= 1 \(1: no beam search\), got 0"),
        (dict(num_beams=2.0), "num_beams must be an integer >= 1"),
        (dict(num_return_sequences=0), "num_return_sequences must be an integer >= 1, got 0"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3 is more than num_beams=2"),
        (dict(num_return_sequences=2), "num_return_sequences=2 with greedy decoding would return the same sequence"),
        (dict(num_beams=2, do_sample=True), r"beam search with do_sample=True \(beam sampling\) is not implemented"),
        (dict(repetition_penalty=0), "repetition_penalty must be a number > 0"),
        (dict(repetition_penalty=-1.2), "repetition_penalty must be a number > 0"),
        (dict(repetition_penalty=float("nan")), "repetition_penalty must be a number > 0"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0"),
        (dict(no_repeat_ngram_size=2.5), "no_repeat_ngram_size must be an integer >= 0"),
        (dict(min_new_tokens=5), r"min_new_tokens=5 asks for at least 5 new tokens, but only 3 may be generated"),
        (dict(min_length=12), r"min_length=12 asks for at least 8 new tokens, but only 3 may be generated"),
        (dict(min_new_tokens=-1), "min_new_tokens must be an integer >= 0"),
        (dict(min_p=1.5, do_sample=True), r"min_p must be a number in \[0, 1\]"),
        (dict(min_p=-0.1), r"min_p must be a number in \[0, 1\]"),
        (dict(length_penalty=float("inf"), num_beams=2), "length_penalty must be a finite number"),
        (dict(length_penalty="long", num_beams=2), "length_penalty must be a finite number"),
        (dict(early_stopping="yes", num_beams=2), "early_stopping must be True, False or 'never', got 'yes'"),
        (dict(early_stopping=1, num_beams=2), "early_stopping must be True, False or 'never', got 1"),
        (dict(bad_words_ids=[1, 2]), r"bad_words_ids must be a non-empty list of words.*got the word 1"),
        (dict(bad_words_ids=[]), "bad_words_ids must be a non-empty list of words"),
        (dict(bad_words_ids=[[]]), r"got the word \[\]"),
        (dict(bad_words_ids=[[3, -1]]), r"got the word \[3, -1\]"),
        (dict(bad_words_ids=[["dog"]]), r"got the word \['dog'\] \(tokenizer.encode\(' word'\) gives a word's ids\)"),
        (
            dict(bad_words_ids=[[5, VOCAB]]),
            rf"bad_words_ids holds \[5, {VOCAB}\]: token ids must lie in 0 \.\. {VOCAB - 1}",
        ),
        (dict(bad_words_ids=[[EOS]]), rf"bad_words_ids holds \[{EOS}\], the eos token: transformers silently ignores"),
        (dict(stop_strings=""), "stop_strings must be a non-empty string or a non-empty list of them"),
        (dict(stop_strings=["ok", ""]), "stop_strings must be a non-empty string or a non-empty list of them"),
        (dict(stop_strings=[3]), "stop_strings must be a non-empty string"),
        (dict(stop_strings="."), "stop_strings need the tokenizer"),
        (dict(stop_strings=".", tokenizer="gpt2"), "tokenizer must be a Tokenizer"),
        (dict(return_dict_in_generate="yes"), "return_dict_in_generate must be True or False"),
        (dict(output_scores=1), "output_scores must be True or False"),
        (dict(do_sample=True, temperature=1e-50), r"temperature=1e-50 is 0.0 in float32, the logits' dtype"),
        (dict(do_sample=True, temperature=1e39), r"temperature=1e\+39 is inf in float32"),
    ],
)
def test_bad_generation_settings_are_refused_by_name(model, settings, phrase):
    with pytest.raises(InputError, match=phrase):
        model.generate(IDS, max_new_tokens=3, **settings)


def test_a_tokenizer_smaller_than_the_model_cannot_match_stop_strings(model, tokenizer):
    big = GPT2Config(vocab_size=60000, n_positions=N_POS, n_embd=16, n_layer=1, n_head=2)
    with pytest.raises(InputError, match="the tokenizer has 50257 tokens and the model 60000"):
        GPT2(big, weights_from_tensors(random_tensors(big, seed=1), big)).generate(
            IDS, max_new_tokens=2, stop_strings=".", tokenizer=tokenizer
        )


def test_boundary_generation_settings_are_accepted(model):
    for settings in (
        dict(min_new_tokens=3),  # all the new tokens
        dict(min_p=0.0, do_sample=True),
        dict(min_p=1.0, do_sample=True),
        dict(num_beams=3, num_return_sequences=3, early_stopping="never", length_penalty=-2.0),
        dict(no_repeat_ngram_size=0, repetition_penalty=1.0),
        dict(do_sample=True, temperature=1e-45),  # the smallest float32
        dict(bad_words_ids=[[EOS, 3]]),  # eos inside a longer word is a word like any other
    ):
        assert model.generate(IDS, max_new_tokens=3, **settings).shape[1] <= 7


def test_an_unknown_generation_setting_is_a_type_error(model):
    with pytest.raises(TypeError, match="num_beam"):
        model.generate(IDS, max_new_tokens=1, num_beam=4)  # a typo of num_beams


# --- mask_fill and dtype -----------------------------------------------------------------


@pytest.mark.parametrize("fill", [1, 1e9, 0, 0.0, -0.0, np.float32(3)])
def test_a_positive_or_zero_mask_fill_is_refused(model, fill):
    with pytest.raises(
        InputError, match=r"would not mask anything: it must be negative \(e\.g\. '-inf', '-1e9' or 'min'\)"
    ):
        GPT2(CONFIG, model.weights, mask_fill=fill)


@pytest.mark.parametrize("fill", [float("nan"), np.float32("nan")])
def test_a_nan_mask_fill_is_refused(model, fill):
    with pytest.raises(InputError, match="is NaN: every masked score would become NaN"):
        GPT2(CONFIG, model.weights, mask_fill=fill)


@pytest.mark.parametrize("fill", ["bogus", "inf", "nan", "-1e4", "MIN", ""])
def test_an_unknown_mask_fill_string_is_refused(model, fill):
    with pytest.raises(
        InputError, match=rf"mask_fill={fill!r} is not one of '-inf', '-1e9', 'min' or a negative number"
    ):
        GPT2(CONFIG, model.weights, mask_fill=fill)


@pytest.mark.parametrize("fill", [None, True, [-1.0], b"-inf"])
def test_a_mask_fill_of_another_type_is_refused(model, fill):
    with pytest.raises(InputError, match="mask_fill must be one of '-inf', '-1e9', 'min' or a negative number"):
        GPT2(CONFIG, model.weights, mask_fill=fill)


def test_a_mask_fill_too_large_for_the_dtype_is_refused(model, recwarn):
    with pytest.raises(InputError, match="mask_fill=-1e\\+39 does not fit in float32.*use '-inf' or 'min'"):
        GPT2(CONFIG, model.weights, mask_fill=-1e39)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # no overflow warning on the way
    GPT2(CONFIG, model.weights, dtype="float64", mask_fill=-1e39)  # fits in float64


@pytest.mark.parametrize("fill", ["-inf", "-1e9", "min", -1e4, float("-inf"), np.float64(-1e30)])
def test_valid_mask_fills_are_accepted(model, fill):
    assert GPT2(CONFIG, model.weights, mask_fill=fill)(IDS).logits.shape == (2, 4, VOCAB)


def test_from_pretrained_checks_mask_fill_and_dtype_before_any_file_work(tmp_path):
    missing = tmp_path / "no-such-model"  # would be a ModelNotFoundError if files were looked at first
    with pytest.raises(InputError, match="would not mask anything"):
        GPT2.from_pretrained(missing, mask_fill=1.0)
    with pytest.raises(InputError, match="dtype must be 'float32' or 'float64', got 'float16'"):
        GPT2.from_pretrained(missing, dtype="float16")


def test_input_errors_are_value_errors_and_gpt2np_errors(model):
    with pytest.raises(ValueError):
        model([[-1]])
    with pytest.raises(GPT2npError):
        model([[-1]])
