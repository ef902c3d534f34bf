"""Stop strings: end a sequence when its text ends with one of them, even across tokens.

`generate(stop_strings=["\\n\\n", "The end"], tokenizer=tok)` stops a row (or finishes a beam)
as soon as the token just generated completes one of the strings. A string may span several
tokens ("The end" is "The" + " end"), and may end inside the last token (" endless" completes
"The end" too). This is transformers' StopStringCriteria, whose tensor program says the same
thing in a way that compiles for GPUs: here it is said plainly, on bytes.

Why bytes: GPT-2's tokens are pieces of UTF-8, and one character (an emoji, "é") can be split
across two tokens. Each token's bytes come from its byte-level string (GPT-2's 256 stand-in
characters, "Ġ" for a space), and the strings are matched as UTF-8, as transformers does for
a byte-level tokenizer.

The rule, for each row after each new token: join the bytes of the last few tokens; a stop
string matches when it occurs there and its end lies inside the new token (an occurrence that
ended earlier was already seen, or was part of the prompt). The prompt's tokens, pads
included, count as text, as in transformers: a prompt ending in "The" and a first token " end"
stop at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: stand-in character -> byte. (OpenAI's
    encoder.py `bytes_to_unicode`: printable bytes stand for themselves, the other 68 bytes are
    shifted to unprinted code points from 256 on, so a token is always a visible string.)"""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shifted = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer: Any, vocab_size: int) -> list[bytes]:
    """The bytes each token id in 0 .. vocab_size - 1 stands for. `tokenizer` is gpt2np's
    Tokenizer or transformers' GPT-2 tokenizer: anything with convert_ids_to_tokens."""
    decoder = byte_decoder()
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    return [bytes(decoder[c] for c in piece) for piece in pieces]


class StopStrings:
    """Call with the sequences [N, t] after a new token -> [N] True where a stop string just ended."""

    def __init__(self, stop_strings: list[str], tokenizer: Any, vocab_size: int) -> None:
        self.strings = [s.encode("utf-8") for s in stop_strings]
        self.token_bytes = token_bytes(tokenizer, vocab_size)
        # every token is at least one byte: a string of n bytes spans at most the last n tokens
        self.window = max(len(s) for s in self.strings)

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        hits = np.zeros(len(sequences), dtype=bool)  # [N]
        for row, ids in enumerate(sequences[:, -self.window :].tolist()):
            text = b"".join(self.token_bytes[i] for i in ids)  # the tail of the row, as bytes
            last_start = len(text) - len(self.token_bytes[ids[-1]])  # where the new token begins
            # an occurrence that ends inside the new token starts after last_start - len(s)
            hits[row] = any(s in text[max(0, last_start - len(s) + 1) :] for s in self.strings)
        return hits
