"""`gpt2np score`: per-token log-probs, log-likelihood and perplexity of texts (see
gpt2np/scoring.py for what is scored and why)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..scoring import Scores, score
from .common import add_model_args, load_model_and_tokenizer, read_prompts


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score", help="log-probability of every token, log-likelihood and perplexity of texts",
        description="Score texts (one left-padded batch): log p(token | tokens before it) for every token, "
        "each text's log-likelihood and perplexity, and the batch's mean loss.",
    )  # fmt: skip
    p.add_argument("texts", nargs="*", help="texts to score (default: one per line from stdin)")
    add_model_args(p)
    p.set_defaults(run=cmd_score)


def format_scores(scores: Scores, tokenizer) -> str:
    """One table per text: position, token, id, log-prob; then its totals."""
    lines = []
    for b in range(scores.input_ids.shape[0]):
        real = np.flatnonzero(scores.attention_mask[b])  # this row's real columns
        text = tokenizer.decode(scores.input_ids[b, real])
        lines.append(f"text {b}: {text!r}")
        lines.append(f"  {'pos':>4}  {'token':<16} {'id':>6}  {'log p':>9}")
        pieces = tokenizer.convert_ids_to_tokens(scores.input_ids[b, real])
        for pos, (col, piece) in enumerate(zip(real, pieces)):
            lp = scores.token_logprobs[b, col]
            shown = "(first token: no context)" if np.isnan(lp) else f"{lp:9.4f}"
            lines.append(f"  {pos:>4}  {piece!r:<16} {int(scores.input_ids[b, col]):>6}  {shown}")
        lines.append(
            f"  log-likelihood {scores.total_logprob[b]:.4f} over {int(scores.n_scored[b])} scored tokens, "
            f"perplexity {scores.perplexity[b]:.2f}"
        )
    lines.append(f"batch: mean loss {scores.loss:.6f} over {int(scores.n_scored.sum())} scored tokens "
                 f"(perplexity {np.exp(scores.loss):.2f})")  # fmt: skip
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    args.prompts = args.texts  # read_prompts reads args.prompts (or stdin)
    texts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    scores = score(model, texts, tokenizer=tok)
    sys.stdout.write(format_scores(scores, tok) + "\n")
    return 0
