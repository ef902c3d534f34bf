"""`gpt2np generate`: continue one prompt (streamed as it is generated) or several (one
left-padded batch, printed in order); beam search and the logits processors; each new token
with its log-probability (--logprobs)."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import InputError
from ..generation import SAMPLING_DEFAULTS as LIBRARY_SAMPLING_DEFAULTS
from ..generation import check_generation_args
from .common import add_model_args, load_model_and_tokenizer, read_prompts


def early_stopping(value: str):
    """--early-stopping: true, false or never (transformers' True, False, "never")."""
    choices = {"true": True, "false": False, "never": "never"}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"{value!r} is not true, false or never")
    return choices[value.lower()]


def add_parser(sub) -> None:
    g = sub.add_parser(
        "generate",
        help="continue one or more prompts",
        description=(
            "Continue prompts; several are one left-padded batch. One prompt with one sequence is printed as it is "
            "generated; with --num-beams > 1 (beam search), --num-return-sequences > 1 or --logprobs, the finished "
            "sequences are printed at the end."
        ),
    )
    g.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    add_model_args(g)
    length = g.add_mutually_exclusive_group()
    length.add_argument("--max-new-tokens", type=int, default=None, help="tokens to add to each prompt")
    length.add_argument(
        "--max-length", type=int, default=None, help="total length, prompt and pads included (default 20)"
    )
    g.add_argument("--min-new-tokens", type=int, default=None, help="no end of text before this many new tokens")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    # None = not given: they only apply with --do-sample, and a user who gives one without it is told.
    g.add_argument("--temperature", type=float, default=None, help="with --do-sample (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="with --do-sample (default 50, as transformers; 0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="with --do-sample (default 1.0 = off)")
    g.add_argument(
        "--min-p", type=float, default=None, help="with --do-sample: keep tokens at least this x the best's probability"
    )
    g.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    beams = g.add_argument_group("beam search")
    beams.add_argument(
        "--num-beams", type=int, default=1, help="beam search with this many beams (default 1: no beam search)"
    )
    beams.add_argument(
        "--num-return-sequences",
        type=int,
        default=1,
        help="sequences per prompt: the best beams, best first (at most --num-beams), or draws with --do-sample",
    )
    # None = not given: they only apply with --num-beams > 1 (warned about otherwise).
    beams.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="score / new tokens ** this (default 1.0; > 0 favours longer)",
    )
    beams.add_argument(
        "--early-stopping",
        type=early_stopping,
        default=None,
        metavar="{true,false,never}",
        help="stop a prompt's search once it has --num-beams finished sequences (true), when no beam can do better "
        "(false, the default), or never before the length limit (never)",
    )
    rules = g.add_argument_group("rules applied to the scores (any decoding)")
    rules.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeated tokens (CTRL)")
    rules.add_argument("--no-repeat-ngram-size", type=int, default=0, help="no n-gram of this size twice (0: off)")
    rules.add_argument(
        "--bad-words",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="texts never to generate, tokenized as written (' dog' with its space is the word inside a sentence)",
    )
    rules.add_argument(
        "--stop", nargs="+", default=None, metavar="TEXT", help="end a sequence when its text ends with one of these"
    )
    g.add_argument(
        "--logprobs",
        action="store_true",
        help="print each new token with its log-probability (sampling: under the distribution it was drawn from; "
        "beam search: the beam it extended, and each sequence's score)",
    )
    g.add_argument(
        "--no-cache", action="store_true", help="recompute the whole sequence each step (slower; same tokens)"
    )
    g.set_defaults(run=cmd_generate)


class TextStreamer:
    """Prints a single sequence's new text as tokens arrive. A character can span several
    byte-level tokens, so we print only once the decoded text no longer ends in a partial
    character (U+FFFD)."""

    ids: list[int]  # the tokens so far

    def __init__(self, tok, out=None, prompt: str = ""):
        self.tok, self.out, self.ids, self.printed = tok, out or sys.stdout, [], 0
        # The prompt is echoed with the first token, not before generate(): generate checks
        # its arguments first, and a refused call must print nothing on stdout.
        self.prompt = prompt

    def _echo_prompt(self):
        if self.prompt:
            self.out.write(self.prompt)
            self.prompt = ""

    def put(self, next_tokens):
        self._echo_prompt()
        self.ids.append(int(next_tokens[0]))
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            self.out.write(text[self.printed :])
            self.out.flush()
            self.printed = len(text)

    def end(self):
        self._echo_prompt()
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        self.out.write(text[self.printed :] + "\n")
        self.out.flush()


SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None}
BEAM_DEFAULTS = {"length_penalty": 1.0, "early_stopping": False}


def flags_given(args, defaults: dict) -> list[str]:
    """The flags of `defaults` given on the command line; then fill in the defaults of the others."""
    given = [f"--{name.replace('_', '-')}" for name in defaults if getattr(args, name) is not None]
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return given


def warn_unused(flags: list[str], needs: str, otherwise: str) -> None:
    print(
        f"gpt2np generate: warning: {', '.join(flags)} only appl{'ies' if len(flags) == 1 else 'y'} "
        f"with {needs}; without it, {otherwise}",
        file=sys.stderr,
    )


def bad_words_ids(tok, texts):
    if texts is None:
        return None
    empty = [t for t in texts if not tok.encode(t)]
    if empty:
        raise InputError(f"--bad-words {empty[0]!r} has no tokens; give some text")
    return [tok.encode(t) for t in texts]


def cmd_generate(args) -> int:
    sampling_flags = flags_given(args, SAMPLING_DEFAULTS)
    beam_flags = flags_given(args, BEAM_DEFAULTS)
    prompts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(prompts, padding=True)
    if (batch["attention_mask"].sum(axis=1) == 0).any():
        raise InputError("a prompt is empty (it has no tokens); give some text")
    settings = dict(
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        min_new_tokens=args.min_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
        num_beams=args.num_beams,
        num_return_sequences=args.num_return_sequences,
        length_penalty=args.length_penalty,
        early_stopping=args.early_stopping,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        bad_words_ids=bad_words_ids(tok, args.bad_words),
        stop_strings=args.stop,
        tokenizer=tok if args.stop else None,
        use_cache=not args.no_cache,
        pad_token_id=tok.pad_token_id,
    )
    # A bad value is refused before we warn that a good one goes unused (one line either way: the
    # library's own warning about the same flags is this command's line below, in flag names).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_generation_args(
            batch["input_ids"].shape[1],
            **{k: v for k, v in settings.items() if k not in ("tokenizer", "use_cache", "pad_token_id")},
            dtype=model.dtype,
        )
    if sampling_flags and not args.do_sample:
        # Greedy decoding takes the most likely token: these would change nothing, silently.
        warn_unused(sampling_flags, "--do-sample", "decoding is greedy")
        settings |= {name: LIBRARY_SAMPLING_DEFAULTS[name] for name in LIBRARY_SAMPLING_DEFAULTS}  # unused: said once
    if beam_flags and args.num_beams == 1:
        warn_unused(beam_flags, "--num-beams > 1", "there is no beam search")
    if len(prompts) == 1 and args.num_beams == 1 and args.num_return_sequences == 1 and not args.logprobs:
        streamer = TextStreamer(tok, prompt=prompts[0])
        model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], streamer=streamer, **settings)
        return 0
    out = model.generate(
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        return_dict_in_generate=True,
        output_scores=args.logprobs,
        **settings,
    )
    beams = out.beam_indices is not None
    if args.logprobs:  # [rows, steps]; beam search's scores are log-probs already, the others logits
        logprobs = model.compute_transition_scores(
            out.sequences, out.scores, out.beam_indices, normalize_logits=not beams
        )
    for i, row in enumerate(out.sequences):
        if i:
            sys.stdout.write("---\n")
        sys.stdout.write(tok.decode(row, skip_special_tokens=True) + "\n")
        if args.logprobs:
            new = row[batch["input_ids"].shape[1] :]
            print_logprobs(tok, new, logprobs[i], out.beam_indices[i] if beams else None, out, i, args)
    return 0


def print_logprobs(tok, new, logprobs, beam_indices, out, row: int, args) -> None:
    """One sequence's new tokens, each with its log-probability (with beams, also the beam it
    extended at that step), up to its end; then their sum (with beams, the sequence's score)."""
    print(f"  {'new token':20s} {'id':>6s} {'log p':>9s}" + ("  from beam" if beam_indices is not None else ""))
    n = 0
    for step, (token, lp) in enumerate(zip(new.tolist(), logprobs.tolist())):
        if beam_indices is not None and beam_indices[step] < 0:
            break  # the sequence had ended
        beam = "" if beam_indices is None else f"  {beam_indices[step] % args.num_beams:9d}"
        print(f"  {tok.convert_ids_to_tokens([token])[0]!r:20s} {token:6d} {lp:9.3f}{beam}")
        n += 1
        if token == tok.eos_token_id:
            break  # the end of the text: what follows is padding
    total = float(logprobs[:n].sum())
    if beam_indices is None:
        print(f"  sum {total:.3f} over {n} new tokens")
    else:
        score = float(out.sequences_scores[row])
        print(f"  sum {total:.3f} over {n} new tokens; score {total:.3f} / {n} ** {args.length_penalty} = {score:.3f}")
