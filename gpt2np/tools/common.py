"""What the commands share: the model options every command takes, loading a model with its
tokenizer, and reading texts from the arguments or stdin."""

from __future__ import annotations

import argparse
import re
import sys

from ..errors import InputError
from ..model import GPT2
from ..tokenizer import Tokenizer

# The Python keywords in gpt2np's messages, and the flags a command-line user knows them by.
FLAG_NAMES = {
    r"\bmax_new_tokens\b": "--max-new-tokens",
    r"\bmax_length\b": "--max-length",
    r"\btop_k\b": "--top-k",
    r"\btop_p\b": "--top-p",
    r"\bmin_p\b": "--min-p",
    r"\bnum_beams\b": "--num-beams",
    r"\bnum_return_sequences\b": "--num-return-sequences",
    r"\blength_penalty\b": "--length-penalty",
    r"\bearly_stopping\b": "--early-stopping",
    r"\bno_repeat_ngram_size\b": "--no-repeat-ngram-size",
    r"\brepetition_penalty\b": "--repetition-penalty",
    r"\bmin_new_tokens\b": "--min-new-tokens",
    r"\bbad_words_ids\b": "--bad-words",
    r"\bstop_strings\b": "--stop",
    r"\bmask_fill\b": "--mask-fill",
    r"do_sample=False": "no --do-sample",
    r"do_sample=True": "--do-sample",
    r"\bdo_sample\b": "--do-sample",
    r"^temperature\b": "--temperature",
    r"^seed\b": "--seed",
    r"\bbatch_size\b": "--batch-size",
    r"\bmax_tokens\b": "--max-tokens",
    r"(?<!-)\bstride\b": "--stride",  # not the "stride" of a "--stride" already in the message
}


# Every command that cannot find a model says where a model can come from without a download.
RANDOM_MODEL_HINT = (
    "No weights on this machine? `gpt2np random-model DIR --n-layer 2 --n-head 4 --n-embd 64` writes a random "
    "GPT-2 of any shape to learn on or cross-check with, offline (README: a random GPT-2)."
)


def with_random_model_hint(message: str) -> str:
    """A model-not-found message, with RANDOM_MODEL_HINT (not for a missing tokenizer: a random
    model brings none)."""
    about_the_tokenizer = ("tokenizer files", "needs a tokenizer", "vocab.json", "tokenizer.json")
    if any(words in message for words in about_the_tokenizer) or "random-model" in message:
        return message
    return f"{message.rstrip().rstrip('.')}. {RANDOM_MODEL_HINT}"


def in_flag_names(message: str) -> str:
    """A library message about a bad argument, with its Python keywords replaced by flags."""
    for keyword, flag in FLAG_NAMES.items():
        message = re.sub(keyword, flag, message)
    return message


def mask_fill(value: str):
    """--mask-fill: one of the names, or a number."""
    if value in ("-inf", "-1e9", "min"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not -inf, -1e9, min or a number") from None


def add_debug(p: argparse.ArgumentParser) -> None:
    """--debug after the subcommand too. SUPPRESS: an absent flag here must not overwrite a
    `gpt2np --debug generate ...` given before it (argparse lets subparser defaults win)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def add_model_args(p: argparse.ArgumentParser, default_fill: str = "min") -> None:
    """--model, --tokenizer, --mask-fill, --dtype, --no-verify (and --debug)."""
    add_debug(p)
    p.add_argument(
        "--model",
        default="gpt2",
        help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, a hub repo id or a folder (default: gpt2)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="where the tokenizer files are (default: the model's; GPT-2's own, which "
        "ships with gpt2np, for gpt2 .. distilgpt2 and for a model folder with GPT-2's vocabulary and no tokenizer files)",
    )
    p.add_argument(
        "--mask-fill",
        type=mask_fill,
        default=default_fill,
        help=f"-inf, -1e9, min (transformers' choice) or a negative number (default: {default_fill})",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check of known checkpoint files")


def load_model(args: argparse.Namespace) -> GPT2:
    return GPT2.from_pretrained(args.model, dtype=args.dtype, mask_fill=args.mask_fill, verify=not args.no_verify)


def load_model_and_tokenizer(args: argparse.Namespace) -> tuple[GPT2, Tokenizer]:
    # The model first: what is wrong with the model folder (a pickle only, a broken config.json)
    # is then reported as such, not as a tokenizer file the folder lacks.
    model = load_model(args)
    tok = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
    if model.config.vocab_size < tok.vocab_size:
        raise InputError(
            f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}; "
            "pass the model's own tokenizer with --tokenizer"
        )
    return model, tok


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The texts given as arguments (args.prompts), or else one per non-empty line of stdin."""
    prompts = list(args.prompts)
    if not prompts and not sys.stdin.isatty():
        prompts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise InputError("no prompt: give one or more as arguments, or one per line on stdin")
    return prompts
