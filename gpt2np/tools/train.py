"""`gpt2np train`: fine-tune a GPT-2 (or train a random one) on a text file, safely.

    gpt2np train --model weights/tiny --data notes.txt --out runs/tiny --steps 200 --plot loss.png

One step (train_step below, read top to bottom in docs/training.md): the next batch of windows
(training_data.Batcher), the loss and every gradient (GPT2.loss_and_grads's fast backward), the
gradients clipped to one global norm (train.clip_grad_norm), one AdamW update at the schedule's
learning rate (train.AdamW, train.get_lr).

OUT is a model folder (config.json, model.safetensors, the tokenizer's files) that `gpt2np
generate --model OUT` and transformers' GPT2LMHeadModel.from_pretrained(OUT) load, with the
training state beside it: optimizer.safetensors (AdamW's m and v, as named arrays) and
train_state.json (the step, where the batcher stands, the dropout generator's state, the loss
history, and what the run was started from, to refuse a --resume that would not continue it).

Safe to stop at any moment:
- a checkpoint is written as NAME.tmp files (model, optimizer, then the state last, each synced to
  the disk), then renamed into place, the state last. A kill before the state's .tmp is whole leaves
  the last checkpoint as it was (the .tmp files are thrown away on --resume); a kill after it
  leaves a whole new checkpoint, whose renames --resume finishes. Never a half-written model.
- Ctrl-C or SIGTERM: the step under way finishes, a checkpoint is saved, the command exits
  (130 or 143).
- kill -9: `--resume` goes on from the last checkpoint; the weights at the end are byte for byte
  those of a run never stopped (the batches, the dropout masks and the optimizer all continue
  from saved state; tests/test_train_command.py kills a run at several points to check it).

GPT2NP_TRAIN_KILL_AT=POINT:STEP (for the tests) sends the process SIGKILL at one of KILL_POINTS
of step STEP, so a test can stop it at an exact moment (mid-write of a checkpoint included).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backward import gradients
from ..errors import GPT2npError, InputError
from ..model import GPT2
from ..tokenizer import Tokenizer
from ..train import AdamW, clip_grad_norm, get_lr
from ..training_data import Batcher, is_token_file, load_tokens, n_windows, split, validation_batches
from ..weights import named_parameters
from .common import add_model_args
from .overwrite import add_overwrite_flag, check_out_file, check_out_folder, model_files

STATE, OPTIMIZER, MODEL, CONFIG = "train_state.json", "optimizer.safetensors", "model.safetensors", "config.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")
OURS = {STATE, OPTIMIZER, MODEL, CONFIG, *TOKENIZER_FILES}  # what the command writes into OUT
TMP = ".tmp"
FORMAT = 1  # train_state.json's layout
VAL_BATCHES = 8  # the validation loss is the mean over at most this many batches of held-out windows
LOG_EVERY = 10.0  # seconds between the progress lines written to a file (on a terminal: one line, redrawn)
KILL_POINTS = ("step", "model-half", "before-rename", "mid-rename", "sigterm", "sigint")
# The settings that change the weights a run ends with: a --resume must give the same ones.
RESULT_SETTINGS = (
    "steps", "batch_size", "seq_len", "lr", "min_lr", "warmup", "weight_decay", "grad_clip", "grad_accum",
    "val_split", "seed", "dtype", "dropout", "decay", "jsonl_field",
)  # fmt: skip


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a GPT-2 (or train a random one) on a text file; checkpoints, --resume, a loss curve",
        description="Train --model on --data and write the result to --out, a model folder gpt2np and transformers "
        "load, with the optimizer's state beside it. Stop it at any time (Ctrl-C, or even kill -9) and --resume "
        "goes on to the same bytes. docs/training.md explains every step and setting.",
    )
    add_model_args(p)
    p.add_argument("--data", required=True, help="a UTF-8 text file (documents separated by blank lines), a JSONL "
                   "file (with --jsonl-field) or llm.c's token data file (.bin, magic 20240520)")  # fmt: skip
    p.add_argument(
        "--jsonl-field", default=None, metavar="NAME", help="--data is JSONL: each line's NAME is a document"
    )
    p.add_argument("--out", required=True, help="the model folder to write (new or empty; or --resume, --overwrite)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps in all (default 100)")
    p.add_argument("--batch-size", type=int, default=4, help="rows of --seq-len tokens a micro-batch (default 4)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens a row (default: the context, at most 256)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches whose gradients make one step (default 1)")
    p.add_argument("--lr", type=float, default=6e-4, help="the peak learning rate (default 6e-4, nanoGPT's)")
    p.add_argument("--min-lr", type=float, default=None, help="where the cosine decay ends (default --lr / 10)")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear warmup (default 0)")
    p.add_argument(
        "--weight-decay", type=float, default=0.1, help="AdamW's decoupled decay of the matrices (default 0.1)"
    )
    p.add_argument(
        "--grad-clip", type=float, default=1.0, help="clip the gradients' global norm to this; 0: never (default 1)"
    )
    p.add_argument(
        "--val-split", type=float, default=0.1, help="the data's last fraction held out (default 0.1; 0: none)"
    )
    p.add_argument("--val-every", type=int, default=None, help="steps between validation losses (default: steps / 10)")
    p.add_argument("--save-every", type=int, default=50, help="steps between checkpoints (default 50; and at the end)")
    p.add_argument("--seed", type=int, default=0, help="the seed of the batches' order and of dropout (default 0)")
    p.add_argument("--dropout", nargs="?", const="config", default=None, metavar="P",
                   help="train with dropout: the config's resid_pdrop, embd_pdrop and attn_pdrop, or P for all three "
                   "(default: none)")  # fmt: skip
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="keep only each block's input and recompute the rest in the backward: less memory, more "
                   "time, the same bytes (GPT2.gradient_checkpointing_enable; with --dropout it is always so)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out (the same settings)")
    p.add_argument("--plot", default=None, metavar="FILE", help="draw the loss curve into FILE (PNG) at the end")
    add_overwrite_flag(p, "--out")
    p.set_defaults(run=cmd_train)


# --- settings ----------------------------------------------------------------------------------


def check_numbers(args) -> None:
    """The numeric flags: each a clear InputError (exit 1) when out of range."""

    def finite(name: str, value: float, low: float = 0.0) -> None:
        if not math.isfinite(value) or value < low:
            raise InputError(f"--{name} must be a finite number >= {low:g}, got {value}")

    finite("lr", args.lr)
    if args.min_lr is not None:
        finite("min-lr", args.min_lr)
    finite("weight-decay", args.weight_decay)
    finite("grad-clip", args.grad_clip)
    if not 0 <= args.val_split < 1 or not math.isfinite(args.val_split):
        raise InputError(f"--val-split must lie in [0, 1), got {args.val_split}")
    for name in ("steps", "batch_size", "grad_accum"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(args, name)}")
    for name in ("warmup", "seed", "save_every"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.val_every is not None and args.val_every < 0:
        raise InputError(f"--val-every must be 0 (never) or more, got {args.val_every}")
    if args.seq_len is not None and args.seq_len < 1:
        raise InputError(f"--seq-len must be 1 or more, got {args.seq_len}")


PDROP_DEFAULT = 0.1  # transformers' GPT2Config default for each of the three (and GPT-2's own config.json's)


def config_dropouts(model: str) -> dict[str, float]:
    """The model's config.json's embd_pdrop, attn_pdrop, resid_pdrop (GPT2Config keeps none of
    them: inference has no dropout), each PDROP_DEFAULT where absent (an llm.c file has none)."""
    from ..config import read_config_json

    files = [p for p in source_files(model) if p.name == "config.json"]
    raw = read_config_json(files[0]) if files else {}
    return {k: raw.get(f"{k}_pdrop", PDROP_DEFAULT) for k in ("embd", "attn", "resid")}


def dropout_rates(value: str | None, model: str) -> dict[str, float] | None:
    """--dropout -> {"embd": p, "attn": p, "resid": p}, or None (no dropout: the plain backward)."""
    if value is None:
        return None
    if value == "config":
        rates = config_dropouts(model)
    else:
        try:
            p = float(value)
        except ValueError:
            raise InputError(
                f"--dropout takes a probability in [0, 1) or nothing (the config's), got {value!r}"
            ) from None
        rates = {"embd": p, "attn": p, "resid": p}
    for where, p in rates.items():
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise InputError(f"--dropout: the {where} dropout probability must lie in [0, 1), got {p!r}")
    return {k: float(v) for k, v in rates.items()}


def settings_of(args, seq_len: int, rates: dict[str, float] | None) -> dict[str, Any]:
    """The settings that change the result (RESULT_SETTINGS), as saved and compared on --resume."""
    values = dict(vars(args), seq_len=seq_len, dropout=rates, decay="2d")
    values["min_lr"] = args.lr / 10 if args.min_lr is None else args.min_lr
    return {name: values[name] for name in RESULT_SETTINGS}


def sha256_of_files(paths: list[Path]) -> str:
    from ..checkpoint import remembered_sha256

    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + remembered_sha256(path).encode())
    return h.hexdigest()


def source_files(name: str) -> list[Path]:
    """The files the model is loaded from (config.json and model.safetensors, or an llm.c file)."""
    from ..hub import resolve_model_files

    path = Path(name)
    if path.is_file():
        return [path]
    found = resolve_model_files(name, verify=False, local_files_only=True)
    return [found["config.json"], found["model.safetensors"]]


# --- the output folder ------------------------------------------------------------------------


def check_out(args) -> Path:
    """Refuse, before any work, an --out that is the model's own folder, or that holds anything
    without --resume or --overwrite (the overwrite rule, tools/overwrite.py)."""
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise InputError("--resume goes on from the checkpoint in --out, --overwrite starts afresh there: give one")
    mine = [p for p in model_files(args.model, args.tokenizer) if out.is_dir() and p.parent.resolve() == out.resolve()]
    if mine:
        raise InputError(
            f"--out {args.out} is the folder of the model being trained ({mine[0].name} is there): the training would "
            "replace it; give another folder"
        )
    if args.resume and out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OURS and not p.name.endswith(TMP))
        if foreign:
            raise InputError(
                f"--out {args.out} holds {', '.join(foreign[:3])}, which `gpt2np train` did not write: nothing there "
                "to resume; give the --out of the run to resume"
            )
        return out
    return check_out_folder(args.out, overwrite=args.overwrite, is_ours=lambda path: False, flag="--out")


def write_atomically(path: Path, data: bytes, kill_half: bool = False) -> None:
    """data into path + TMP, synced to the disk (not yet renamed: commit does that)."""
    with open(path.with_name(path.name + TMP), "wb") as f:
        half = len(data) // 2
        f.write(data[:half])
        if kill_half:
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)  # the tests' kill, halfway through the model's bytes
        f.write(data[half:])
        f.flush()
        os.fsync(f.fileno())


def commit(out: Path, kill_mid: bool = False) -> None:
    """Rename the checkpoint's .tmp files into place, the state last (it says the others are whole)."""
    for name in (MODEL, OPTIMIZER, STATE):
        tmp = out / (name + TMP)
        if tmp.exists():
            os.replace(tmp, out / name)
        if kill_mid and name == MODEL:
            os.kill(os.getpid(), signal.SIGKILL)  # the tests' kill, between two renames
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames themselves on the disk
    finally:
        os.close(fd)


def recover(out: Path) -> None:
    """After a kill: a whole new checkpoint (its state's .tmp parses) is renamed into place; the
    .tmp files of one that was not finished are thrown away (the last checkpoint stands)."""
    tmp_state = out / (STATE + TMP)
    try:
        whole = json.loads(tmp_state.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        whole = False
    if whole:
        commit(out)
    for name in (MODEL, OPTIMIZER, STATE):
        (out / (name + TMP)).unlink(missing_ok=True)


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    # One metadata key only: safetensors writes a metadata dict in hash order, and the bytes must
    # not vary run to run. "pt": transformers refuses safetensors files without it.
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"format": "pt"})


def kill_at(point: str, step: int) -> bool:
    return os.environ.get("GPT2NP_TRAIN_KILL_AT") == f"{point}:{step}"


def save_checkpoint(out: Path, model: GPT2, opt: AdamW, state: dict[str, Any]) -> None:
    """The model, the optimizer's state and the training state, as .tmp files then renamed."""
    step = state["step"]
    write_atomically(out / MODEL, safetensors_bytes(named_parameters(model.weights)), kill_at("model-half", step))
    write_atomically(out / OPTIMIZER, safetensors_bytes(opt.state_dict()))
    write_atomically(out / STATE, (json.dumps(state, indent=1) + "\n").encode())
    if kill_at("before-rename", step):
        os.kill(os.getpid(), signal.SIGKILL)
    commit(out, kill_mid=kill_at("mid-rename", step))


def write_model_files(out: Path, args, model: GPT2) -> None:
    """config.json and the tokenizer's files, once at the start (each through a .tmp and a rename)."""
    from ..hub import resolve_tokenizer_files

    config = model.config.to_dict()
    (out / (CONFIG + TMP)).write_text(json.dumps(config, indent=2) + "\n")
    os.replace(out / (CONFIG + TMP), out / CONFIG)
    try:
        files = resolve_tokenizer_files(args.tokenizer or args.model, verify=False, local_files_only=True)
    except (GPT2npError, OSError):
        return  # no tokenizer fits (a vocabulary of its own): the folder is a model without one
    for name, path in files.items():
        shutil.copyfile(path, out / (name + TMP))
        os.replace(out / (name + TMP), out / name)


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the run being resumed and this one, in the user's words."""
    said = []
    for key in ("model", "data", "tokens"):
        if saved[key] != now[key]:
            what = {"model": "--model", "data": "--data's content", "tokens": "the data's tokens (another tokenizer?)"}
            said.append(f"{what[key]} ({saved.get(key + '_name', '')} then, {now.get(key + '_name', '')} now)")

    def shown(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    for name in RESULT_SETTINGS:
        then, now_value = saved["settings"].get(name), now["settings"][name]
        if then != now_value:
            said.append(f"--{name.replace('_', '-')} ({shown(then)} then, {shown(now_value)} now)")
    return said


# --- the loop -----------------------------------------------------------------------------


@dataclass
class Run:
    """What a run carries from step to step, and saves with each checkpoint."""

    step: int = 0  # optimizer steps done
    history: list[list[Any]] = field(default_factory=list)  # [step, train loss, val loss or None]


def train_step(
    model: GPT2,
    opt: AdamW,
    batcher: Batcher,
    args,
    rates: dict[str, float] | None,
    rng: np.random.Generator,
    step: int,
    min_lr: float,
) -> tuple[float, float]:
    """One optimizer step: -> (the loss, the gradients' norm before clipping)."""
    B, T = args.batch_size, batcher.seq_len
    mask = np.ones((B, T), dtype=np.int64)  # whole windows: nothing is padded
    positions = np.broadcast_to(np.arange(T), (B, T))  # [B, T]
    keep = np.ones((B, T), dtype=bool)  # every position predicts its next token
    total_loss, grads = 0.0, None
    for _ in range(args.grad_accum):
        x, y = batcher.next_batch(B)  # [B, T] each: y is x shifted by one token
        if rates is None:
            loss, g = gradients(model, x, mask, positions, y, keep, checkpointing=args.gradient_checkpointing)
        else:
            from ..dropout import gradients_with_dropout

            loss, g = gradients_with_dropout(model, x, y, rates, int(rng.integers(2**63)))
        total_loss += loss / args.grad_accum
        if grads is None:
            grads = g
        else:
            for name in grads:
                grads[name] += g[name]
    assert grads is not None
    if args.grad_accum > 1:  # the mean over the micro-batches: one batch of B x grad_accum rows
        for a in grads.values():
            a /= a.dtype.type(args.grad_accum)
    norm = clip_grad_norm(grads, args.grad_clip) if args.grad_clip else global_norm(grads)
    if math.isfinite(total_loss) and math.isfinite(norm):
        opt.step(grads, lr=get_lr(step, args.lr, min_lr, args.warmup, args.steps))
    return total_loss, norm


def global_norm(grads: dict[str, np.ndarray]) -> float:
    return math.sqrt(
        sum(float(np.dot(g.ravel().astype(np.float64), g.ravel().astype(np.float64))) for g in grads.values())
    )


def validation_loss(model: GPT2, batches: list[np.ndarray]) -> float:
    """The mean loss over the held-out windows (no dropout, no gradients)."""
    from ..backward import cross_entropy

    losses = []
    for w in batches:  # [b, T + 1]
        logits = model(w[:, :-1]).logits  # [b, T, V]
        losses.append(cross_entropy(logits, w[:, 1:], np.ones(w[:, 1:].shape, dtype=bool)))
    return float(np.mean(losses))


class Progress:
    """The progress bar on stderr: step, loss, validation loss, tokens/s, time left."""

    def __init__(self, total: int, start: int, tokens_per_step: int) -> None:
        self.total, self.start, self.tokens_per_step = total, start, tokens_per_step
        self.began = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.printed = self.began  # not a terminal (a log file): a line every LOG_EVERY seconds, and the last

    def update(self, step: int, loss: float, val: float | None) -> None:
        done, elapsed = step - self.start, time.monotonic() - self.began
        rate = done * self.tokens_per_step / elapsed if elapsed > 0 else 0.0
        left = elapsed / done * (self.total - step) if done else 0.0
        width = 24
        bar = "#" * (width * step // self.total) + "." * (width - width * step // self.total)
        val_text = "-" if val is None else f"{val:.4f}"
        line = (
            f"[{bar}] step {step}/{self.total}  loss {loss:.4f}  val {val_text}  {rate:,.0f} tokens/s  "
            f"{format_time(left)} left"
        )
        if self.tty:
            print("\r" + line, end="" if step < self.total else "\n", file=sys.stderr, flush=True)
        elif time.monotonic() - self.printed >= LOG_EVERY or step == self.total:
            print(line, file=sys.stderr, flush=True)
            self.printed = time.monotonic()


def format_time(seconds: float) -> str:
    seconds = round(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class Stop:
    """Ctrl-C and SIGTERM ask the loop to stop after the step under way (then it saves)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.before = {s: signal.signal(s, self.ask) for s in (signal.SIGINT, signal.SIGTERM)}

    def ask(self, signum, frame) -> None:
        self.signal = signum

    def restore(self) -> None:
        for s, handler in self.before.items():
            signal.signal(s, handler)


def cmd_train(args) -> int:
    check_numbers(args)
    out = check_out(args)
    if args.plot is not None:
        from .plot import is_our_png

        check_out_file(args.plot, overwrite=args.overwrite, is_ours=is_our_png, ours="a PNG gpt2np drew", flag="--plot")
    model = GPT2.from_pretrained(args.model, dtype=args.dtype, mask_fill=args.mask_fill, verify=not args.no_verify)
    cfg = model.config
    seq_len = args.seq_len if args.seq_len is not None else min(cfg.n_positions, 256)
    if seq_len > cfg.n_positions:
        raise InputError(f"--seq-len {seq_len} is longer than the model's context (n_positions {cfg.n_positions})")
    rates = dropout_rates(args.dropout, args.model)
    tokenizer = None
    if not Path(args.data).is_file() or Path(args.data).stat().st_size == 0 or not is_token_file(Path(args.data)):
        try:
            tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
        except GPT2npError:
            tokenizer = None  # load_tokens says what is missing if the data is text
    tokens = load_tokens(args.data, tokenizer, cfg.vocab_size, args.jsonl_field)
    train_tokens, val_tokens = split(tokens, args.val_split, seq_len)
    settings = settings_of(args, seq_len, rates)
    identity: dict[str, Any] = {
        "model": sha256_of_files(source_files(args.model)),
        "model_name": str(args.model),
        "data": sha256_of_files([Path(args.data)]),
        "data_name": str(args.data),
        "tokens": hashlib.sha256(tokens.astype("<i8").tobytes()).hexdigest(),
        "settings": settings,
    }
    min_lr = settings["min_lr"]
    val_every = args.val_every if args.val_every is not None else max(1, args.steps // 10)
    if not len(val_tokens):
        val_every = 0

    out.mkdir(parents=True, exist_ok=True)
    run, batcher = Run(), Batcher(train_tokens, seq_len, args.seed)
    rng = np.random.default_rng(args.seed)  # dropout's: one seed a micro-batch drawn from it
    if args.resume:
        recover(out)
    if args.overwrite:
        for name in (STATE, OPTIMIZER, *(n + TMP for n in OURS)):
            (out / name).unlink(missing_ok=True)
    resuming = args.resume and (out / STATE).is_file()
    if resuming:
        saved = json.loads((out / STATE).read_text())
        said = differences(saved, identity)
        if said:
            raise InputError(
                f"--resume: {out} was trained with other inputs or settings: "
                + "; ".join(said)
                + ". Resume with the same ones, or train into another --out"
            )
        model = GPT2.from_pretrained(out, dtype=args.dtype, mask_fill=args.mask_fill, verify=False)
    opt = AdamW(model, lr=args.lr, weight_decay=args.weight_decay, decay="2d")
    if resuming:
        opt.load(out / OPTIMIZER)
        run = Run(step=saved["step"], history=saved["history"])
        batcher.epoch, batcher.index = saved["position"]["epoch"], saved["position"]["index"]
        rng.bit_generator.state = saved["rng"]
        if opt.t != run.step:
            raise GPT2npError(f"{out}: the optimizer's state is at step {opt.t}, the training state at {run.step}")
        print(f"resuming {out} at step {run.step} of {args.steps}")
    else:
        write_model_files(out, args, model)

    def state() -> dict[str, Any]:
        return {
            "format": FORMAT,
            "step": run.step,
            "position": batcher.position,
            "rng": rng.bit_generator.state,
            "history": run.history,
            **identity,
        }

    if not resuming:
        windows = n_windows(train_tokens, seq_len)
        held = f"{len(val_tokens):,} held out" if len(val_tokens) else "none held out"
        print(
            f"training {args.model} ({model.num_parameters:,} parameters) on {args.data}: {len(tokens):,} tokens, "
            f"{windows:,} window{'s' if windows > 1 else ''} of {seq_len} for training, {held}; {args.steps} steps of "
            f"{args.grad_accum * args.batch_size} x {seq_len} tokens"
        )
    val_batches = validation_batches(val_tokens, seq_len, args.batch_size, VAL_BATCHES) if val_every else []
    progress = Progress(args.steps, run.step, args.batch_size * args.grad_accum * seq_len)
    stop = Stop()
    saved_at = run.step if resuming else None
    try:
        while run.step < args.steps:
            with np.errstate(all="ignore"):  # an overflow shows as a loss that is not finite: said below
                loss, norm = train_step(model, opt, batcher, args, rates, rng, run.step, min_lr)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                kept = f"the last good checkpoint (step {saved_at}) is kept" if saved_at else "no checkpoint was saved"
                raise GPT2npError(
                    f"the loss became {loss} (gradient norm {norm}) at step {run.step + 1}: training stopped and "
                    f"{kept} in {out}; lower --lr, or clip the gradients (--grad-clip)"
                )
            run.step += 1
            val = None
            if val_every and (run.step % val_every == 0 or run.step == args.steps):
                val = validation_loss(model, val_batches)
                end = "\n" if progress.tty else ""
                print(f"{end}step {run.step}: train loss {loss:.4f}, val loss {val:.4f}", flush=True)
            run.history.append([run.step, loss, val])
            progress.update(run.step, loss, val)
            if kill_at("step", run.step):
                os.kill(os.getpid(), signal.SIGKILL)
            for name, sig in (("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)):
                if kill_at(name, run.step):
                    os.kill(os.getpid(), sig)  # the tests' stop: a real signal, at a known step
            if run.step == args.steps or (args.save_every and run.step % args.save_every == 0) or stop.signal:
                save_checkpoint(out, model, opt, state())
                saved_at = run.step
            if stop.signal and run.step < args.steps:
                name = "Ctrl-C" if stop.signal == signal.SIGINT else "SIGTERM"
                print(
                    f"\n{name}: stopped at step {run.step}, checkpoint saved in {out}; go on with --resume",
                    file=sys.stderr,
                )
                return 128 + stop.signal
    finally:
        stop.restore()
    if args.plot is not None:
        plot_losses(run.history, Path(args.plot))
    print(f"wrote {out}: step {run.step}, loss {run.history[-1][1]:.4f}" if run.history else f"{out}: nothing to do")
    return 0


def plot_losses(history: list[list[Any]], path: Path) -> None:
    """The loss curve: the training loss at every step, the validation loss where measured."""
    from .plot import require_matplotlib, save

    Figure, _ = require_matplotlib()
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    steps = [h[0] for h in history]
    ax.plot(steps, [h[1] for h in history], label="training loss", color="#3b7dd8", linewidth=1)
    val = [(h[0], h[2]) for h in history if h[2] is not None]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#f39c12", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats a token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save(fig, path, dpi=100)
