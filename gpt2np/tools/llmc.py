"""`gpt2np llmc export MODEL OUT_DIR` and `gpt2np llmc import MODEL_BIN OUT_DIR`: llm.c's files.

export writes, under train_gpt2.py's names (so llm.c's test_gpt2.c and train_gpt2.c run in that
folder): gpt2_124M.bin (the model, float32, whatever its size: the name is the one the C code
opens), gpt2_tokenizer.bin; with --debug-state, gpt2_124M_debug_state.bin: x, y, logits, loss and
every gradient of one batch, computed by gpt2np (GPT2.loss_and_grads' fast path) instead of
torch; with --tokens FILE, FILE's text as a token data file OUT_DIR/<FILE's name>.bin.
import reads an llm.c model file and writes a model folder (config.json + model.safetensors)
that gpt2np and transformers load. The formats: gpt2np/llmc.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..backward import gradients
from ..checkpoint import save_checkpoint
from ..errors import InputError
from ..llmc import (
    check_exportable,
    read_model,
    write_debug_state,
    write_model,
    write_tokenizer,
    write_tokens,
)
from ..stopping import token_bytes
from ..tokenizer import Tokenizer
from ..weights import named_parameters
from .common import add_debug, add_model_args, load_model
from .overwrite import add_overwrite_flag, check_out_file, check_out_folder, model_files

MODEL_FILE, STATE_FILE, TOKENIZER_FILE = "gpt2_124M.bin", "gpt2_124M_debug_state.bin", "gpt2_tokenizer.bin"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "llmc", help="llm.c's files: export a model (and a debug state) for llm.c, import its model file"
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    e = actions.add_parser(
        "export",
        help="write llm.c's model, tokenizer (and debug state, token) files into OUT_DIR",
        description=__doc__.split("\n\n")[1],
    )
    e.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write into (created)")
    add_model_args(e)
    e.add_argument("--debug-state", action="store_true", help=f"also write {STATE_FILE} for llm.c's test_gpt2.c")
    e.add_argument("--batch-size", type=int, default=4, help="B of the debug state (default 4, llm.c's)")
    e.add_argument("--seq-len", type=int, default=64, help="T of the debug state (default 64, llm.c's)")
    e.add_argument(
        "--text",
        help="a UTF-8 text file whose first B*T+1 tokens (after <|endoftext|>) make the debug state's batch "
        "(default: random tokens, seed 0)",
    )
    e.add_argument("--tokens", metavar="FILE", help="also write FILE's text as llm.c's token data file")
    add_overwrite_flag(e, "the export")
    e.set_defaults(run=cmd_export)
    i = actions.add_parser("import", help="an llm.c model file -> a model folder (config.json + model.safetensors)")
    i.add_argument("model_bin", metavar="MODEL_BIN", help="llm.c's model file (e.g. gpt2_124M.bin)")
    i.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (created)")
    add_overwrite_flag(i, "the import")
    add_debug(i)
    i.set_defaults(run=cmd_import)


def read_text_tokens(tok: Tokenizer, path: str) -> np.ndarray:
    """A text file's tokens, after <|endoftext|> as llm.c's data scripts start a document."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path} as UTF-8 text: {e}") from None
    return np.array([tok.eos_token_id, *tok.encode(text)], dtype=np.int64)


def debug_batch(args, model, tok: Tokenizer | None) -> tuple[np.ndarray, np.ndarray]:
    """x, y [B, T]: B*T+1 consecutive tokens, y the same shifted by one (train_gpt2.py's batch)."""
    B, T = args.batch_size, args.seq_len
    if B < 1 or not 1 <= T <= model.config.n_positions:
        raise InputError(f"--batch-size must be >= 1 and --seq-len 1 .. {model.config.n_positions}, got {B} and {T}")
    if args.text is not None:
        assert tok is not None
        tokens = read_text_tokens(tok, args.text)
        if len(tokens) < B * T + 1:
            raise InputError(
                f"{args.text} is {len(tokens)} tokens with <|endoftext|>; the debug state needs B*T+1 = {B * T + 1}: "
                "give a longer text or a smaller --batch-size / --seq-len"
            )
    else:
        tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, size=B * T + 1)
    return tokens[: B * T].reshape(B, T), tokens[1 : B * T + 1].reshape(B, T)


def only_llmc_files(folder: Path) -> bool:
    """Does the folder hold nothing but llm.c's .bin files (an earlier export, which may be replaced)?"""
    return all(p.is_file() and p.suffix == ".bin" for p in folder.iterdir())


def check_export_paths(args) -> None:
    """The overwrite rule (tools/overwrite.py), before the model is loaded: OUT_DIR new, empty or an
    earlier export; none of the files to write is one of the loaded model's (an llm.c model file
    exported back into its own folder) or a symlink."""
    out = check_out_folder(
        args.out_dir, overwrite=args.overwrite, is_ours=only_llmc_files, ours=", and not only llm.c's .bin files"
    )
    model_file = [Path(args.model)] if Path(args.model).is_file() else []  # an llm.c model file (model_files: folders)
    protected = model_files(args.model, args.tokenizer) + model_file
    names = [MODEL_FILE, TOKENIZER_FILE, STATE_FILE] + ([Path(args.tokens).stem + ".bin"] if args.tokens else [])
    for name in names:
        check_out_file(str(out / name), overwrite=args.overwrite, protected=protected, is_ours=lambda p: True)


def cmd_export(args) -> int:
    check_export_paths(args)
    model = load_model(args)
    check_exportable(model.config)  # before any file is written
    needs_tokenizer = args.text is not None or args.tokens is not None or model.config.vocab_size == 50257
    tok = Tokenizer.from_pretrained(args.tokenizer or "gpt2") if needs_tokenizer else None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_model(out / MODEL_FILE, model.weights, model.config)
    written = [MODEL_FILE]
    if tok is not None and model.config.vocab_size == tok.vocab_size:
        write_tokenizer(out / TOKENIZER_FILE, token_bytes(tok, tok.vocab_size), tok.eos_token_id)
        written.append(TOKENIZER_FILE)
    if args.debug_state:
        x, y = debug_batch(args, model, tok)
        B, T = x.shape
        ones = np.ones_like(x)
        loss, grads = gradients(model, x, ones, np.broadcast_to(np.arange(T), x.shape), y, ones.astype(bool))
        logits = model(x).logits  # [B, T, V]
        write_debug_state(out / STATE_FILE, x, y, logits, loss, grads, model.config)
        written.append(STATE_FILE)
    if args.tokens is not None:
        assert tok is not None
        name = Path(args.tokens).stem + ".bin"
        write_tokens(out / name, read_text_tokens(tok, args.tokens))
        written.append(name)
    print(f"wrote {', '.join(written)} in {out}")
    return 0


def cmd_import(args) -> int:
    out = check_out_folder(args.out_dir, overwrite=args.overwrite, is_ours=lambda path: False)  # empty or new only
    for name in ("model.safetensors", "config.json"):  # with --overwrite: still never onto the file being read
        check_out_file(str(out / name), overwrite=False, protected=[Path(args.model_bin)], is_ours=lambda p: True)
    config, weights = read_model(args.model_bin)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "model.safetensors", dict(named_parameters(weights)))
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}")
    return 0
