"""Generation: the prompt in one forward pass, then one token per step through the KV cache.

The batch is left-padded, so every row's last column is a real token and each step appends a
column on the right: the new token, a 1 in the attention mask, and position = last + 1. A row
that produces eos is finished: it gets pad_token_id from then on, and generation stops when
every row is finished or the length is reached. This is transformers' `generate`, step for
step, so the tokens are the same, and a sequence gives the same tokens alone or in a batch.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import GenerationError, InputError
from .inputs import check_attention_mask, check_input_ids, check_length
from .kv_cache import KVCache
from .masks import position_ids_from_mask
from .sampling import filter_logits, greedy, sample

DEFAULT_MAX_LENGTH = 20  # transformers' default when neither max_length nor max_new_tokens is given


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


# Any: whatever the caller passed; checking it is this function's job.
def check_generation_args(
    prompt_len: int,
    max_length: Any,
    max_new_tokens: Any,
    do_sample: Any,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    seed: Any,
) -> int:
    """Validate the settings; return how many new tokens to generate."""
    if not isinstance(do_sample, (bool, np.bool_)):  # "no" would be truthy and quietly sample
        raise InputError(f"do_sample must be True or False, got {do_sample!r}")
    if max_new_tokens is not None:
        if not _is_int(max_new_tokens) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        n_new = int(max_new_tokens)
    else:
        explicit = max_length is not None
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        if not _is_int(max_length) or max_length < 1:
            raise InputError(f"max_length must be a positive integer, got {max_length!r}")
        if max_length <= prompt_len:
            raise InputError(
                f"max_length={max_length}{'' if explicit else ' (the default)'} counts the prompt too, and the "
                f"prompt is already {prompt_len} tokens (pads included): nothing is left to generate; pass a larger "
                "max_length or use max_new_tokens"
            )
        n_new = int(max_length) - prompt_len
    if not _is_int(top_k) or top_k < 0:
        raise InputError(f"top_k must be an integer >= 0 (0 keeps every token), got {top_k!r}")
    if not isinstance(top_p, numbers.Real) or not (0 < top_p <= 1):  # type: ignore[operator]  # see below
        raise InputError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p!r}")
    # (the ignores: typeshed gives numbers.Real no comparison operators; a Real compares fine)
    if do_sample and (not isinstance(temperature, numbers.Real) or not (0 < temperature < float("inf"))):  # type: ignore[operator]
        raise InputError(
            f"temperature must be a positive number when sampling, got {temperature!r} "
            "(for the single most likely token, use greedy decoding: do_sample=False)"
        )
    if seed is not None and not ((_is_int(seed) and seed >= 0) or isinstance(seed, np.random.Generator)):
        # NumPy's own refusal of a negative seed is a bare ValueError: "expected non-negative integer".
        raise InputError(f"seed must be an integer >= 0 or a numpy.random.Generator, got {seed!r}")
    return n_new


def generate(
    model: Any,  # a GPT2 (model.py imports this module, so it is not imported here)
    input_ids: ArrayLike,
    attention_mask: ArrayLike | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    eos_token_id: int | None = -1,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    seed: int | np.random.Generator | None = None,
    streamer: Any = None,
) -> np.ndarray:
    """Continue each row of a left-padded batch; returns [B, T + n_new] ids, prompt included
    (fewer columns if every row finished early). A 1-D prompt gives a 1-D result.

    max_length counts the prompt, pads included (default 20, as transformers); max_new_tokens
    counts only new tokens and wins when both are given. With do_sample=True the logits go
    through temperature, top_k (default 50, as transformers) and top_p before the draw; `seed`
    (an int or a numpy Generator) makes the draw reproducible. eos_token_id defaults to the
    model's (50256; None disables stopping), pad_token_id to eos. `streamer` is called with
    each step's [B] new tokens (or, if it has .put/.end like transformers' streamers, those).
    """
    cfg = model.config
    ids, one_sequence = check_input_ids(input_ids, cfg.vocab_size)
    mask = check_attention_mask(attention_mask, ids.shape)
    right_padded = np.flatnonzero(mask[:, -1] == 0)
    if right_padded.size:
        raise InputError(
            f"row {int(right_padded[0])} of attention_mask ends with padding (0): generation appends after the last "
            "column, so the batch must be padded on the left (tokenizer.padding_side = 'left')"
        )
    B, T = ids.shape
    n_new = check_generation_args(T, max_length, max_new_tokens, do_sample, temperature, top_k, top_p, seed)
    check_length(T + n_new, cfg.n_positions, f"the prompt ({T}) plus {n_new} new tokens")
    if not isinstance(use_cache, (bool, np.bool_)):
        raise InputError(f"use_cache must be True or False, got {use_cache!r}")
    eos_from_config = _is_int(eos_token_id) and eos_token_id == -1
    eos = cfg.eos_token_id if eos_from_config else eos_token_id
    pad = eos if pad_token_id is None else pad_token_id
    for name, value in (("eos_token_id", eos), ("pad_token_id", pad)):
        if value is not None and (not _is_int(value) or not 0 <= value < cfg.vocab_size):
            # Say where a bad eos came from: the caller may never have passed one.
            origin = ""
            if name == "eos_token_id" and eos_from_config:
                origin = " (the model's config.eos_token_id; pass eos_token_id=None never to stop early, or a valid id)"
            raise InputError(f"{name} must be a token id in 0 .. {cfg.vocab_size - 1} or None, got {value!r}{origin}")
    if eos is not None and pad is None:
        raise InputError("pad_token_id is needed to fill rows that finished (set it, or set eos_token_id=None)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    tokens = np.empty((B, T + n_new), dtype=np.int64)  # the result, filled column by column
    tokens[:, :T] = ids
    full_mask = np.ones((B, T + n_new), dtype=np.int64)  # generated tokens are all real: 1
    full_mask[:, :T] = mask
    positions = position_ids_from_mask(mask)  # [B, T] pads don't count
    cache = KVCache(cfg.n_layer, B, cfg.n_head, T + n_new, cfg.head_dim, model.dtype) if use_cache else None
    finished = np.zeros(B, dtype=bool)

    logits = model.forward(ids, mask, positions, cache, logits_to_keep=1).logits[:, -1]  # [B, vocab]
    n_done = 0
    for step in range(n_new):
        check_logits(logits, step)
        if do_sample:
            next_tokens = sample(filter_logits(logits, temperature, top_k, top_p), rng)  # [B]
        else:
            next_tokens = greedy(logits)  # [B]
        if eos is not None:
            # pad is set whenever eos is (checked above); mypy cannot see that, hence the ignore
            next_tokens = np.where(finished, pad, next_tokens)  # type: ignore[arg-type]  # finished rows get padding
            finished |= next_tokens == eos
        tokens[:, T + step] = next_tokens
        n_done = step + 1
        _stream(streamer, next_tokens)
        if finished.all() or n_done == n_new:
            break
        length = T + n_done  # tokens so far; the new one sits at index length - 1
        if cache is not None:  # feed only the new token; its keys/values join the cache
            step_positions = positions[:, -1:] + n_done  # [B, 1] last prompt position + steps taken
            out = model.forward(next_tokens[:, None], full_mask[:, :length], step_positions, cache, logits_to_keep=1)
        else:  # recompute everything: slower, same tokens (a check of the cache)
            out = model.forward(
                tokens[:, :length],
                full_mask[:, :length],
                position_ids_from_mask(full_mask[:, :length]),
                logits_to_keep=1,
            )
        logits = out.logits[:, -1]  # [B, vocab]
    _stream_end(streamer)
    result = tokens[:, : T + n_done]
    return result[0] if one_sequence else result


def check_logits(logits: np.ndarray, step: int) -> None:
    """NaN or +inf logits have no next token: argmax of an all-NaN row is 0, and sampling from
    it gives 0 too, so without this check generation would quietly write token 0 ("!")."""
    bad = np.flatnonzero(np.isnan(logits).any(axis=-1) | np.isposinf(logits).any(axis=-1))
    if bad.size:
        raise GenerationError(
            f"the logits of row {int(bad[0])} at generation step {step} are NaN or +inf, so no next token can be chosen; "
            "the forward pass overflowed or was fed NaN (a hook that writes NaN or inf, or float32 overflow: "
            "try dtype='float64' to find out)"
        )


def _stream(streamer: Any, next_tokens: np.ndarray) -> None:
    if streamer is None:
        return
    if hasattr(streamer, "put"):
        streamer.put(next_tokens)
    else:
        streamer(next_tokens)


def _stream_end(streamer: Any) -> None:
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
