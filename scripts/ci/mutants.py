"""A gallery of planted bugs: each must make the test suite fail.

    python scripts/ci/mutants.py              # every mutant; exit 1 if one survives
    python scripts/ci/mutants.py -k gelu      # the mutants whose name contains "gelu"
    python scripts/ci/mutants.py --list       # names, files and the tests meant to catch them

A test that passes on wrong code proves nothing. Each mutant below is one small, realistic
mistake in the core (a forgotten `- 1`, eps outside the square root, top-k after top-p, ...),
written as (name, file, exact old text, new text, the tests that must catch it). For each one
this script copies the repository to a temporary folder (the working tree is never touched),
replaces the old text by the new one there, and runs only the listed tests (cheap ones, and
torch-free where a torch-free test can catch it) with `pytest -x`. The mutant is caught when
those tests fail; if they pass it *survived*, and the run fails with its name.

Before any mutant, the listed tests run once on an unmodified copy and must pass: a test that
fails anyway would "catch" everything. And every old text must occur exactly once in its file:
a refactoring that changes the code fails this script loudly instead of silently disabling the
mutant (then update the mutant's text, keeping its meaning).

The test models are built once into $GPT2NP_TEST_MODELS (default weights/test-models) and shared
by every run: the models come from seeds by plain NumPy, so no mutant changes them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ["gpt2np", "tests", "pyproject.toml"]  # what a test run needs from the repository
TIMEOUT = 300  # seconds for one mutant's tests; a hang counts as caught, and is reported


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # path in the repository
    old: str  # exact text, found exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids; the mutant is caught when one of them fails


def m(name, file, old, new, *tests) -> Mutant:
    return Mutant(name, file, old, new, tuple(tests))


REF = "tests/test_references.py"
REF64 = REF + "::test_float64_matches_transformers_float64"
CMP = "tests/test_compare.py"
PLAIN = "tests/test_plain.py"
PAGE = "tests/test_page.py"
PB = "tests/test_plain_backward.py"
BW = "tests/test_backward.py"
TG = "tests/test_trace_grads.py"

MUTANTS = [
    # --- masks and positions ---------------------------------------------------------------
    m("positions-forget-minus-1", "gpt2np/masks.py",
      "np.cumsum(attention_mask, axis=-1, dtype=np.int64) - 1", "np.cumsum(attention_mask, axis=-1, dtype=np.int64)",
      "tests/test_masks.py::test_position_ids_count_only_real_tokens", f"{REF64}[tiny/seed-min]"),
    m("positions-arange-by-default", "gpt2np/model.py",
      "            positions = position_ids_from_mask(mask)\n",
      "            positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)\n",
      "tests/test_model.py::test_default_positions_come_from_the_mask"),
    m("causal-mask-excludes-the-diagonal", "gpt2np/masks.py",
      "causal = np.arange(Tk)[None, :] <= query_index[:, None]", "causal = np.arange(Tk)[None, :] < query_index[:, None]",
      "tests/test_masks.py::test_mask_is_padding_and_causal"),
    m("causal-mask-ignores-the-cache-offset", "gpt2np/masks.py",
      "offset = Tk - n_queries  # how many", "offset = 0  # how many",
      "tests/test_masks.py::test_mask_is_padding_and_causal"),
    m("padding-mask-forgotten", "gpt2np/masks.py",
      "allowed = causal[None, None, :, :] & not_pad", "allowed = causal[None, None, :, :] & (not_pad | True)",
      "tests/test_masks.py::test_mask_is_padding_and_causal"),
    m("nan-guard-removed", "gpt2np/attention.py",
      "np.copyto(probs, 0, where=mask.empty_rows)", "pass",
      "tests/test_attention.py::test_attention_matches_a_loop_over_heads"),
    m("blocks-nan-guard-removed", "gpt2np/attention.py",
      "np.copyto(out, 0, where=empty_rows)", "pass",
      "tests/test_attention.py::test_attention_in_blocks_equals_attention"),
    m("blocks-mask-only-on-the-diagonal", "gpt2np/attention.py",
      "lo = min(first_masked, past + start)", "lo = past + start",
      "tests/test_attention.py::test_attention_in_blocks_equals_attention"),
    # --- LayerNorm, GELU, softmax, lm_head ---------------------------------------------------
    m("layernorm-eps-outside-sqrt", "gpt2np/layers.py",
      "x64 /= np.sqrt(var + eps)", "x64 /= np.sqrt(var) + eps",
      "tests/test_layers.py::test_layer_norm_float64_is_the_formula"),
    m("layernorm-unbiased-variance", "gpt2np/layers.py",
      "var = np.add.reduce(x64 * x64, axis=-1, keepdims=True) / C  # [n, 1]", "var = np.add.reduce(x64 * x64, axis=-1, keepdims=True) / (C - 1)  # [n, 1]",
      "tests/test_layers.py::test_layer_norm_float64_is_the_formula"),
    m("layernorm-in-float32", "gpt2np/layers.py",
      "x64 = rows[start : start + LAYER_NORM_ROWS].astype(np.float64)", "x64 = rows[start : start + LAYER_NORM_ROWS].astype(x.dtype)",
      "tests/test_layers.py::test_layer_norm_is_float32_rounding_of_the_exact_value"),
    m("layernorm-beta-before-gamma", "gpt2np/layers.py",
      "        x64 *= norm.weight  # gamma\n        x64 += norm.bias  # beta\n",
      "        x64 += norm.bias  # beta\n        x64 *= norm.weight  # gamma\n",
      "tests/test_layers.py::test_layer_norm_float64_is_the_formula"),
    m("layernorm-drops-a-partial-last-chunk", "gpt2np/layers.py",
      "for start in range(0, len(rows), LAYER_NORM_ROWS):", "for start in range(0, len(rows) - LAYER_NORM_ROWS + 1, LAYER_NORM_ROWS):",
      "tests/test_layers.py::test_layer_norm_in_chunks_of_rows_is_still_exact"),
    m("gelu-drops-a-partial-last-chunk", "gpt2np/layers.py",
      "for start in range(0, flat.size, GELU_CHUNK):", "for start in range(0, flat.size - GELU_CHUNK + 1, GELU_CHUNK):",
      "tests/test_layers.py::test_gelu_in_chunks_is_the_formula_and_the_same_bits"),
    m("gelu-constant-0.0447", "gpt2np/layers.py",
      "uc *= 0.044715", "uc *= 0.0447",
      "tests/test_layers.py::test_gelu_float64_is_the_formula"),
    m("gelu-sigmoid-without-the-2", "gpt2np/layers.py",
      "uc *= -2.0 * SQRT_2_OVER_PI", "uc *= -SQRT_2_OVER_PI",
      "tests/test_layers.py::test_gelu_matches_gpt2_tanh_formula"),
    m("softmax-without-max-subtraction", "gpt2np/layers.py",
      "x -= x.max(axis=axis, keepdims=True)", "x -= 0",
      "tests/test_layers.py::test_softmax_rows_sum_to_one_and_are_stable"),
    m("softmax-normalised-over-axis-0", "gpt2np/layers.py",
      "x /= x.sum(axis=axis, keepdims=True)", "x /= x.sum(axis=0, keepdims=True)",
      "tests/test_layers.py::test_softmax_along_the_given_axis"),
    m("lm-head-skips-a-chunk", "gpt2np/layers.py",
      "for k in range(SUM_CHUNK, C, SUM_CHUNK):", "for k in range(2 * SUM_CHUNK, C, SUM_CHUNK):",
      "tests/test_layers.py::test_lm_head_equals_the_matmul"),
    m("last-block-keep-on-every-block", "gpt2np/model.py",
      "keep if last else 0)  # [B, T, C]", "keep)  # [B, T, C]",
      "tests/test_model.py::test_logits_to_keep_runs_the_last_block_on_the_kept_positions_only"),
    m("residual-stream-in-float32", "gpt2np/model.py",
      "return np.add(token, position, dtype=np.float64)", "return token + position",
      "tests/test_references.py::test_float32_is_as_close_to_the_float64_truth_as_transformers"),
    m("forward-never-checks-its-logits-are-finite", "gpt2np/model.py",
      "        if not all_finite(logits):", "        if False:",
      "tests/test_model.py::test_an_overflow_is_an_error_naming_where_it_began"),
    m("non-finite-search-reruns-a-step-without-rewinding-the-cache", "gpt2np/model.py",
      "            cache.length -= input_ids.shape[1]", "            pass",
      "tests/test_model.py::test_a_decode_step_that_goes_non_finite_names_its_token"),
    m("masked-minus-inf-scores-taken-for-an-overflow", "gpt2np/model.py",
      "        return np.isnan(a) | np.isposinf(a)\n", "        pass\n",
      "tests/test_model.py::test_a_hook_that_writes_nan_is_named_even_under_a_minus_inf_fill"),
    m("scoring-lets-nan-through", "gpt2np/scoring.py",
      "    if not np.isfinite(logprobs).all():", "    if False:",
      "tests/test_scoring.py::test_an_overflow_is_an_error_never_a_nan_score"),
    m("lm-head-always-tied", "gpt2np/model.py",
      "lm_head(x, self.weights.lm_head)", "lm_head(x, self.weights.wte)",
      f"{REF64}[odd/single-min]"),
    # --- attention -------------------------------------------------------------------------
    m("attention-scale-1-over-D", "gpt2np/model.py",
      "scale = 1.0 / math.sqrt(self.config.head_dim)", "scale = 1.0 / self.config.head_dim",
      f"{REF64}[tiny/seed-min]"),
    m("attention-inverse-layer-idx-zero-based", "gpt2np/model.py",
      "scale /= layer + 1", "scale /= max(layer, 1)",
      f"{REF64}[odd/single-min]"),
    m("heads-split-without-transpose", "gpt2np/attention.py",
      "return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)", "return x.reshape(B, n_head, T, C // n_head)",
      "tests/test_attention.py::test_split_and_merge_heads_are_inverse_views"),
    m("heads-merged-without-transpose", "gpt2np/attention.py",
      "return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)", "return x.reshape(B, T, H * D)",
      "tests/test_attention.py::test_split_and_merge_heads_are_inverse_views"),
    m("q-and-k-swapped", "gpt2np/attention.py",
      "q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]",
      "k, q, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]",
      f"{REF64}[tiny/seed-min]"),
    m("mlp-reads-ln_1", "gpt2np/model.py",
      'self.norm(at + "ln2", x, b.ln_2, hook))', 'self.norm(at + "ln2", x, b.ln_1, hook))',
      f"{REF64}[tiny/seed-min]"),
    # --- KV cache and generation -----------------------------------------------------------
    m("kv-cache-never-advances", "gpt2np/kv_cache.py",
      "self.length += n_tokens", "self.length = n_tokens",
      "tests/test_model.py::test_cached_steps_equal_the_full_forward"),
    m("kv-cache-stores-keys-as-values", "gpt2np/kv_cache.py",
      "self.values[layer, :, :, start:end] = v", "self.values[layer, :, :, start:end] = k",
      "tests/test_model.py::test_cached_steps_equal_the_full_forward"),
    m("generation-ignores-nan-logits", "gpt2np/generation.py",
      "        check_logits(logits, step)\n", "",
      "tests/test_generation.py::test_nan_logits_stop_generation_with_a_clear_error"),
    m("decode-position-counts-the-pads", "gpt2np/generation.py",
      "step_positions = positions[:, -1:] + n_done", "step_positions = np.full((B, 1), length - 1)",
      "tests/test_generation.py::test_each_row_alone_equals_the_batch"),
    m("no-cache-path-arange-positions", "gpt2np/generation.py",
      "position_ids_from_mask(full_mask[:, :length]),", "np.broadcast_to(np.arange(length), (B, length)),",
      "tests/test_generation.py::test_cache_on_and_off_give_the_same_tokens"),
    m("finished-rows-not-padded", "gpt2np/generation.py",
      "next_tokens = np.where(finished, pad, next_tokens)", "next_tokens = next_tokens",
      "tests/test_generation.py::test_eos_finishes_rows_and_pads_them"),
    m("stops-when-any-row-finishes", "gpt2np/generation.py",
      "if finished.all() or n_done == n_new:", "if finished.any() or n_done == n_new:",
      "tests/test_generation.py::test_eos_finishes_rows_and_pads_them"),
    m("max-length-ignores-the-prompt", "gpt2np/generation.py",
      "n_new = int(max_length) - prompt_len", "n_new = int(max_length)",
      "tests/test_generation.py::test_lengths_prompt_included"),
    # --- sampling --------------------------------------------------------------------------
    m("temperature-multiplies", "gpt2np/sampling.py",
      "        scaled = logits / t  # [B, V]", "        scaled = logits * t  # [B, V]",
      "tests/test_sampling.py::test_temperature_divides_the_logits"),
    m("top-p-before-top-k", "gpt2np/sampling.py",
      "    logits = top_k_filter(logits, top_k)\n    logits = top_p_filter(logits, top_p)\n",
      "    logits = top_p_filter(logits, top_p)\n    logits = top_k_filter(logits, top_k)\n",
      "tests/test_sampling.py::test_top_k_comes_before_top_p"),
    m("temperature-after-the-filters", "gpt2np/sampling.py",
      "    if temperature != 1.0:\n        logits = apply_temperature(logits, temperature)\n"
      "    logits = top_k_filter(logits, top_k)\n    logits = top_p_filter(logits, top_p)\n",
      "    logits = top_p_filter(top_k_filter(logits, top_k), top_p)\n"
      "    if temperature != 1.0:\n        logits = apply_temperature(logits, temperature)\n",
      "tests/test_sampling.py::test_temperature_comes_before_top_p"),
    m("top-p-strict-inequality", "gpt2np/sampling.py",
      "drop_sorted = cumulative <= (1 - top_p)", "drop_sorted = cumulative < (1 - top_p)",
      "tests/test_sampling.py::test_top_p_boundary_is_kept"),
    m("top-p-may-drop-everything", "gpt2np/sampling.py",
      "    drop_sorted[:, -1] = False  # min_tokens_to_keep = 1\n", "",
      "tests/test_sampling.py::test_top_p_never_empties_a_row"),
    m("top-k-drops-the-kth", "gpt2np/sampling.py",
      "np.where(logits < kth, -np.inf, logits)", "np.where(logits <= kth, -np.inf, logits)",
      "tests/test_sampling.py::test_top_k_keeps_k_and_ties"),
    m("greedy-takes-the-last-tie", "gpt2np/sampling.py",
      "return logits.argmax(axis=-1)", "return logits.shape[-1] - 1 - logits[:, ::-1].argmax(axis=-1)",
      "tests/test_sampling.py::test_greedy_takes_the_first_of_equal_maxima"),
    # --- beam search, logits processors, stop strings (issue 24) -----------------------------
    m("kv-cache-reorder-row-by-row", "gpt2np/kv_cache.py",
      "            self.keys[layer, moved, :, filled] = self.keys[layer, sources, :, filled]\n"
      "            self.values[layer, moved, :, filled] = self.values[layer, sources, :, filled]\n",
      "            for i, src in zip(moved, sources):  # a row may be overwritten before it is read\n"
      "                self.keys[layer, i, :, filled] = self.keys[layer, src, :, filled]\n"
      "                self.values[layer, i, :, filled] = self.values[layer, src, :, filled]\n",
      "tests/test_kv_cache.py::test_reorder_equals_running_the_prompts_in_the_new_order"),
    m("kv-cache-repeat-rows-tiled", "gpt2np/kv_cache.py",
      "np.repeat(self.keys[layer, :, :, filled], n, axis=0)", "np.tile(self.keys[layer, :, :, filled], (n, 1, 1, 1))",
      "tests/test_kv_cache.py::test_repeat_rows_equals_running_each_prompt_n_times"),
    m("beam-cache-never-reordered", "gpt2np/beam_search.py",
      "            cache.reorder(parents)\n", "",
      "tests/test_generation.py::test_beam_search_cache_reorder_equals_recomputing_every_beam"),
    m("beams-all-start-alike", "gpt2np/beam_search.py",
      "    running_scores[:, 1:] = never  #", "    running_scores[:, 1:] = 0  #",
      "tests/test_generation.py::test_beam_search_cache_reorder_equals_recomputing_every_beam"),
    m("length-penalty-multiplies", "gpt2np/beam_search.py",
      "(length + 1 - T) ** length_penalty", "(length + 1 - T) * length_penalty",
      f"{REF}::test_generation_matches_stored_transformers[tiny/seed-beams4-r4-lp2]"),
    m("length-penalty-counts-the-prompt", "gpt2np/beam_search.py",
      "(length + 1 - T) ** length_penalty", "(length + 1) ** length_penalty",
      "tests/test_generation.py::test_beam_scores_are_the_sum_of_transition_scores_over_length"),
    m("early-stopping-true-ignored", "gpt2np/beam_search.py",
      "& (early_stopping is True)  # [B, 1] rows that take no more", "& False  # [B, 1] rows that take no more",
      f"{REF}::test_generation_matches_stored_transformers[odd/random-beams5-r2-lp2-early-eos888]"),
    m("never-stops-like-false", "gpt2np/beam_search.py",
      'if early_stopping == "never" and length_penalty > 0:', "if False:",
      *(f"{REF}::test_generation_matches_stored_transformers[{case}-{setting}]"
        for case in ("tiny/seed", "tiny/random", "small-outliers/seed", "odd/random")
        for setting in ("beams2-eos-never", "beams4-r2-eos-never-lp2"))),
    m("repetition-penalty-ignores-the-sign", "gpt2np/processors.py",
      "np.where(scores < 0, scores * p, scores / p)", "scores / p",
      "tests/test_processors.py::test_repetition_penalty_divides_positive_and_multiplies_negative_scores"),
    m("repetition-penalty-on-the-pads", "gpt2np/processors.py",
      "columns[None, :] < first_real[:, None]", "columns[None, :] < 0",
      "tests/test_processors.py::test_repetition_penalty_skips_the_pads_before_the_first_real_token"),
    m("ngram-window-one-short", "gpt2np/processors.py",
      "    suffix = sequences[:, t - n + 1 :]  # [N, n - 1] what the next token would complete\n"
      "    windows = np.lib.stride_tricks.sliding_window_view(sequences, n, axis=1)",
      "    suffix = sequences[:, t - n + 2 :]  # [N, n - 1] what the next token would complete\n"
      "    windows = np.lib.stride_tricks.sliding_window_view(sequences, n - 1, axis=1)",
      "tests/test_processors.py::test_no_repeat_ngram_window_is_exactly_n_minus_1_tokens"),
    m("bad-word-prefix-at-the-start", "gpt2np/processors.py",
      "sequences[:, t - len(prefix) :] == prefix", "sequences[:, : len(prefix)] == prefix",
      "tests/test_processors.py::test_bad_words_single_tokens_always_and_longer_words_only_at_their_last_token"),
    m("eos-suppression-off-by-one", "gpt2np/processors.py",
      "sequences.shape[1] < self.min_length", "sequences.shape[1] <= self.min_length",
      "tests/test_processors.py::test_min_length_bans_eos_until_the_sequence_is_long_enough"),
    m("min-p-drops-the-threshold", "gpt2np/sampling.py",
      "np.where(probs < threshold", "np.where(probs <= threshold",
      "tests/test_sampling.py::test_min_p_keeps_tokens_exactly_at_the_threshold"),
    m("min-p-before-top-p", "gpt2np/sampling.py",
      "    logits = top_p_filter(logits, top_p)\n    if min_p is not None:\n        logits = min_p_filter(logits, min_p)\n",
      "    if min_p is not None:\n        logits = min_p_filter(logits, min_p)\n    logits = top_p_filter(logits, top_p)\n",
      "tests/test_sampling.py::test_min_p_comes_after_top_p"),
    m("temperature-overflow-unguarded", "gpt2np/sampling.py",
      "    if overflowed.any():\n", "    if False:\n",
      "tests/test_sampling.py::test_a_tiny_temperature_is_greedy_not_nan"),
    m("warpers-before-processors", "gpt2np/generation.py",
      "        if processors.active:\n            logits = processors(logits, tokens[:, : T + step])\n"
      "        if s.do_sample:\n            logits = filter_logits(logits, s.temperature, s.top_k, s.top_p, s.min_p)\n",
      "        if s.do_sample:\n            logits = filter_logits(logits, s.temperature, s.top_k, s.top_p, s.min_p)\n"
      "        if processors.active:\n            logits = processors(logits, tokens[:, : T + step])\n        if s.do_sample:\n",
      "tests/test_generation.py::test_processors_come_before_the_warpers"),
    m("return-sequences-tiled", "gpt2np/generation.py",
      "np.repeat(ids, R, axis=0) if R > 1 else ids", "np.tile(ids, (R, 1)) if R > 1 else ids",
      "tests/test_generation.py::test_num_return_sequences_with_sampling_are_the_prompt_repeated"),
    m("transition-scores-after-the-end", "gpt2np/generation.py",
      "return np.where(ended, 0, out).astype(stacked.dtype)", "return out",
      "tests/test_generation.py::test_beam_scores_are_the_sum_of_transition_scores_over_length"),
    m("stop-string-must-start-in-the-new-token", "gpt2np/stopping.py",
      "max(0, last_start - len(s) + 1)", "last_start",
      "tests/test_stopping.py::test_a_string_across_tokens_and_inside_the_last_token"),
    m("stop-string-anywhere-in-the-window", "gpt2np/stopping.py",
      "max(0, last_start - len(s) + 1)", "0",
      "tests/test_stopping.py::test_a_string_across_tokens_and_inside_the_last_token"),
    # --- scoring ---------------------------------------------------------------------------
    m("scoring-without-the-label-shift", "gpt2np/scoring.py",
      "predictors = hidden[rows, cols - 1]", "predictors = hidden[rows, cols]",
      f"{REF}::test_scores_match_transformers_log_softmax_float64[tiny/seed]"),
    m("scoring-the-first-token-after-a-pad", "gpt2np/scoring.py",
      "previous_real[:, 1:] = attention_mask[:, :-1] == 1", "previous_real[:, 1:] = True",
      "tests/test_scoring.py::test_scored_positions"),
    m("log-softmax-exp-before-the-shift", "gpt2np/scoring.py",
      "shifted = np.subtract(x, m)", "shifted = np.subtract(x, 0 * m)",
      "tests/test_scoring.py::test_target_logprobs_of_a_whole_vocabulary_of_very_negative_logits"),
    m("loss-is-a-mean-of-row-means", "gpt2np/scoring.py",
      "loss = float(-total.sum() / n_scored.sum())", "loss = float(-np.mean(total / n_scored))",
      "tests/test_scoring.py::test_undefined_positions_are_nan_and_totals_add_up"),
    # --- remembered checks (checkpoint.py) --------------------------------------------------
    m("stamp-ignores-ctime", "gpt2np/checkpoint.py",
      "{stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino}", "{stat.st_mtime_ns} {stat.st_ino}",
      "tests/test_checkpoint.py::test_a_nan_written_with_the_mtime_put_back_is_found"),
    m("stamp-ignores-the-content-sample", "gpt2np/checkpoint.py",
      "{stat.st_ino} {content_sample(path)} {fact}", "{stat.st_ino} {fact}",
      "tests/test_checkpoint.py::test_the_stamp_samples_the_content_where_the_times_say_nothing"),
    # --- model folders (checkpoint.py, hub.py, the commands' loading) -----------------------
    m("tensor-size-in-int64", "gpt2np/checkpoint.py",
      "end - begin != math.prod(shape) * dtype.itemsize", "end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize",
      "tests/test_checkpoint.py::test_offsets_that_disagree_with_shape_and_dtype"),
    m("a-pickle-beside-costs-the-tokenizer", "gpt2np/hub.py",
      "if folder.is_dir() and _pick(folder, TOKENIZER_FILES) is None:",
      'if folder.is_dir() and _pick(folder, TOKENIZER_FILES) is None and not (folder / "pytorch_model.bin").is_file():',
      "tests/test_hub.py::test_a_pickle_beside_the_safetensors_does_not_cost_the_folder_gpt2s_tokenizer"),
    m("commands-load-the-tokenizer-first", "gpt2np/tools/common.py",
      "    model = load_model(args)\n"
      "    tok = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)\n",
      "    tok = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)\n"
      "    model = load_model(args)\n",
      "tests/test_cli.py::test_the_model_folder_is_checked_before_its_tokenizer"),
    # --- corpus scoring: one bad text never stops the others (corpus.py, ray.py) -------------
    m("a-failed-batch-fails-its-texts", "gpt2np/corpus.py",
      "        except GPT2npError:\n            # Which text failed", "        except InputError:\n            # Which text failed",
      "tests/test_corpus.py::test_a_batch_that_fails_is_scored_again_one_text_at_a_time"),
    m("ray-actors-take-every-cpu", "gpt2np/ray.py",
      "free = cluster_cpus - 1  # one CPU for the reads", "free = cluster_cpus  # one CPU for the reads",
      "tests/test_ray.py::test_actors_leave_a_cpu_for_the_reads"),
    # --- score --file: the output's safety (tools/score_file.py, tools/score.py) -------------
    m("out-compared-with-the-input-by-name", "gpt2np/tools/score_file.py",
      "os.path.samestat(os.stat(written), given)", "str(written) == path",
      "tests/test_score_file_output.py::test_an_out_that_is_the_input_is_refused_and_the_input_untouched"),
    m("stride-checked-only-once-scoring", "gpt2np/tools/score.py",
      "            check_stride(opts.stride, model.config.n_positions)\n", "            pass\n",
      "tests/test_score_file_output.py::test_a_bad_option_never_touches_an_existing_out"),
    m("output-lock-shared", "gpt2np/tools/score_file.py",
      "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
      "tests/test_score_file_output.py::test_a_second_run_on_the_same_out_refuses"),
    m("resume-ignores-the-settings", "gpt2np/tools/score_file.py",
      'changed = differences(meta["settings"], settings)', "changed = []",
      "tests/test_score_file_output.py::test_resume_refuses_other_settings_naming_them"),
    m("resume-keeps-what-follows-the-sidecar", "gpt2np/tools/score_file.py",
      "        f.truncate(records_bytes)  #", "        f.truncate(f.seek(0, 2))  #",
      "tests/test_score_file_output.py::test_a_resume_after_a_partial_write_gives_the_uninterrupted_bytes"),
    m("resume-keeps-a-last-chunk-cut-by-the-end", "gpt2np/tools/score_file.py",
      "keep, input_hash, tail = boundary, at_boundary, [*tail, following]", "tail = [following]",
      "tests/test_score_file_output.py::test_a_finished_run_whose_input_grew_resumes_as_one_run"),
    m("byte-order-mark-read-as-text", "gpt2np/tools/score_file.py",
      "yield first.removeprefix(BOM)", "yield first",
      "tests/test_score_file.py::test_a_byte_order_mark_is_not_text"),
    m("non-finite-record-written", "gpt2np/tools/score_file.py",
      "if not all(math.isfinite(x) for x in numbers):", "if False:",
      "tests/test_score_file.py::test_a_text_whose_scores_are_not_finite_gets_an_error_record"),
    m("deeply-nested-json-unhandled", "gpt2np/tools/score_file.py",
      "    except RecursionError:  # Python's JSON parser", "    except ZeroDivisionError:  # Python's JSON parser",
      "tests/test_score_file.py::test_lines_that_stopped_the_run_get_error_records"),
    # --- compare (cross-checking another implementation) -----------------------------------
    m("compare-ignores-nan-in-pads", "gpt2np/tools/measure.py",
      "    bad = ~np.isfinite(cand)\n", "    bad = ~np.isfinite(cand) & cells\n",
      f"{CMP}::test_nan_in_a_pad_row_of_the_pattern_fails_there_naming_the_rows_and_the_reason"),
    m("compare-another-fill-is-a-bug", "gpt2np/tools/measure.py",
      'return None, f"the forbidden cells hold', 'return "another fill", f"the forbidden cells hold',
      f"{CMP}::test_another_convention_for_the_forbidden_cells_passes_with_one_note[minus-inf]"),
    m("compare-minus-inf-fill-counted-as-non-finite", "gpt2np/tools/measure.py",
      "        bad &= cells | ~np.isneginf(cand)\n", "        pass\n",
      f"{CMP}::test_another_convention_for_the_forbidden_cells_passes_with_one_note[minus-inf]"),
    m("compare-fill-added-twice-passes", "gpt2np/tools/measure.py",
      'doubled = added_twice(values, both, is_fill | classes["large"])', "doubled = None",
      f"{CMP}::test_the_fill_added_twice_still_diverges"),
    m("compare-leak-into-the-pattern-not-named", "gpt2np/tools/measure.py",
      "if weights.size and weights.max() >= 0.5 * m.diff:", "if weights.size and weights.max() > m.diff:",
      f"{CMP}::test_a_mask_that_does_not_reach_the_softmax_fails_at_hook_pattern"),
    m("compare-no-swap-of-equal-length-axes", "gpt2np/tools/compare.py",
      "        if ref.shape[i] != ref.shape[j]:", "        if ref.shape[i] == ref.shape[j]:",
      f"{CMP}::test_axes_of_equal_length_swapped_are_named[q]"),
    m("compare-pads-left-out-uncounted", "gpt2np/tools/compare.py",
      "    if report.pads.any():", "    if False:",
      f"{CMP}::test_finite_pad_values_stay_unchecked_and_the_report_counts_them"),
    m("compare-speaks-of-pads-without-pads", "gpt2np/tools/compare.py",
      "    if report.pads.any():", "    if True:",
      f"{CMP}::test_without_pads_nothing_mentions_pads"),
    m("trace-ids-pad-id-ignored", "gpt2np/tools/trace.py",
      "masks = [list(np.cumsum(np.asarray(row) != args.pad_id) > 0) for row in rows]",
      "masks = [[1] * len(row) for row in rows]",
      "tests/test_trace.py::test_ids_with_a_pad_id_trace_exactly_what_the_prompts_do"),
    m("trace-ids-padded-on-the-right", "gpt2np/tools/trace.py",
      "[[pad] * (T - len(row)) + row for row in rows]", "[row + [pad] * (T - len(row)) for row in rows]",
      "tests/test_trace.py::test_ids_with_a_pad_id_trace_exactly_what_the_prompts_do"),
    m("model-not-found-without-the-random-model-hint", "gpt2np/tools/cli.py",
      "_print_error(with_random_model_hint(message) if isinstance(e, ModelNotFoundError) else message)",
      "_print_error(message)",
      "tests/test_cli.py::test_every_command_that_cannot_find_a_model_points_to_random_model[generate]"),
    # --- the plain page (plain.py): its tests must catch a bug in the reference itself ---------
    m("plain-gelu-constant", "gpt2np/plain.py",
      "(x + 0.044715 * x**3)", "(x + 0.0447 * x**3)",
      f"{PLAIN}::test_each_fast_function_equals_its_plain_one[gelu-float64]"),
    m("plain-variance-unbiased", "gpt2np/plain.py",
      "variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)",
      "variance = ((x - mean) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)",
      f"{PLAIN}::test_each_fast_function_equals_its_plain_one[layer_norm-float64]"),
    m("plain-empty-row-rule-removed", "gpt2np/plain.py",
      "weights = np.where((additive == 0).any(axis=-1, keepdims=True), weights, 0)", "weights = weights",
      f"{PLAIN}::test_each_fast_function_equals_its_plain_one[attention-float64]"),
    m("plain-positions-ignore-the-pads", "gpt2np/plain.py",
      "positions = np.where(attention_mask == 1, np.cumsum(attention_mask, axis=-1) - 1, 0)",
      "positions = np.broadcast_to(np.arange(attention_mask.shape[1]), attention_mask.shape)",
      f"{PLAIN}::test_the_fast_forward_equals_the_plain_one[tiny/seed-min-float64]"),
    m("plain-mask-not-causal", "gpt2np/plain.py",
      "allowed = np.tri(T, dtype=bool) &", "allowed = np.ones((T, T), dtype=bool) &",
      f"{PLAIN}::test_the_fast_forward_equals_the_plain_one[tiny/random-min-float64]"),
    m("plain-scale-by-the-embedding", "gpt2np/plain.py",
      "1 / math.sqrt(config.n_embd // config.n_head)", "1 / math.sqrt(config.n_embd)",
      f"{PLAIN}::test_the_fast_forward_equals_the_plain_one[tiny/random-min-float64]"),
    m("plain-generate-mask-not-grown", "gpt2np/plain.py",
      "attention_mask = np.concatenate([attention_mask, np.ones_like(attention_mask[:, :1])], axis=1)",
      "attention_mask = np.concatenate([attention_mask, np.zeros_like(attention_mask[:, :1])], axis=1)",
      f"{PLAIN}::test_greedy_generation_with_and_without_the_cache_equals_the_plain_one[tiny-min-True]"),
    # --- the plain BPE (bpe.py): word boundaries and merge order, against tokenizers ----------
    m("bpe-python-isspace", "gpt2np/bpe.py",
      "    if ch in WHITE_SPACE:", "    if ch.isspace():",
      "tests/test_bpe.py::test_the_same_words_as_tokenizers_pre_tokenizer"),
    m("bpe-no-contractions", "gpt2np/bpe.py",
      "contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)", "contraction = None",
      "tests/test_bpe.py::test_the_same_ids_as_tokenizers"),
    m("bpe-latest-merge-first", "gpt2np/bpe.py",
      "best = min(pairs, key=lambda p: self.rank.get(p, len(self.rank)))", "best = max(pairs, key=lambda p: self.rank.get(p, -1))",
      "tests/test_bpe.py::test_the_same_ids_as_tokenizers"),
    m("bpe-whitespace-keeps-the-space-before-a-word", "gpt2np/bpe.py",
      "            if i < n and i - start > 1:", "            if False:",
      "tests/test_bpe.py::test_the_same_ids_as_tokenizers"),
    # --- explain's model steps (tools/explain.py): what they print is what happened -----------
    m("explain-parameters-tied-head-counted-twice", "gpt2np/tools/explain.py",
      "total = sum(a.size for a in w.arrays())", "total = sum(a.size for a in w.arrays()) + w.lm_head.size",
      "tests/test_explain.py::test_parameters_step_counts_what_the_config_says[tiny]"),
    m("explain-decode-position-is-the-column", "gpt2np/tools/explain.py",
      "step_positions = positions[:, -1:] + 1  # [B, 1] each row's last position + 1",
      "step_positions = np.full((B, 1), T)  # [B, 1] each row's last position + 1",
      "tests/test_explain.py::test_decode_step_shows_the_shapes_and_positions_of_a_real_step"),
    # --- the page (tools/page.py + page.html): what the browser shows is the model's numbers -----
    m("page-hover-rounds-the-exact-weight", "gpt2np/tools/page.html",
      'x === 0 ? "0" : x.toPrecision(9)', 'x === 0 ? "0" : x.toPrecision(5)',
      f"{PAGE}::test_hovering_a_cell_shows_run_with_caches_weight"),
    m("page-masked-cell-drawn-as-a-weight", "gpt2np/tools/page.html",
      'if (cat !== 0) return { kind: "masked", value: 0, cat };', 'if (cat === 3) return { kind: "masked", value: 0, cat };',
      f"{PAGE}::test_a_masked_cell_says_masked_and_differs_from_a_zero"),
    m("page-temperature-ignored", "gpt2np/tools/page.html",
      "z[v] = LOGITS[b * V + v] / temperature;", "z[v] = LOGITS[b * V + v];",
      f"{PAGE}::test_the_next_token_probabilities_are_samplings"),
    m("page-top-k-drops-the-kth-token", "gpt2np/tools/page.html",
      "if (z[v] < kth) z[v] = -Infinity;", "if (z[v] <= kth) z[v] = -Infinity;",
      f"{PAGE}::test_the_next_token_probabilities_are_samplings"),
    m("page-pads-never-hidden", "gpt2np/tools/page.html",
      "return state.showPads ? all : all.filter((t) => !isPad(b, t));", "return all;",
      f"{PAGE}::test_hiding_pads_drops_their_rows_and_columns"),
    m("page-logit-lens-without-ln_f", "gpt2np/tools/page.py",
      "z = lm_head(layer_norm(x, model.weights.ln_f, cfg.layer_norm_epsilon), model.weights.lm_head)",
      "z = lm_head(x, model.weights.lm_head)",
      f"{PAGE}::test_the_logit_lens_is_ln_f_and_the_output_layer_on_each_stream"),
    # --- the PNGs (tools/plot.py): a masked cell is not drawn as a zero weight ------------------
    m("plot-masked-cells-not-hatched", "gpt2np/tools/plot.py",
      "for q, k in zip(*np.nonzero(masked)):  # forbidden", "for q, k in []:  # forbidden",
      "tests/test_plot.py::test_masked_cells_are_hatched_and_carry_no_number"),
    m("plot-masked-cells-coloured-as-zero", "gpt2np/tools/plot.py",
      "np.ma.masked_array(w, masked)", "w",
      "tests/test_plot.py::test_masked_cells_are_hatched_and_carry_no_number"),
    m("plot-drop-pads-ignored", "gpt2np/tools/plot.py",
      "keep = np.flatnonzero(mask == 1) if drop_pads else", "keep = np.flatnonzero(mask >= 0) if drop_pads else",
      "tests/test_plot.py::test_drop_pads_leaves_the_pads_out"),
    # --- TransformerLens compatibility (activation_cache.py, hooks.py, issue 23) -------------
    m("hook-scale-without-eps", "gpt2np/layers.py",
      "    return np.sqrt(var + eps)  # [..., 1]", "    return np.sqrt(var)  # [..., 1]",
      "tests/test_activation_cache.py::test_hook_scale_in_float64_is_the_formula_the_layer_norm_divides_by"),
    m("accumulated-resid-without-the-final-stream", "gpt2np/activation_cache.py",
      "        for i in range(layer + 1):", "        for i in range(layer):",
      "tests/test_activation_cache.py::test_accumulated_resid_is_every_stream_up_to_the_layer"),
    m("one-sequence-hooks-still-see-the-batch-axis", "gpt2np/hooks.py",
      "seen = given[0] if self.one_sequence else given", "seen = given",
      "tests/test_activation_cache.py::test_one_sequence_hooks_see_what_the_cache_holds"),
    # --- TransformerLens's surface (hooked_transformer.py, issue 34) ------------------------------
    m("tl-w_q-wrong-head-split", "gpt2np/hooked_transformer.py",
      "w = attn.c_attn.weight.reshape(C, 3, n_heads, D).transpose(1, 2, 0, 3)",
      "w = attn.c_attn.weight.reshape(C, 3, D, n_heads).transpose(1, 3, 0, 2)",
      "tests/test_hooked_transformer.py::test_w_q_splits_c_attn_into_heads_as_the_forward_pass_does"),
    m("tl-bos-not-prepended", "gpt2np/hooked_transformer.py",
      "rows = [([tok.eos_token_id] if bos else [])", "rows = [([tok.eos_token_id] if bos and False else [])",
      "tests/test_hooked_transformer.py::test_to_tokens_prepends_bos_unless_told_not_to"),
    m("tl-hook-normalized-after-the-gain", "gpt2np/hooked_transformer.py",
      "n = (centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps)).astype(dtype)",
      "n = (centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps) * ln.w + ln.b).astype(dtype)",
      "tests/test_hooked_transformer.py::test_hook_normalized_is_before_the_gain_and_masked_scores_are_minus_inf"),
    # --- the optimizer (train.py, issue 32): where home-made trainers go wrong ---------------------
    m("adamw-no-bias-correction", "gpt2np/train.py",
      "dtype(lr / (1 - beta1**t))", "dtype(lr)",
      "tests/test_train.py::test_three_steps_follow_the_update_rule"),
    m("adamw-decay-coupled-into-the-gradient", "gpt2np/train.py",
      "            cp *= shrink  # decoupled", "            cg = cg + dtype(weight_decay) * cp  # coupled",
      "tests/test_train.py::test_three_steps_follow_the_update_rule"),
    m("adamw-2d-decays-biases-too", "gpt2np/train.py",
      'return decay == "all" or p.ndim >= 2', "return True",
      "tests/test_train.py::test_three_steps_follow_the_update_rule"),
    m("adamw-eps-inside-the-root", "gpt2np/train.py",
      "        np.sqrt(cv, out=ca)\n        ca /= root_correction\n        ca += dtype(eps)  # eps outside the root",
      "        np.divide(cv, root_correction * root_correction, out=ca)\n        ca += dtype(eps)\n        np.sqrt(ca, out=ca)",
      "tests/test_train.py::test_three_steps_follow_the_update_rule"),
    m("adamw-chunks-skip-the-partial-last-one", "gpt2np/train.py",
      "    for start in range(0, fp.size, STEP_CHUNK):", "    for start in range(0, fp.size - STEP_CHUNK + 1, STEP_CHUNK):",
      "tests/test_train.py::test_three_steps_follow_the_update_rule"),
    m("clip-per-tensor-norm", "gpt2np/train.py",
      "            g *= g.dtype.type(coef)",
      "            g *= g.dtype.type(min(1.0, max_norm / (float(np.linalg.norm(g)) + 1e-6)))",
      "tests/test_train.py::test_clipping_scales_every_gradient_by_the_one_global_norm"),
    # --- gpt2np train (tools/train.py, training_data.py, dropout.py, issue 32) ---------------------
    m("train-rng-state-not-restored", "gpt2np/tools/train.py",
      '        rng.bit_generator.state = saved["rng"]\n', "",
      "tests/test_train_command.py::test_kill_9_anywhere_then_resume_gives_the_same_bytes[dropout]"),
    m("train-data-position-not-restored", "gpt2np/tools/train.py",
      'batcher.epoch, batcher.index = saved["position"]["epoch"], saved["position"]["index"]',
      "batcher.epoch, batcher.index = 0, 0",
      "tests/test_train_command.py::test_kill_9_anywhere_then_resume_gives_the_same_bytes[no-dropout]"),
    m("train-checkpoint-written-in-place", "gpt2np/tools/train.py",
      'with open(path.with_name(path.name + TMP), "wb") as f:', 'with open(path, "wb") as f:',
      "tests/test_train_command.py::test_kill_9_anywhere_then_resume_gives_the_same_bytes[no-dropout]"),
    m("train-resume-does-not-check-settings", "gpt2np/tools/train.py",
      "        if said:\n", "        if said and False:\n",
      "tests/test_train_command.py::test_resume_with_other_settings_is_refused_naming_them"),
    m("train-grad-accum-summed-not-averaged", "gpt2np/tools/train.py",
      "            a /= a.dtype.type(args.grad_accum)", "            a /= a.dtype.type(1)",
      "tests/test_train_command.py::test_gradient_accumulation_is_one_batch_of_all_the_rows"),
    m("train-nan-loss-saved", "gpt2np/tools/train.py",
      "            if not (math.isfinite(loss) and math.isfinite(norm)):", "            if False:",
      "tests/test_train_command.py::test_a_loss_that_becomes_nan_stops_and_keeps_the_last_good_checkpoint"),
    m("training-data-no-eos-between-documents", "gpt2np/training_data.py",
      "ids += (eos if i else []) + tokenizer.encode(doc)", "ids += tokenizer.encode(doc)",
      "tests/test_training_data.py::test_documents_are_joined_with_eos_between_them"),
    m("dropout-not-scaled", "gpt2np/dropout.py",
      "    return kept / (1.0 - p)", "    return kept * 1.0",
      "tests/test_dropout.py::test_a_mask_drops_with_probability_p_and_scales_the_rest"),
    m("dropout-mask-forgotten-on-the-way-back", "gpt2np/dropout.py",
      'dmlp = (dy * s["m_mlp_out"]).astype(dtype)', "dmlp = dy.astype(dtype)",
      "tests/test_dropout.py::test_the_gradient_is_the_finite_difference_of_the_loss"),
    m("dropout-attention-mask-forgotten-on-the-way-back", "gpt2np/dropout.py",
      "dweights = (dz64 @ v.swapaxes(-1, -2)) * m_attn", "dweights = dz64 @ v.swapaxes(-1, -2)",
      "tests/test_dropout.py::test_the_gradient_is_the_finite_difference_of_the_loss"),
    m("init-gpt2-c-proj-unscaled", "gpt2np/tools/random_model.py",
      "std / math.sqrt(2 * config.n_layer) if name.endswith", "std if name.endswith",
      "tests/test_random_model.py::test_init_gpt2_is_gpt2s_initialisation"),
    # --- tokenizer -------------------------------------------------------------------------
    m("lone-surrogate-reaches-the-tokenizer", "gpt2np/tokenizer.py",
      '        check_unicode(text, "the text")\n', "",
      "tests/test_tokenizer.py::test_a_lone_surrogate_is_refused_with_the_reason"),
    m("padding-side-ignored", "gpt2np/tokenizer.py",
      'cols = slice(width - len(r), width) if self._padding_side == "left" else slice(0, len(r))', "cols = slice(0, len(r))",
      "tests/test_tokenizer.py::test_the_seed_batch_left_padded"),
    # --- malloc ------------------------------------------------------------------------------
    m("malloc-trim-threshold-only", "gpt2np/heap.py",
      "SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}", "SETTINGS = {M_TRIM_THRESHOLD: 64 << 20}",
      "tests/test_heap.py::test_a_built_model_stops_the_page_faults_that_default_malloc_makes"),
    m("malloc-never-tuned", "gpt2np/model.py",
      "        tune_malloc()  # once per process", "        pass  # once per process",
      "tests/test_heap.py::test_a_built_model_stops_the_page_faults_that_default_malloc_makes"),
    # --- the backward pass (issue 31): plain_backward.py, backward.py; torch-free tests ---------
    m("layernorm-backward-without-its-mean-term", "gpt2np/plain_backward.py",
      "dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat", "dx = rstd * (g - xhat",
      f"{PB}::test_layer_norm_backward"),
    m("softmax-backward-without-the-row-sum", "gpt2np/plain_backward.py",
      "return p * (dp - (dp * p).sum(axis=-1, keepdims=True))", "return p * dp",
      f"{PB}::test_softmax_backward"),
    m("tied-embedding-misses-the-output-layer", "gpt2np/plain_backward.py",
      "    if config.tie_word_embeddings:\n        dwte += d_lm_head\n", "    if config.tie_word_embeddings:\n        pass\n",
      f"{PB}::test_every_parameters_gradient_against_finite_differences[tiny]"),
    m("fast-tied-embedding-misses-the-output-layer", "gpt2np/backward.py",
      "        dwte = d_lm_head  # [V, C] float64: the tied", "        dwte = np.zeros_like(d_lm_head)  # [V, C] float64: the tied",
      f"{BW}::test_the_fast_gradients_equal_the_plain_ones[tiny-min-padded-float64]"),
    m("gelu-backward-of-the-erf-form", "gpt2np/plain_backward.py",
      "    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))",
      "    return dy * (0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))",
      f"{PB}::test_gelu_backward_is_the_tanh_forms_derivative"),
    m("fast-gelu-backward-drops-the-partial-chunk", "gpt2np/backward.py",
      "    for start in range(0, flat_x.size, GELU_CHUNK):", "    for start in range(0, flat_x.size - GELU_CHUNK + 1, GELU_CHUNK):",
      f"{BW}::test_the_fast_gelu_backward_is_the_plain_one_in_every_chunk"),
    m("fast-gelu-backward-without-the-3", "gpt2np/backward.py",
      "    np.multiply(x2, 3 * a, out=x2)", "    np.multiply(x2, a, out=x2)",
      f"{BW}::test_the_fast_gelu_backward_is_the_plain_one_in_every_chunk",
      f"{BW}::test_the_fast_gradients_equal_the_plain_ones[tiny-min-padded-float64]"),
    m("checkpointing-recomputes-from-a-rounded-input", "gpt2np/backward.py",
      "        saved = block_forward(model, i, x, mask)[1]", "        saved = block_forward(model, i, x.astype(dtype).astype(np.float64), mask)[1]",
      f"{BW}::test_gradient_checkpointing_gives_the_same_bits[tiny-padded]"),
    m("memory-to-train-forgets-qkv", "gpt2np/tools/explain.py",
      "    per_token = 8 * C + 4 * 3 * C + 4 * C", "    per_token = 8 * C + 4 * C",
      "tests/test_explain.py::test_the_parameters_step_says_the_memory_to_train"),
    m("gradient-leaks-into-pads", "gpt2np/plain_backward.py",
      "return np.where(keep[..., None], dlogits, 0) / logits.dtype.type(keep.sum())", "return dlogits / logits.dtype.type(keep.sum())",
      f"{BW}::test_each_row_alone_equals_the_batch[tiny-plain]"),
    m("fast-gradient-leaks-into-pads", "gpt2np/backward.py",
      "rows, cols = np.nonzero(keep)  # [N] position (row, t) predicts", "rows, cols = np.nonzero(np.ones_like(keep))  # [N] position (row, t) predicts",
      f"{BW}::test_each_row_alone_equals_the_batch[tiny-fast]"),
    m("score-gradient-without-1-over-sqrt-d", "gpt2np/plain_backward.py",
      "dq = dscores @ k * scale", "dq = dscores @ k",
      f"{PB}::test_attention_backward_with_pads_and_empty_rows[min]"),
    m("loss-averaged-over-pads", "gpt2np/plain_backward.py",
      "return float(nll[keep].sum() / keep.sum())", "return float(nll[keep].sum() / keep.size)",
      f"{BW}::test_the_loss_four_ways[tiny]"),
    m("fast-loss-averaged-over-pads", "gpt2np/backward.py",
      "    return total / len(rows)\n", "    return total / keep.size\n",
      f"{BW}::test_the_loss_four_ways[tiny]"),
    m("fast-score-gradient-without-1-over-sqrt-d", "gpt2np/backward.py",
      "out[0][rows] = dscores @ k64 * scale", "out[0][rows] = dscores @ k64",
      f"{BW}::test_the_fast_gradients_equal_the_plain_ones[tiny-min-padded-float64]"),
    m("gradient-points-q-and-k-swapped", "gpt2np/backward.py",
      '[(2, "v", dv), (1, "k", dk), (0, "q", dq)]', '[(2, "v", dv), (1, "q", dq), (0, "k", dk)]',
      f"{BW}::test_the_gradient_at_each_point_against_finite_differences[blocks.0.attn.hook_q]"),
    # --- gradients in traces, compare on the backward, fwd + bwd hooks (issue 31); torch-free ------
    m("compare-walks-gradients-in-forward-order", "gpt2np/tools/tracefile.py",
      "return 1, -int(layer), BLOCK_BACKWARD.index(rest)", "return 1, int(layer), BLOCK_BACKWARD.index(rest)",
      f"{TG}::test_the_first_divergence_is_the_one_nearest_the_loss"),
    m("trace-parameter-gradients-under-nanogpt-names", "gpt2np/tools/trace.py",
      'tensors |= {"loss": np.array(loss, dtype=model.dtype), **parameters}',
      'tensors |= {"loss": np.array(loss, dtype=model.dtype), **{k.removeprefix("transformer."): v for k, v in parameters.items()}}',
      f"{TG}::test_trace_grads_holds_the_labels_the_loss_and_every_gradient"),
    m("compare-gradient-scale-not-diagnosed", "gpt2np/tools/measure.py",
      "        m.multiple = multiple_of(r, c)\n", "        m.multiple = None\n",
      f"{TG}::test_a_changed_gradient_is_the_first_divergence_with_its_diagnosis"),
    m("compare-first-gradient-ignores-a-wrong-shape", "gpt2np/tools/compare.py",
      'r.verdict in ("DIVERGES", "SHAPE") and r.name in self.grads', 'r.verdict == "DIVERGES" and r.name in self.grads',
      f"{TG}::test_a_parameter_gradient_saved_transposed_is_named"),
    m("compare-pattern-gradient-at-pad-keys-compared", "gpt2np/tools/measure.py",
      'if name.endswith("hook_pattern_grad"):', "if False:",
      f"{TG}::test_the_pattern_s_gradient_at_a_pad_key_is_not_compared"),
    m("bwd-hook-replacement-ignored", "gpt2np/backward.py",
      '    return hook(at + "hook_resid_pre", dx1 + dx0), grads\n',
      '    hook(at + "hook_resid_pre", dx1 + dx0)\n    return dx1 + dx0, grads\n',
      f"{BW}::test_bwd_hooks_read_and_replace_gradients"),
    m("fwd-replacement-not-replayed-in-the-backward", "gpt2np/hooks.py",
      "return x if kept is None else kept[0].astype(x.dtype)", "return x",
      f"{BW}::test_a_returned_replacement_stops_the_gradient_and_the_loss_is_the_hooked_model_s"),
    m("fwd-replacement-lets-the-gradient-through", "gpt2np/hooks.py",
      "return g if kept is None else np.where(kept[1], 0, g).astype(g.dtype)", "return g",
      f"{BW}::test_an_ablated_head_gets_no_gradient_upstream_and_the_others_theirs"),
    m("returned-replacement-cut-only-where-it-differs", "gpt2np/hooks.py",
      "cut = np.ones(x.shape, dtype=bool) if self._returned else (x != before)", "cut = x != before",
      f"{BW}::test_a_returned_replacement_stops_the_gradient_and_the_loss_is_the_hooked_model_s"),
    m("scale-gradient-sign-flipped", "gpt2np/backward.py",
      "ds = hook(name, -(g * xhat).sum(axis=-1, keepdims=True) / s)", "ds = hook(name, (g * xhat).sum(axis=-1, keepdims=True) / s)",
      f"{BW}::test_the_gradient_at_a_layernorm_scale_against_finite_differences[ln_final.hook_scale]"),
    m("llmc-linear-weights-not-transposed", "gpt2np/llmc.py",
      "            t = t.T  # GPT-2's Conv1D [in, out] -> nn.Linear's [out, in]", "            pass",
      "tests/test_llmc.py::test_the_model_file_is_llmcs_layout"),
    m("llmc-wte-padded-with-the-first-rows", "gpt2np/llmc.py",
      'np.zeros((padded_vocab(config.vocab_size) - len(t), t.shape[1]), "<f4")', "t[: padded_vocab(config.vocab_size) - len(t)]",
      "tests/test_llmc.py::test_the_model_file_is_llmcs_layout"),
    m("labels-not-shifted", "gpt2np/labels.py",
      "targets = labels[:, 1:]  # [B, T-1]", "targets = labels[:, :-1]  # [B, T-1]",
      f"{BW}::test_the_loss_four_ways[tiny]"),
    # --- issue 30: nothing overwritten, no accepted setting giving a wrong answer ------------
    m("resume-fingerprint-sampled-only", "gpt2np/tools/score_file.py",
      '"weights": remembered_sha256(checkpoint),', '"weights": __import__("gpt2np.checkpoint").checkpoint.content_sample(checkpoint),',
      "tests/test_score_file_output.py::test_resume_refuses_other_settings_naming_them"),
    m("beam-empty-slot-minus-1e9", "gpt2np/beam_search.py",
      "finished_scores = np.full((B, K), -np.inf, dtype=dtype)", "finished_scores = np.full((B, K), never, dtype=dtype)",
      "tests/test_generation.py::test_a_negative_length_penalty_returns_the_finished_beams"),
    m("beam-length-penalty-unbounded", "gpt2np/generation.py",
      "if abs(length_penalty) > limit:", "if False:",
      "tests/test_generation.py::test_a_length_penalty_the_dtype_cannot_carry_is_refused"),
    m("repetition-penalty-any-positive", "gpt2np/generation.py",
      "if not info.tiny <= penalty <= info.max:", "if False:",
      "tests/test_generation.py::test_a_repetition_penalty_the_dtype_cannot_carry_is_refused_without_a_warning"),
    m("repetition-penalty-overflow-unchecked", "gpt2np/processors.py",
      "    if overflowed.any():", "    if False:",
      "tests/test_processors.py::test_a_repetition_penalty_that_overflows_a_score_is_refused_never_nan"),
    m("compare-trusts-a-nan-reference", "gpt2np/tools/compare.py",
      "        if not (np.isfinite(a) | allowed).all():", "        if False:",
      f"{CMP}::test_a_malformed_reference_tensor_is_bad_usage"),
    m("compare-rtol-unbounded", "gpt2np/tools/compare.py",
      "not 0 < args.rtol < 1:", "not 0 < args.rtol:",
      f"{CMP}::test_an_rtol_that_accepts_anything_is_bad_usage"),
    m("safetensors-overlap-accepted", "gpt2np/checkpoint.py",
      "        if begin_b < end_a:", "        if False:",
      "tests/test_checkpoint.py::test_tensors_whose_bytes_overlap_are_refused"),
    m("overwrite-model-files-unprotected", "gpt2np/tools/overwrite.py",
      "        if hit is not None and not overwrite:", "        if False:",
      "tests/test_overwrite.py::test_score_never_writes_over_the_models_own_files",
      "tests/test_overwrite.py::test_trace_never_writes_over_the_models_weights"),
    m("overwrite-any-existing-file", "gpt2np/tools/overwrite.py",
      "    if path.exists() and not overwrite and not is_ours(path):", "    if False:",
      "tests/test_overwrite.py::test_a_file_the_command_did_not_write_is_replaced_only_with_overwrite",
      "tests/test_plot.py::test_a_picture_it_did_not_draw_is_replaced_only_with_overwrite"),
    m("overwrite-through-symlinks", "gpt2np/tools/overwrite.py",
      "        if not overwrite:\n            raise InputError(\n                f\"{flag} {out} is a symlink to {target}",
      "        if False:\n            raise InputError(\n                f\"{flag} {out} is a symlink to {target}",
      "tests/test_overwrite.py::test_a_symlinked_out_is_written_through_only_with_overwrite"),
    m("overwrite-any-folder", "gpt2np/tools/overwrite.py",
      "    if path.is_dir() and any(path.iterdir()) and not overwrite and not is_ours(path):", "    if False:",
      "tests/test_overwrite.py::test_random_model_writes_only_into_an_empty_or_new_folder",
      "tests/test_overwrite.py::test_download_writes_only_into_a_new_folder_or_an_earlier_download"),
    m("llmc-export-writes-over-anything", "gpt2np/tools/llmc.py",
      "    check_export_paths(args)\n", "",
      "tests/test_llmc.py::test_export_and_import_follow_the_overwrite_rule"),
    m("random-model-size-unchecked", "gpt2np/tools/random_model.py",
      "    if need > have:", "    if False:",
      "tests/test_random_model.py::test_a_size_beyond_the_machines_memory_is_refused_naming_it[n_embd-2-62]"),
    m("ray-arguments-checked-by-the-actors", "gpt2np/ray.py",
      "    check_arguments(model, tokenizer, text_column, batch_size, max_tokens, stride, dtype)\n", "",
      "tests/test_ray.py::test_bad_arguments_are_refused_in_the_driver_before_any_actor"),
    m("score-loss-nan-for-one-token-rows", "gpt2np/scoring.py",
      "    if not (mask.sum(axis=1) > 1).any():", "    if False:",
      "tests/test_scoring.py::test_a_one_token_text_has_nothing_to_score"),
]  # fmt: skip


# --- the runner ---------------------------------------------------------------------------


def check_texts(mutants) -> list[str]:
    """Every old text must occur exactly once in its file (in this working tree)."""
    problems = []
    for mu in mutants:
        path = ROOT / mu.file
        count = path.read_text().count(mu.old) if path.is_file() else -1
        if count != 1:
            where = "file not found" if count < 0 else f"found {count} times, expected exactly once"
            problems.append(f"{mu.name}: old text in {mu.file}: {where}:\n    {mu.old!r}")
    return problems


def copy_repo(into: Path) -> Path:
    """The repository's code and tests in `into`, and beside them (in into/_no_torch) stand-ins
    that make `import torch` / `import transformers` fail: the gallery proves what the suite
    catches *without* torch (a test that needs it skips, and the baseline refuses skips)."""
    for blocked in ("torch", "transformers"):
        (into / "_no_torch" / blocked).mkdir(parents=True)
        (into / "_no_torch" / blocked / "__init__.py").write_text(
            f"raise ImportError('{blocked} is blocked by scripts/ci/mutants.py: the gallery runs torch-free')\n"
        )
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, into / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
            )
        else:
            shutil.copy2(src, into / name)
    return into


def test_env(copy: Path, models_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(copy), str(copy / "_no_torch")]
    )  # the copy's gpt2np, never the working tree's
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc between a file and its mutated twin
    env["GPT2NP_TEST_MODELS"] = str(models_dir)
    return env


def run_pytest(copy: Path, tests, models_dir: Path) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output tail, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rf", *tests]
    if not any("test_properties" in t for t in tests):
        cmd[5:5] = ["-p", "no:hypothesispytest"]  # its import alone costs ~2 s of CPU per run
    start = time.perf_counter()
    try:
        r = subprocess.run(
            cmd, cwd=copy, env=test_env(copy, models_dir), capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {TIMEOUT} s", time.perf_counter() - start
    return r.returncode, (r.stdout + r.stderr).strip(), time.perf_counter() - start


def run_mutant(mu: Mutant, models_dir: Path) -> tuple[str, float, str]:
    """("caught" | "SURVIVED" | "ERROR", seconds, detail)."""
    with tempfile.TemporaryDirectory(prefix=f"gpt2np-mutant-{mu.name}-") as tmp:
        copy = copy_repo(Path(tmp))
        path = copy / mu.file
        source = path.read_text()
        assert source.count(mu.old) == 1, mu.name  # checked on the working tree already
        path.write_text(source.replace(mu.old, mu.new))
        code, output, seconds = run_pytest(copy, mu.tests, models_dir)
    last = output.splitlines()[-1] if output else ""
    if code is None:
        return "caught", seconds, "the tests hung (timeout)"
    if code == 1:
        failed = next((line for line in output.splitlines() if line.startswith("FAILED")), last)
        return "caught", seconds, failed
    if code == 0:
        return "SURVIVED", seconds, last
    return "ERROR", seconds, f"pytest exit code {code}: {output[-2000:]}"


def baseline(mutants, models_dir: Path) -> None:
    """On an unmodified copy: gpt2np comes from the copy, and every listed test passes (none skips)."""
    tests = sorted({t for mu in mutants for t in mu.tests})
    with tempfile.TemporaryDirectory(prefix="gpt2np-mutant-baseline-") as tmp:
        copy = copy_repo(Path(tmp))
        probe = (
            "import gpt2np\nprint(gpt2np.__file__)\ntry:\n    import torch\nexcept ImportError:\n    print('no torch')"
        )
        where = subprocess.run(
            [sys.executable, "-c", probe], cwd=copy, env=test_env(copy, models_dir), capture_output=True, text=True
        )
        lines = where.stdout.split()
        if not lines or not lines[0].startswith(str(copy)):
            sys.exit(f"the tests would not import the copied gpt2np but {where.stdout.strip() or where.stderr}")
        if lines[-1:] != ["torch"] or lines[-2:-1] != ["no"]:
            sys.exit("torch is still importable in the gallery's runs; they must be torch-free")
        code, output, seconds = run_pytest(copy, tests, models_dir)
    last = output.splitlines()[-1] if output else ""
    if code != 0 or "skipped" in last or "deselected" in last:
        sys.exit(
            f"the gallery's tests do not all pass on the unmodified code (exit {code}), so they cannot judge mutants:\n{output[-3000:]}"
        )
    print(f"baseline: the {len(tests)} selected tests pass on the unmodified code ({last}; {seconds:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="keyword", default="", help="only the mutants whose name contains this")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on unmodified code")
    args = parser.parse_args(argv)

    mutants = [mu for mu in MUTANTS if args.keyword in mu.name]
    names = [mu.name for mu in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    if args.list:
        for mu in mutants:
            print(f"{mu.name:40s} {mu.file:22s} {' '.join(mu.tests)}")
        return 0
    problems = check_texts(mutants)
    if problems:
        print("the gallery no longer matches the code (a refactoring changed these lines; update the mutants):")
        print("\n".join(problems))
        return 1
    if not mutants:
        print(f"no mutant matches -k {args.keyword!r}")
        return 1

    sys.path.insert(0, str(ROOT))
    from gpt2np.tools.random_model import TEST_MODELS, build_test_model

    models_dir = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models")).resolve()
    for name in TEST_MODELS:  # once, before any copy runs: the runs only read them
        build_test_model(name, models_dir)

    start = time.perf_counter()
    if not args.no_baseline:
        baseline(mutants, models_dir)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(lambda mu: (mu, *run_mutant(mu, models_dir)), mutants)
        outcome = {}
        for mu, status, seconds, detail in results:
            outcome[mu.name] = status
            print(f"{status:8s} {mu.name:40s} {seconds:5.1f} s  {detail}", flush=True)
    survived = [n for n, s in outcome.items() if s == "SURVIVED"]
    errors = [n for n, s in outcome.items() if s == "ERROR"]
    caught = len(outcome) - len(survived) - len(errors)
    print(f"{caught} of {len(outcome)} mutants caught in {time.perf_counter() - start:.0f} s")
    if survived:
        print("SURVIVED (the tests pass on this wrong code): " + ", ".join(survived))
    if errors:
        print("ERROR (the tests could not run; fix the mutant or its tests): " + ", ".join(errors))
    return 1 if survived or errors else 0


if __name__ == "__main__":
    sys.exit(main())
