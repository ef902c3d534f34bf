"""Logits processors: rules that change the next token's scores before a token is chosen.

Each takes the scores [N, V] of N sequences (rows, or beams) and those sequences so far
[N, t] (prompt and pads included, as transformers hands them over) and returns new scores.
A forbidden token gets -inf: softmax then gives it probability exactly 0, argmax never picks
it, and beam search never extends a beam with it.

transformers builds its list in a fixed order (generation/utils.py, `_get_logits_processor`),
and `Processors.__call__` applies them in that order:

    1. repetition_penalty      CTRL's penalty on every token already in the sequence
    2. no_repeat_ngram_size    no n-gram twice
    3. bad_words_ids           words that must never be generated
    4. min_length / min_new_tokens   no eos before the sequence is long enough

When sampling, the warpers of sampling.py come after them (temperature, top-k, top-p, min-p);
they are transformers' "processors previously known as warpers". Greedy decoding applies the
processors to the logits; beam search to the log-probabilities (it takes log_softmax first),
so the repetition penalty, which scales scores, acts on log-probs there, as in transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


def repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float, first_real: np.ndarray) -> np.ndarray:
    """CTRL's repetition penalty (Keskar et al. 2019, "CTRL: A Conditional Transformer Language
    Model for Controllable Generation", arXiv:1909.05858, section 4.1), as transformers'
    RepetitionPenaltyLogitsProcessor: every token that occurs in the sequence has its score
    divided by `penalty` if positive, multiplied by it if negative, so penalty > 1 always makes
    it less likely and penalty < 1 more likely. Once per token, however often it occurs.

    scores [N, V], sequences [N, t]; first_real [N]: each row's first real column. The pads
    before it are not the text's tokens and are not penalised (transformers passes its
    `prompt_ignore_length` from the attention mask for this).
    """
    N, V = scores.shape
    columns = np.arange(sequences.shape[1])  # [t]
    ids = np.where(columns[None, :] < first_real[:, None], V, sequences)  # [N, t] pads -> V, a spare column
    seen = np.zeros((N, V + 1), dtype=bool)  # [N, V + 1]
    seen[np.arange(N)[:, None], ids] = True
    p = scores.dtype.type(penalty)  # a normal number of the dtype (generate checks it)
    with np.errstate(over="ignore"):  # (np.where computes both sides everywhere; the overflow is judged below)
        penalised = np.where(scores < 0, scores * p, scores / p)  # [N, V] the sign rule: always away from likely
    penalised = np.where(seen[:, :V], penalised, scores)
    overflowed = np.isfinite(scores) & ~np.isfinite(penalised)  # [N, V]
    if overflowed.any():  # a strong penalty on a large score: sampling from inf would give NaN, token 0
        row, token = np.argwhere(overflowed)[0]
        raise InputError(
            f"repetition_penalty={penalty!r} takes the score {float(scores[row, token]):.4g} of token {token} (already in "
            f"sequence {row}) beyond {scores.dtype.name}'s range: use a penalty closer to 1 (1.2 is usual)"
        )
    return penalised


def no_repeat_ngram(scores: np.ndarray, sequences: np.ndarray, n: int) -> np.ndarray:
    """No n-gram may occur twice (Paulus et al. 2017, "A Deep Reinforced Model for Abstractive
    Summarization", arXiv:1705.04304; transformers' NoRepeatNGramLogitsProcessor, after
    fairseq): if the last n - 1 tokens already occurred followed by token x, x is banned now.
    n = 1 bans every token already in the sequence.

    As in transformers, the whole row counts, prompt and pads included: with n = 1 in a
    left-padded batch the pad id (usually eos) is banned in the padded rows only.
    scores [N, V], sequences [N, t].
    """
    t = sequences.shape[1]
    if t < n:
        return scores  # no complete n-gram yet
    suffix = sequences[:, t - n + 1 :]  # [N, n - 1] what the next token would complete
    windows = np.lib.stride_tricks.sliding_window_view(sequences, n, axis=1)  # [N, t - n + 1, n] every n-gram
    matches = (windows[:, :, :-1] == suffix[:, None, :]).all(axis=-1)  # [N, t - n + 1] starts like the suffix
    rows, starts = np.nonzero(matches)
    banned = scores.copy()
    banned[rows, windows[rows, starts, -1]] = -np.inf  # the token that followed would repeat the n-gram
    return banned


def ban_bad_words(scores: np.ndarray, sequences: np.ndarray, bad_words_ids: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Words that must never be generated (transformers' NoBadWordsLogitsProcessor): a word of
    one token is always banned; a word of several tokens has its last token banned when the
    sequence ends with the word's other tokens (the word can only be avoided at its last token).
    scores [N, V], sequences [N, t]."""
    t = sequences.shape[1]
    banned = scores.copy()
    for word in bad_words_ids:
        prefix, last = np.asarray(word[:-1], dtype=sequences.dtype), word[-1]
        if len(prefix) > t:
            continue  # the sequence is too short to end with it
        rows = (sequences[:, t - len(prefix) :] == prefix).all(axis=-1)  # [N] (all True for one token)
        banned[rows, last] = -np.inf
    return banned


def ban_eos(scores: np.ndarray, eos_token_id: int) -> np.ndarray:
    """min_length / min_new_tokens (transformers' MinLengthLogitsProcessor and
    MinNewTokensLengthLogitsProcessor): while the sequence is too short, eos may not come."""
    banned = scores.copy()
    banned[:, eos_token_id] = -np.inf
    return banned


@dataclass(frozen=True)
class Processors:
    """The processors generate() asked for, applied in transformers' order. `active` is False
    when none is, and then the decoding loops skip them altogether."""

    repetition_penalty: float = 1.0  # 1: off
    first_real: np.ndarray | None = None  # [N] each row's first real column (repetition_penalty skips the pads)
    no_repeat_ngram_size: int = 0  # 0: off
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    eos_token_id: int | None = None
    min_length: int = 0  # eos is banned while a sequence (prompt and pads included) is shorter than this

    @property
    def active(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.no_repeat_ngram_size > 0
            or bool(self.bad_words_ids)
            or (self.eos_token_id is not None and self.min_length > 0)
        )

    def __call__(self, scores: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """scores [N, V] for the token after sequences [N, t] -> processed scores [N, V]."""
        if self.repetition_penalty != 1.0:
            assert self.first_real is not None  # generate() always sets it with a penalty
            scores = repetition_penalty(scores, sequences, self.repetition_penalty, self.first_real)
        if self.no_repeat_ngram_size > 0:
            scores = no_repeat_ngram(scores, sequences, self.no_repeat_ngram_size)
        if self.bad_words_ids:
            scores = ban_bad_words(scores, sequences, self.bad_words_ids)
        if self.eos_token_id is not None and sequences.shape[1] < self.min_length:
            scores = ban_eos(scores, self.eos_token_id)
        return scores
