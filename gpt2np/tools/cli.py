"""The `gpt2np` command (also `python -m gpt2np`).

    gpt2np generate "It will rain in the" --max-length 10
    gpt2np generate "It will rain in the" "My dog is" --max-new-tokens 20   # one left-padded batch
    echo "My dog is" | gpt2np generate --max-new-tokens 20                   # prompts from stdin
    gpt2np download gpt2                                                     # into weights/gpt2/

Errors print one line on stderr and exit non-zero; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import GPT2npError, InputError

EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _fill(value: str):
    """--mask-fill: one of the names, or a number."""
    if value in ("-inf", "-1e9", "min"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not -inf, -1e9, min or a number") from None


def _add_debug(p: argparse.ArgumentParser) -> None:
    """--debug after the subcommand too. SUPPRESS: an absent flag here must not overwrite a
    `gpt2np --debug generate ...` given before it (argparse lets subparser defaults win)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    _add_debug(p)
    p.add_argument("--model", default="gpt2", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, a hub repo id or a folder (default: gpt2)")
    p.add_argument("--tokenizer", default=None, help="where the tokenizer files are (default: the model's)")
    p.add_argument("--mask-fill", type=_fill, default="min", help="-inf, -1e9, min (transformers' choice, the default) or a negative number")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check of known checkpoint files")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpt2np", description="GPT-2 from scratch in NumPy.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="continue one or more prompts", description="Continue prompts; several are one left-padded batch.")
    g.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    _add_model_args(g)
    length = g.add_mutually_exclusive_group()
    length.add_argument("--max-new-tokens", type=int, default=None, help="tokens to add to each prompt")
    length.add_argument("--max-length", type=int, default=None, help="total length, prompt and pads included (default 20)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=50, help="with --do-sample (default 50, as transformers; 0 = off)")
    g.add_argument("--top-p", type=float, default=1.0, help="with --do-sample (default 1.0 = off)")
    g.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (slower; same tokens)")
    g.set_defaults(run=cmd_generate)

    d = sub.add_parser("download", help="put a model into weights/NAME/ for offline use")
    d.add_argument("name", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 or a hub repo id")
    d.add_argument("--dest", default=None, help="folder to write (default: weights/NAME)")
    d.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check")
    _add_debug(d)
    d.set_defaults(run=cmd_download)

    _add_teaching_commands(sub)
    return parser


def _add_teaching_commands(sub) -> None:
    """explain / crosscheck / plot / score live in their own modules; each adds its parser."""
    from importlib import import_module

    for module in ("explain", "crosscheck", "plot", "scoring"):
        try:
            mod = import_module(f"gpt2np.{module}" if module == "scoring" else f"gpt2np.tools.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"gpt2np.{module}":
                raise
            continue
        mod.add_parser(sub, _add_model_args)


def load_model_and_tokenizer(args):
    from ..model import GPT2
    from ..tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
    model = GPT2.from_pretrained(args.model, dtype=args.dtype, mask_fill=args.mask_fill, verify=not args.no_verify)
    if model.config.vocab_size < tok.vocab_size:
        raise InputError(
            f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}; "
            "pass the model's own tokenizer with --tokenizer"
        )
    return model, tok


def read_prompts(args) -> list[str]:
    prompts = list(args.prompts)
    if not prompts and not sys.stdin.isatty():
        prompts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise InputError("no prompt: give one or more as arguments, or one per line on stdin")
    return prompts


class TextStreamer:
    """Prints a single sequence's new text as tokens arrive. A character can span several
    byte-level tokens, so we print only once the decoded text no longer ends in a partial
    character (U+FFFD)."""

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


def cmd_generate(args) -> int:
    prompts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(prompts, padding=True)
    if (batch["attention_mask"].sum(axis=1) == 0).any():
        raise InputError("a prompt is empty (it has no tokens); give some text")
    settings = dict(
        max_new_tokens=args.max_new_tokens, max_length=args.max_length, do_sample=args.do_sample,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        use_cache=not args.no_cache, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
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


def cmd_download(args) -> int:
    from ..hub import download

    dest = download(args.name, dest=args.dest, verify=not args.no_verify)
    print(f"{args.name} is in {dest}")
    return 0


def _print_error(message: str) -> None:
    """One line, always: a library's multi-line message is folded onto it."""
    print("gpt2np: error: " + " ".join(message.split()), file=sys.stderr)


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--mask-fill -inf` -> `--mask-fill=-inf`. argparse takes "-inf" and "-1e9" for flags
    (only plain negative numbers like -5 or -0.5 look like values to it) and would reject the
    very values --help lists."""
    out = []
    for arg in argv:
        if out and out[-1] == "--mask-fill" and arg.startswith("-"):
            out[-1] = f"--mask-fill={arg}"
        else:
            out.append(arg)
    return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.run(args)
    except GPT2npError as e:
        if args.debug:
            raise
        _print_error(str(e))
        return EXIT_ERROR
    except BrokenPipeError:  # `gpt2np generate ... | head`
        return 0
    except OSError as e:  # unreadable files, a full disk: still one line
        if args.debug:
            raise
        _print_error(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gpt2np: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  a bug, or an error from a library below us: still one line
        if args.debug:
            raise
        _print_error(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
