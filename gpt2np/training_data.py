"""Training data: a file to one stream of token ids, and that stream to batches.

A file is one of
- llm.c's token data file (recognised by its magic 20240520, version 1: a 256-int32 header, then
  the tokens as uint16; llmc.py writes it), read as it is;
- a UTF-8 text file of documents separated by blank lines, or a JSONL file of which one field
  holds each document's text (jsonl_field=NAME); the documents are tokenized and joined with
  the tokenizer's eos (<|endoftext|>) between them, as GPT-2's training text was.

The stream is cut into windows of T + 1 tokens that overlap by one: window k is
tokens[k*T : k*T + T + 1], its first T tokens the input and its last T the targets (position t
predicts token t + 1), as llm.c's DataLoader reads B*T + 1 tokens for a batch of B rows. Every
window is seen once per epoch, in an order shuffled by the seed and the epoch
(numpy.random.default_rng([seed, epoch]).permutation), nanoGPT's random windows made
repeatable. Where the batcher stands is two integers (epoch, index in the epoch): saved with a
checkpoint, they give the same next batches after a resume, with no generator state to carry.

The last val_split of the stream (nanoGPT's 0.9 / 0.1 split) is held out for the validation loss,
read in order, never shuffled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .llmc import HEADER_INTS, TOKENS_MAGIC, TOKENS_VERSION


def is_token_file(path: Path) -> bool:
    """Does the file start with llm.c's token data magic?"""
    with open(path, "rb") as f:
        head = f.read(4)
    return len(head) == 4 and int(np.frombuffer(head, "<i4")[0]) == TOKENS_MAGIC


def read_token_file(path: Path, vocab_size: int) -> np.ndarray:
    """llm.c's token data file -> [N] int64 token ids, checked: header, size and every id < vocab_size."""
    data = path.read_bytes()
    if len(data) < HEADER_INTS * 4:
        raise InputError(f"{path}: {len(data)} bytes, shorter than llm.c's 1024-byte header: the file is truncated")
    header = np.frombuffer(data[: HEADER_INTS * 4], "<i4")
    if header[1] != TOKENS_VERSION:
        raise InputError(f"{path}: llm.c token file version {header[1]}; gpt2np reads version {TOKENS_VERSION}")
    n = int(header[2])
    if n < 0 or len(data) != HEADER_INTS * 4 + 2 * n:
        raise InputError(
            f"{path}: its header says {n} tokens ({HEADER_INTS * 4 + 2 * n} bytes), the file has {len(data)} bytes: "
            "it is truncated or damaged"
        )
    tokens = np.frombuffer(data, "<u2", offset=HEADER_INTS * 4).astype(np.int64)  # [N]
    if tokens.size and tokens.max() >= vocab_size:
        at = int(np.argmax(tokens >= vocab_size))
        raise InputError(
            f"{path}: token {at} is id {tokens[at]}, beyond the model's vocabulary (0 .. {vocab_size - 1}): the file "
            "was made with another tokenizer"
        )
    return tokens


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or an InputError for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(
            f"{path} is a binary file (it holds a NUL byte at byte {nul}); give a UTF-8 text file, a JSONL "
            "file with --jsonl-field, or llm.c's token data file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path} is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); give a UTF-8 text file, a JSONL "
            "file with --jsonl-field, or llm.c's token data file"
        ) from None


def documents(text: str, path: Path, jsonl_field: str | None) -> list[str]:
    """The documents of a text file: separated by blank lines, or one JSONL field per line."""
    if jsonl_field is None:
        paragraphs = [" ".join(line.strip() for line in part.splitlines()) for part in _paragraphs(text)]
        return [p for p in paragraphs if p]
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {number}: not valid JSON ({e.msg}); give one JSON object a line") from None
        value = row.get(jsonl_field) if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise InputError(
                f"{path}, line {number}: no text in field {jsonl_field!r} (found {type(value).__name__}); "
                "name the field that holds each document's text with --jsonl-field"
            )
        docs.append(value)
    return docs


def _paragraphs(text: str) -> list[str]:
    """Text cut at blank lines (lines holding only spaces count as blank)."""
    parts, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            parts.append("\n".join(current))
            current = []
    if current:
        parts.append("\n".join(current))
    return parts


def load_tokens(path: str | Path, tokenizer: Any, vocab_size: int, jsonl_field: str | None = None) -> np.ndarray:
    """A data file -> [N] int64 token ids (the module's docstring says which files). tokenizer:
    a gpt2np Tokenizer, used for text only (None is fine for a token file)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise InputError(f"--data {path}: {what}; give a text, JSONL or llm.c token data file")
    if path.stat().st_size == 0:
        raise InputError(f"--data {path} is empty: there is nothing to train on")
    if is_token_file(path):
        return read_token_file(path, vocab_size)
    text = read_text(path)
    docs = documents(text, path, jsonl_field)
    if not docs:
        raise InputError(f"--data {path} holds no text (only blank lines): there is nothing to train on")
    if tokenizer is None:
        raise InputError(f"--data {path} is text, and the model has no tokenizer to turn it into tokens")
    eos = [tokenizer.eos_token_id]
    ids: list[int] = []
    for i, doc in enumerate(docs):
        ids += (eos if i else []) + tokenizer.encode(doc)  # eos between documents
    return np.array(ids, dtype=np.int64)


def split(tokens: np.ndarray, val_split: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[N] tokens -> (train, validation): the last val_split of them held out. Each part must hold
    one window (seq_len + 1 tokens) at least."""
    n_val = round(len(tokens) * val_split)
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
    if len(train) < seq_len + 1:
        raise InputError(
            f"the data is {len(tokens)} tokens, {len(train)} of them for training: shorter than one sequence "
            f"(--seq-len {seq_len} + 1 tokens); give more text or a smaller --seq-len"
        )
    if n_val and len(val) < seq_len + 1:
        raise InputError(
            f"--val-split {val_split} holds out {len(val)} tokens, fewer than one sequence (--seq-len {seq_len} + 1); "
            "give more text, a larger --val-split, or --val-split 0 (no validation)"
        )
    return train, val


def n_windows(tokens: np.ndarray, seq_len: int) -> int:
    return (len(tokens) - 1) // seq_len  # window k is tokens[k*T : k*T + T + 1]


def window(tokens: np.ndarray, k: int, seq_len: int) -> np.ndarray:
    return tokens[k * seq_len : k * seq_len + seq_len + 1]  # [T + 1]


@dataclass
class Batcher:
    """The training windows in seeded random order, epoch after epoch; (epoch, index) is where it stands."""

    tokens: np.ndarray  # [N] the training part of the stream
    seq_len: int
    seed: int
    epoch: int = 0
    index: int = 0  # the next window's place in this epoch's order

    def order(self, epoch: int) -> np.ndarray:
        """The window numbers in epoch `epoch`'s order: the same seed and epoch, the same order."""
        return np.random.default_rng([self.seed, epoch]).permutation(n_windows(self.tokens, self.seq_len))

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """-> x, y [B, T]: the next B windows, inputs and targets (y is x shifted by one token)."""
        rows, order = [], self.order(self.epoch)
        for _ in range(batch_size):
            if self.index == len(order):  # an epoch is over: the next one, in its own order
                self.epoch, self.index = self.epoch + 1, 0
                order = self.order(self.epoch)
            rows.append(window(self.tokens, int(order[self.index]), self.seq_len))
            self.index += 1
        w = np.stack(rows)  # [B, T + 1]
        return w[:, :-1], w[:, 1:]

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def validation_batches(tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int) -> list[np.ndarray]:
    """The held-out windows in order, as [b, T + 1] arrays, at most max_batches of them."""
    windows = [window(tokens, k, seq_len) for k in range(min(n_windows(tokens, seq_len), batch_size * max_batches))]
    return [np.stack(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
