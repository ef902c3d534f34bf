"""`gpt2np score`: per-token log-probs, log-likelihood and perplexity of texts (see
gpt2np/scoring.py for what is scored and why)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import InputError
from ..scoring import Scores, score
from .common import add_model_args, load_model_and_tokenizer, read_prompts


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score",
        help="log-probability of every token, log-likelihood and perplexity of texts",
        description="Score texts (one left-padded batch): log p(token | tokens before it) for every token, "
        "each text's log-likelihood and perplexity, and the batch's mean loss.",
    )
    p.add_argument("texts", nargs="*", help="texts to score (default: one per line from stdin)")
    add_model_args(p)
    p.set_defaults(run=cmd_score)


def plural(n: int, word: str) -> str:
    """plural(1, "token") -> "1 token", plural(2, "token") -> "2 tokens"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_scores(scores: Scores, tokenizer) -> str:
    """One table per text: position, token, id, log-prob; then its totals.

    Printed to the digits that mean something: a float32 forward pass carries ~7 significant
    digits, and its last ones change with the BLAS and the thread count; log-probs to 3
    decimals and perplexities to 4 significant digits reproduce from machine to machine."""
    lines = []
    for b in range(scores.input_ids.shape[0]):
        real = np.flatnonzero(scores.attention_mask[b])  # this row's real columns
        text = tokenizer.decode(scores.input_ids[b, real])
        lines.append(f"text {b}: {text!r}")
        lines.append(f"  {'pos':>4}  {'token':<16} {'id':>6}  {'log p':>9}")
        pieces = tokenizer.convert_ids_to_tokens(scores.input_ids[b, real])
        for pos, (col, piece) in enumerate(zip(real, pieces)):
            lp = scores.token_logprobs[b, col]
            # Labelled by `scored`, not by NaN: a scored token's log-prob is never replaced by a label.
            shown = f"{lp:9.3f}" if scores.scored[b, col] else "(first token: no context)"
            lines.append(f"  {pos:>4}  {piece!r:<16} {int(scores.input_ids[b, col]):>6}  {shown}")
        if scores.n_scored[b] == 0:
            lines.append(
                "  nothing to score: a single token, and nothing comes before a text's first token to predict it"
            )
            continue
        lines.append(
            f"  log-likelihood {scores.total_logprob[b]:.3f} over {plural(int(scores.n_scored[b]), 'scored token')}, "
            f"perplexity {scores.perplexity[b]:.4g}"
        )
    lines.append(
        f"batch: mean loss {scores.loss:.4f} over {plural(int(scores.n_scored.sum()), 'scored token')} "
        f"(perplexity {np.exp(scores.loss):.4g})"
    )
    return "\n".join(lines)


def check_lengths(texts: list[str], tok, n_positions: int) -> None:
    """A text longer than the context cannot be scored in one pass: say so in score's terms."""
    for i, text in enumerate(texts):
        n = len(tok.encode(text))
        if n > n_positions:
            raise InputError(
                f"text {i} is {n} tokens, longer than the model's context of {n_positions} tokens (n_positions): it is "
                f"scored in one pass, so split it into pieces of at most {n_positions} tokens or shorten it"
            )


def cmd_score(args: argparse.Namespace) -> int:
    args.prompts = args.texts  # read_prompts reads args.prompts (or stdin)
    texts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    check_lengths(texts, tok, model.config.n_positions)
    scores = score(model, texts, tokenizer=tok)
    if scores.n_scored.sum() == 0:
        raise InputError(
            "nothing to score: every text is a single token, and a text's first token has no context to be predicted "
            "from; give texts of at least two tokens"
        )
    sys.stdout.write(format_scores(scores, tok) + "\n")
    return 0
