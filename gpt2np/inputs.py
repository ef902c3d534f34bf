"""Checks on what callers pass in: token ids, attention masks, position ids, lengths.

Every check raises `InputError` naming the problem and the fix, so a bad batch fails here
and not as a NumPy traceback (or, worse, a silently wrong answer) deep inside the model.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError


def _as_int_array(values: ArrayLike | None, name: str) -> np.ndarray:
    if values is None:
        raise InputError(f"{name} is None; pass token ids, e.g. tokenizer(text)['input_ids']")
    try:
        array = np.asarray(values)
    except ValueError:  # NumPy refuses ragged nested lists
        raise InputError(
            f"{name} is ragged (rows of different lengths) and cannot be one array; pad the batch, e.g. "
            "tokenizer(texts, padding=True) with tokenizer.padding_side = 'left'"
        ) from None
    if array.size == 0 and array.dtype.kind == "f":
        # np.asarray([]) is float64: an empty list holds no wrong values, only none at all, and
        # "must hold integers" would hide the real problem (the caller's check says "empty").
        return array.astype(np.int64)
    if array.dtype == object:
        raise InputError(f"{name} is ragged or holds non-numbers; pass a rectangular array of integers")
    if array.dtype.kind == "b" or array.dtype.kind not in "iu":
        raise InputError(
            f"{name} must hold integers, got dtype {array.dtype}; token ids are indices into the vocabulary "
            "(use tokenizer(...)['input_ids'] or np.asarray(ids, dtype=np.int64))"
        )
    return array.astype(np.int64, copy=False)


def check_input_ids(input_ids: ArrayLike | None, vocab_size: int) -> tuple[np.ndarray, bool]:
    """-> ([B, T] int64 ids, whether the caller gave one 1-D sequence)."""
    ids = _as_int_array(input_ids, "input_ids")
    one_sequence = ids.ndim == 1
    if one_sequence:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise InputError(
            f"input_ids must be 2-D [batch, sequence] (or 1-D for one sequence), got shape {list(ids.shape)}"
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(
            f"input_ids is empty (shape {list(ids.shape)}); give at least one token, e.g. the prompt's ids"
        )
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"input_ids[{row}, {col}] = {ids[row, col]} is not a token id: ids must lie in 0 .. {vocab_size - 1} "
            f"(vocab_size {vocab_size})"
        )
    return ids, one_sequence


def check_attention_mask(attention_mask: ArrayLike | None, shape: tuple[int, int]) -> np.ndarray:
    """-> [B, T] int64 mask of 0/1 with at least one 1 per row."""
    if attention_mask is None:
        return np.ones(shape, dtype=np.int64)
    try:
        mask = np.asarray(attention_mask)
    except ValueError:
        raise InputError(
            "attention_mask is ragged; it must have the same [batch, sequence] shape as input_ids"
        ) from None
    if mask.dtype == object or mask.dtype.kind not in "biuf":
        raise InputError(f"attention_mask must hold 0s and 1s, got dtype {mask.dtype}")
    if mask.ndim == 1 and shape[0] == 1:
        mask = mask[None, :]
    if mask.shape != shape:
        raise InputError(
            f"attention_mask has shape {list(mask.shape)} but input_ids has {list(shape)}; they must match "
            "(both come from the same tokenizer call)"
        )
    if not np.isin(mask, (0, 1)).all():
        values = np.unique(mask[~np.isin(mask, (0, 1))])[:5]
        raise InputError(f"attention_mask must hold only 0 (pad) and 1 (real token), found {values.tolist()}")
    mask = mask.astype(np.int64)
    empty = np.flatnonzero(mask.sum(axis=1) == 0)
    if empty.size:
        raise InputError(
            f"attention_mask row {int(empty[0])} has no 1: that sequence is all padding, so there is nothing to "
            "run; remove it from the batch"
        )
    return mask


def check_position_ids(position_ids: ArrayLike, shape: tuple[int, int], n_positions: int) -> np.ndarray:
    """-> [B, T] int64 positions in 0 .. n_positions-1 ([T] is broadcast over the batch)."""
    pos = _as_int_array(position_ids, "position_ids")
    if pos.ndim == 1:
        pos = pos[None, :]
    if pos.ndim != 2 or pos.shape[1] != shape[1] or pos.shape[0] not in (1, shape[0]):
        raise InputError(
            f"position_ids has shape {list(pos.shape)}; it must be [batch, sequence] = {list(shape)} or [sequence]"
        )
    if (pos < 0).any() or (pos >= n_positions).any():
        raise InputError(
            f"position_ids must lie in 0 .. {n_positions - 1} (the model's n_positions), got {int(pos.min())} .. {int(pos.max())}"
        )
    return np.broadcast_to(pos, shape)


def check_length(total: int, n_positions: int, what: str) -> None:
    if total > n_positions:
        raise InputError(
            f"{what} is {total} tokens, more than this model's n_positions = {n_positions} (its position "
            f"embedding has {n_positions} rows); shorten the prompt or ask for fewer tokens"
        )


def check_unicode(text: str, what: str) -> None:
    """Refuse a string that is not Unicode text: one holding a lone surrogate.

    A Python str can hold half of a UTF-16 surrogate pair, a code point in U+D800..U+DFFF
    that is not a character: JSON's "\\ud83d" (an emoji cut in half) decodes to one, and so
    does a byte that is not UTF-8 read with errors="surrogateescape". GPT-2's byte-level BPE
    works on UTF-8 bytes, and such a string has none (the `tokenizers` library answers with a
    bare TypeError). Checking costs one UTF-8 encoding, about 0.1% of tokenizing the text.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{what} holds a lone surrogate ({text[e.start]!r} at character {e.start}): half of a UTF-16 pair, not a "
            "character, so it has no UTF-8 bytes to tokenize (an emoji cut in half?); remove it, or replace it with "
            "text.encode('utf-8', 'replace').decode()"
        ) from None
