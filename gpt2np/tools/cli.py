"""The `gpt2np` command (also `python -m gpt2np`): builds the parser from the subcommands'
modules and runs the one asked for. Each subcommand lives in its own module of this package.

    gpt2np generate "It will rain in the" --max-length 10
    gpt2np generate "It will rain in the" "My dog is" --max-new-tokens 20   # one left-padded batch
    echo "My dog is" | gpt2np generate --max-new-tokens 20                   # prompts from stdin
    gpt2np download gpt2                                                     # into weights/gpt2/

Errors print one line on stderr and exit 1; bad command-line usage exits 2; --debug shows
the traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .. import __version__
from ..errors import GPT2npError, InputError, ModelNotFoundError
from . import compare, crosscheck, download, explain, generate, llmc, page, plot, random_model, score, trace, train
from .common import in_flag_names, with_random_model_hint

SUBCOMMANDS = (
    generate,
    train,
    download,
    explain,
    crosscheck,
    page,
    plot,
    score,
    trace,
    compare,
    random_model,
    llmc,
)  # --help's order
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpt2np", description="GPT-2 from scratch in NumPy.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"gpt2np {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def _print_error(message: str) -> None:
    """One line, always: a library's multi-line message is folded onto it."""
    print("gpt2np: error: " + " ".join(message.split()), file=sys.stderr)


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--mask-fill -inf` -> `--mask-fill=-inf`. argparse takes "-inf" and "-1e9" for flags
    (only plain negative numbers like -5 or -0.5 look like values to it) and would reject the
    very values --help lists."""
    out: list[str] = []
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
        with warnings.catch_warnings():
            # NumPy's RuntimeWarnings (overflow, invalid value, divide by zero) never reach the terminal
            # as warnings: one would mean a number went inf or NaN where gpt2np did not expect it, and a
            # result printed after it could be wrong. It stops the command instead (below).
            warnings.simplefilter("error", RuntimeWarning)
            return args.run(args)
    except RuntimeWarning as e:
        if args.debug:
            raise
        _print_error(
            f"a computation went wrong ({e}): a number became inf or NaN, so no result is given rather than a wrong one; "
            "please report it with the command (--debug shows where)"
        )
        return EXIT_ERROR
    except GPT2npError as e:
        if args.debug:
            raise
        # A bad argument is named as the user gave it: --top-p, not top_p.
        message = in_flag_names(str(e)) if isinstance(e, InputError) else str(e)
        _print_error(with_random_model_hint(message) if isinstance(e, ModelNotFoundError) else message)
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
    except Exception as e:
        if args.debug:
            raise
        _print_error(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
