"""Labels for the loss, as transformers takes them: `labels=` beside input_ids, shifted inside.

transformers' convention (GPT2LMHeadModel(input_ids, labels=labels).loss): labels[b, t] is the
token the model should predict *at position t - 1*; the shift happens inside, so the usual
call is labels = input_ids. A label of -100 is ignored. The loss is the mean of
-log p(label) over the labels counted.

    labels_from_mask([[p, p, 11, 12, 13]], [[0, 0, 1, 1, 1]]) -> [[-100, -100, -100, 12, 13]]

gpt2np counts a label only where the position that predicts it (t - 1) is a real token. In a
left-padded batch that leaves out each row's first real token: transformers would predict it
from the output of the pad before it, which gpt2np's empty-row rule defines differently (a pad
attends to nothing; see plain.attention), and which has no real context anyway. So gpt2np
ignores such a label (`counted` below), as `score` does, and `labels_from_mask` writes -100
there. With labels made by it, gpt2np's loss and every gradient equal transformers', and the
loss equals model.score(ids, attention_mask=mask).loss, which scores the same tokens
(tests/test_backward.py::test_the_loss_four_ways).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError
from .inputs import _as_int_array

IGNORE_INDEX = -100  # torch's CrossEntropyLoss(ignore_index=-100), transformers' default


def labels_from_mask(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """[B, T] ids and mask -> [B, T] labels: each token that is real and follows a real token is
    its own label (next-token prediction); pads, and each row's first real token (nothing real
    predicts it: see the module docstring), get -100."""
    previous_real = np.zeros(attention_mask.shape, dtype=bool)  # [B, T]
    previous_real[:, 1:] = attention_mask[:, :-1] == 1  # column 0 has nothing before it
    return np.where((attention_mask == 1) & previous_real, input_ids, IGNORE_INDEX).astype(np.int64)  # [B, T]


def check_labels(labels: ArrayLike, shape: tuple[int, int], vocab_size: int) -> np.ndarray:
    """-> [B, T] int64 labels: token ids, or -100 for "not counted" ([T] for one sequence)."""
    array = _as_int_array(labels, "labels")
    if array.ndim == 1 and shape[0] == 1:
        array = array[None, :]
    if array.shape != shape:
        raise InputError(
            f"labels has shape {list(array.shape)} but input_ids has {list(shape)}; they must match: labels[b, t] "
            "is the token expected at t (transformers shifts them inside), e.g. labels=input_ids"
        )
    bad = (array != IGNORE_INDEX) & ((array < 0) | (array >= vocab_size))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"labels[{row}, {col}] = {array[row, col]} is neither a token id (0 .. {vocab_size - 1}) nor "
            f"{IGNORE_INDEX} (ignored); put {IGNORE_INDEX} where no loss should be counted"
        )
    return array


def counted(labels: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shift, done once for everyone: -> (targets [B, T-1], counted [B, T-1] bool).

    Position t (0 .. T-2) predicts labels[:, t + 1]. It counts when that label is not -100 and
    position t is a real token (a label predicted from a pad is ignored: the module docstring).
    Refuses a batch with nothing to count: the mean over no labels is 0/0 (transformers: NaN)."""
    targets = labels[:, 1:]  # [B, T-1] label t + 1 is predicted at position t
    keep = (targets != IGNORE_INDEX) & (attention_mask[:, :-1] == 1)  # [B, T-1]
    if not keep.any():
        raise InputError(
            "no label is counted: every label is -100, or predicted from a pad, or the rows are one token long "
            "(the first token has nothing before it to predict it); give at least two real tokens in a row"
        )
    return np.where(keep, targets, 0), keep


def labels_or_default(
    labels: ArrayLike | None, input_ids: np.ndarray, attention_mask: np.ndarray, vocab_size: int
) -> np.ndarray:
    """The labels given (checked), or labels_from_mask's next-token labels when None."""
    if labels is None:
        return labels_from_mask(input_ids, attention_mask)
    return check_labels(labels, input_ids.shape, vocab_size)
