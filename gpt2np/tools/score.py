"""`gpt2np score`: per-token log-probs, log-likelihood and perplexity of texts (see
gpt2np/scoring.py for what is scored and why)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import InputError
from ..hub import resolve_model_files
from ..scoring import Scores, check_stride, score
from . import score_file
from .common import add_model_args, load_model_and_tokenizer, read_prompts
from .overwrite import add_overwrite_flag, check_out_file, model_files


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score",
        help="log-probability of every token, log-likelihood and perplexity of texts",
        description="Score texts (one left-padded batch): log p(token | tokens before it) for every token, "
        "each text's log-likelihood and perplexity, and the batch's mean loss.",
    )
    p.add_argument("texts", nargs="*", help="texts to score (default: one per line from stdin)")
    add_model_args(p)
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="score texts longer than the context in sliding windows of n_positions tokens moved by this many "
        "(each token scored once, with at least n_positions - stride tokens of context); e.g. 512 for gpt2",
    )
    f = p.add_argument_group("a corpus file (see gpt2np/tools/score_file.py)")
    f.add_argument(
        "--file",
        help="score a file into JSON lines: one text per line, or JSONL if it ends in .jsonl or "
        "--text-field is given; '-' reads stdin",
    )
    f.add_argument("--text-field", default=None, help="the JSONL field that holds the text (default: text)")
    f.add_argument(
        "--out",
        help="where to write the JSON lines (default: stdout); written as OUT.part and renamed to OUT when done, "
        "with the run's settings in OUT.meta.json (for --resume)",
    )
    f.add_argument("--batch-size", type=int, default=8, help="at most this many texts per forward pass (default: 8)")
    f.add_argument(
        "--max-tokens",
        type=int,
        default=4096,
        help="at most this many tokens, pads included, per forward pass (default: 4096)",
    )
    f.add_argument(
        "--token-logprobs", action="store_true", help="also write each token's log-prob (null for the first)"
    )
    f.add_argument(
        "--strict", action="store_true", help="stop at the first bad line instead of writing an error record"
    )
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (OUT.part) with the same settings: keep its records, score the rest",
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_overwrite_flag(f, "--out")
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
                f"scored in one pass; score it in sliding windows with --stride N (e.g. --stride {n_positions // 2}), "
                f"or shorten it"
            )


def cmd_score(args: argparse.Namespace) -> int:
    if args.file is not None:
        return cmd_score_file(args)
    file_only = [
        flag
        for flag, given in (
            ("--out", args.out),
            ("--overwrite", args.overwrite),
            ("--resume", args.resume),
            ("--strict", args.strict),
            ("--text-field", args.text_field),
            ("--token-logprobs", args.token_logprobs),
        )
        if given
    ]
    if file_only:
        raise InputError(f"{file_only[0]} goes with --file (scoring a corpus into JSON lines)")
    args.prompts = args.texts  # read_prompts reads args.prompts (or stdin)
    texts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    if args.stride is None:
        check_lengths(texts, tok, model.config.n_positions)
    scores = score(model, texts, tokenizer=tok, stride=args.stride)  # refuses texts of one token only
    sys.stdout.write(format_scores(scores, tok) + "\n")
    return 0


def cmd_score_file(args: argparse.Namespace) -> int:
    if args.texts:
        raise InputError("give texts as arguments or a --file, not both")
    jsonl = score_file.is_jsonl(args.file, args.text_field)
    opts = score_file.Options(
        text_field=(args.text_field if args.text_field is not None else "text") if jsonl else None,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        stride=args.stride,
        token_logprobs=args.token_logprobs,
        strict=args.strict,
    )
    # Every check that needs no model comes before the model is loaded, and every check before
    # any output is opened: a bad option never costs an existing --out a byte.
    score_file.check_options(opts)
    score_file.check_paths(args.file, args.out, args.resume)  # first: "--out is the input" says the most
    if args.out is not None:  # the overwrite rule (tools/overwrite.py); a symlink's target with --overwrite
        args.out = check_out_file(
            args.out,
            overwrite=args.overwrite,
            protected=model_files(args.model, args.tokenizer),
            is_ours=lambda out: args.resume or score_file.is_finished_output(out),  # --resume checks it its own way
            ours="the output of a `gpt2np score --file` run (its sidecar OUT.meta.json would say so)",
            also=(score_file.part_path, score_file.meta_path, score_file.lock_path),
        )
    with score_file.output_lock(args.out):  # a second run on the same --out refuses here
        model, tok = load_model_and_tokenizer(args)
        if opts.stride is not None:
            check_stride(opts.stride, model.config.n_positions)
        settings = None
        if args.out is not None:
            checkpoint = resolve_model_files(args.model, verify=False)[
                "model.safetensors"
            ]  # found already: no download
            settings = score_file.run_settings(model, tok, checkpoint, opts)
        done = score_file.run(
            model,
            tok,
            args.file,
            args.out,
            opts,
            resume_run=args.resume,
            show_progress=not args.no_progress,
            settings=settings,
        )
    resumed = f"lines 1-{done['resumed_after']} were already done; " if done["resumed_after"] else ""
    sys.stderr.write(
        f"{resumed}scored {done['lines']} lines ({done['errors']} errors, {done['tokens']} tokens scored)"
        f"{' into ' + args.out if args.out else ''}\n"
    )
    return 0
