"""`gpt2np generate`: continue one prompt (streamed as it is generated) or several (one
left-padded batch, printed in order)."""

from __future__ import annotations

import sys

from ..errors import InputError
from ..generation import check_generation_args
from .common import add_model_args, load_model_and_tokenizer, read_prompts


def add_parser(sub) -> None:
    g = sub.add_parser(
        "generate",
        help="continue one or more prompts",
        description="Continue prompts; several are one left-padded batch.",
    )
    g.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    add_model_args(g)
    length = g.add_mutually_exclusive_group()
    length.add_argument("--max-new-tokens", type=int, default=None, help="tokens to add to each prompt")
    length.add_argument(
        "--max-length", type=int, default=None, help="total length, prompt and pads included (default 20)"
    )
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    # None = not given: they only apply with --do-sample, and a user who gives one without it is told.
    g.add_argument("--temperature", type=float, default=None, help="with --do-sample (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="with --do-sample (default 50, as transformers; 0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="with --do-sample (default 1.0 = off)")
    g.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
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


SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}


def sampling_flags_given(args) -> list[str]:
    """The sampling flags given on the command line; then fill in the defaults of the others."""
    given = [f"--{name.replace('_', '-')}" for name in SAMPLING_DEFAULTS if getattr(args, name) is not None]
    for name, default in SAMPLING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return given


def cmd_generate(args) -> int:
    sampling_flags = sampling_flags_given(args)
    prompts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(prompts, padding=True)
    if (batch["attention_mask"].sum(axis=1) == 0).any():
        raise InputError("a prompt is empty (it has no tokens); give some text")
    settings = dict(
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        use_cache=not args.no_cache,
        pad_token_id=tok.pad_token_id,
    )
    # A bad value is refused before we warn that a good one goes unused (one line either way).
    check_generation_args(
        batch["input_ids"].shape[1],
        args.max_length,
        args.max_new_tokens,
        args.do_sample,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
    )
    if sampling_flags and not args.do_sample:
        # Greedy decoding takes the most likely token: these would change nothing, silently.
        print(
            f"gpt2np generate: warning: {', '.join(sampling_flags)} only appl{'ies' if len(sampling_flags) == 1 else 'y'} "
            "with --do-sample; without it, decoding is greedy",
            file=sys.stderr,
        )
    if len(prompts) == 1:
        streamer = TextStreamer(tok, prompt=prompts[0])
        model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], streamer=streamer, **settings)
        return 0
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
    for i, row in enumerate(out):
        if i:
            sys.stdout.write("---\n")
        sys.stdout.write(tok.decode(row, skip_special_tokens=True) + "\n")
    return 0
