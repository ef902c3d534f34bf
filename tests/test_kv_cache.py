"""The KV cache's beam-search operations against the plain truth: a cache whose rows were
repeated or reordered must hold exactly what running the prompts in that order would put there,
and the next step must then give the same logits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2
from gpt2np.kv_cache import KVCache
from gpt2np.masks import position_ids_from_mask


@pytest.fixture(scope="module")
def tiny(model_dir):
    return GPT2.from_pretrained(model_dir("tiny"))


def prefill(model, ids, mask, max_len):
    """The prompts through a fresh cache -> (cache, last logits [B, V])."""
    cfg = model.config
    cache = KVCache(cfg.n_layer, len(ids), cfg.n_head, max_len, cfg.head_dim, model.dtype)
    logits = model.forward(ids, mask, position_ids_from_mask(mask), cache, logits_to_keep=1).logits[:, -1]
    return cache, logits


def filled(cache):
    n = cache.length
    return cache.keys[:, :, :, :n], cache.values[:, :, :, :n]


@pytest.mark.parametrize("parents", [[2, 0, 0], [1, 1, 1], [0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_reorder_equals_running_the_prompts_in_the_new_order(tiny, parents):
    """Row i of the reordered cache holds what the prompt of row parents[i] put there, and the
    next token fed to every row gives the logits of that prompt run in that place."""
    parents = np.array(parents)
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    cache, _ = prefill(tiny, ids, mask, 10)
    before = [a.copy() for a in filled(cache)]
    cache.reorder(parents)
    truth, _ = prefill(tiny, ids[parents], mask[parents], 10)
    for ours, theirs, old in zip(filled(cache), filled(truth), before):
        np.testing.assert_array_equal(ours, old[:, parents])  # the parents' rows, copied bit for bit
        # and what the prompts give in that order (not bit for bit: BLAS rounds a row a little
        # differently when the batch around it changes)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    step_mask = np.ones((3, 9), dtype=np.int64)
    step_mask[:, :8] = mask[parents]
    token = np.array([[11], [22], [33]])
    positions = position_ids_from_mask(step_mask)[:, -1:]
    got = tiny.forward(token, step_mask, positions, cache, logits_to_keep=1).logits
    expected = tiny.forward(token, step_mask, positions, truth, logits_to_keep=1).logits
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert np.abs(got - expected).max() < 0.01 * np.abs(got - np.roll(got, 1, axis=0)).max()  # rows really differ


def test_reorder_copies_only_what_it_must_and_leaves_the_rest(tiny):
    cache, _ = prefill(tiny, SEED_INPUT_IDS, SEED_ATTENTION_MASK, 10)
    unfilled = cache.keys[:, :, :, 8:].copy()  # not yet written: reorder must not read or move it
    before = [a.copy() for a in filled(cache)]
    cache.reorder(np.array([0, 1, 2]))  # nothing moves
    for a, b in zip(filled(cache), before):
        np.testing.assert_array_equal(a, b)
    cache.reorder(np.array([0, 0, 2]))  # row 1 takes row 0's; rows 0 and 2 stay
    for a, b in zip(filled(cache), before):
        np.testing.assert_array_equal(a[:, [0, 1, 2]], b[:, [0, 0, 2]])
    np.testing.assert_array_equal(cache.keys[:, :, :, 8:], unfilled)
    assert cache.length == 8


def test_repeat_rows_equals_running_each_prompt_n_times(tiny):
    """Beam search runs a prompt once and gives its cache to each of the row's beams: the same
    as running the prompt once per beam, rows in np.repeat's order (b * n + k)."""
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    cache, _ = prefill(tiny, ids, mask, 8)
    beams = cache.repeat_rows(4, 12)
    assert beams.keys.shape[1] == 12 and beams.keys.shape[3] == 12 and beams.length == 8
    truth, _ = prefill(tiny, np.repeat(ids, 4, axis=0), np.repeat(mask, 4, axis=0), 12)
    for ours, theirs in zip(filled(beams), filled(truth)):
        # not bit for bit: BLAS blocks a 3-row batch differently from a 12-row one
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    for ours, row in zip(filled(beams), filled(cache)):
        np.testing.assert_array_equal(ours, np.repeat(row, 4, axis=1))  # and exactly the copies of the prompt's
