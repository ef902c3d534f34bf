"""GPT-2's byte-level BPE tokenizer, with padding the way transformers does it.

The BPE itself runs in the `tokenizers` library (the same Rust code behind transformers'
GPT2TokenizerFast), built from the model folder's `vocab.json` + `merges.txt` (OpenAI's
original files) or its `tokenizer.json`. What this module adds is the part people trip over:
turning sentences of different lengths into one rectangular batch.

Defaults are transformers' GPT-2 defaults: no BOS token is added, padding_side="right", and
no pad token (GPT-2 was trained without one). For batched generation set

    tok.padding_side = "left"; tok.pad_token = tok.eos_token
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .errors import CheckpointError, InputError
from .inputs import check_unicode  # (a lone surrogate: stop_strings are checked with it too)

if TYPE_CHECKING:
    from tokenizers import Tokenizer as Backend

EOS_TOKEN = "<|endoftext|>"
PADDING_SIDES = ("left", "right")


class BatchEncoding(dict):
    """{"input_ids": [B, T] int64, "attention_mask": [B, T] int64}; also batch.input_ids."""

    def __getattr__(self, key: str) -> np.ndarray:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Tokenizer:
    def __init__(self, backend: Backend, eos_token: str = EOS_TOKEN, model_max_length: int = 1024) -> None:
        self.backend = backend  # a tokenizers.Tokenizer
        if backend.token_to_id(eos_token) is None:
            raise InputError(f"the vocabulary has no {eos_token!r} token; is this a GPT-2 tokenizer?")
        self.eos_token = eos_token
        self.bos_token = eos_token  # GPT-2 uses <|endoftext|> for both (and adds neither by default)
        self.model_max_length = model_max_length
        self._pad_token: str | None = None
        self._padding_side = "right"

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = "gpt2", verify: bool = True, local_files_only: bool = False
    ) -> Tokenizer:
        """A model name (gpt2, distilgpt2, a hub repo id) or a folder with vocab.json +
        merges.txt or tokenizer.json; found as models are (see hub.py)."""
        from .hub import resolve_tokenizer_files

        files = resolve_tokenizer_files(name_or_path, verify=verify, local_files_only=local_files_only)
        if "tokenizer.json" in files:
            return cls.from_tokenizer_json(files["tokenizer.json"])
        return cls.from_vocab_and_merges(files["vocab.json"], files["merges.txt"])

    @classmethod
    def from_vocab_and_merges(cls, vocab: str | Path, merges: str | Path) -> Tokenizer:
        """Build GPT-2's tokenizer from OpenAI's two files, set up as transformers does."""
        from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
        from tokenizers import Tokenizer as Backend

        try:
            bpe = models.BPE.from_file(str(vocab), str(merges))
        except Exception as e:  # noqa: BLE001  the `tokenizers` library raises a bare Exception for a bad file
            raise CheckpointError(
                f"{vocab} + {merges} are not a readable vocab.json + merges.txt pair ({e}); restore them from the "
                "model's repository (or use GPT-2's own tokenizer, which ships with gpt2np: --tokenizer gpt2)"
            ) from None
        backend = Backend(bpe)
        # Byte-level: text -> UTF-8 bytes -> 256 printable stand-ins, so any string is encodable
        # with no unknown token. A leading space is part of a word: " the" is one token.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        backend.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])
        return cls(backend)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as Backend

        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # noqa: BLE001  the `tokenizers` library raises a bare Exception for a bad file
            raise CheckpointError(
                f"{path} is not a readable tokenizer.json ({e}); restore it from the model's repository (or use "
                "GPT-2's own tokenizer, which ships with gpt2np: --tokenizer gpt2)"
            ) from None
        backend.no_padding()  # we pad ourselves, below
        backend.no_truncation()
        return cls(backend)

    # --- special tokens and settings ------------------------------------------------------

    # The ignores: token_to_id may give None for a token not in the vocabulary; __init__ checked eos.
    @property
    def eos_token_id(self) -> int:
        return self.backend.token_to_id(self.eos_token)  # type: ignore[return-value]

    @property
    def bos_token_id(self) -> int:
        return self.backend.token_to_id(self.bos_token)  # type: ignore[return-value]

    @property
    def pad_token(self) -> str | None:
        return self._pad_token

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        if token is not None and self.backend.token_to_id(token) is None:
            raise InputError(
                f"pad_token {token!r} is not in the vocabulary; GPT-2 has no pad token, use tok.pad_token = tok.eos_token"
            )
        self._pad_token = token

    @property
    def pad_token_id(self) -> int | None:
        return None if self._pad_token is None else self.backend.token_to_id(self._pad_token)

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        if side not in PADDING_SIDES:
            raise InputError(f"padding_side must be 'left' or 'right', got {side!r} (use 'left' for generation)")
        self._padding_side = side

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    # --- text -> ids ----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """One string -> its token ids (no special tokens added, as GPT-2)."""
        if not isinstance(text, str):
            raise InputError(f"encode takes a string, got {type(text).__name__}")
        check_unicode(text, "the text")
        return self.backend.encode(text, add_special_tokens=False).ids

    def __call__(
        self,
        text: str | list[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
    ) -> BatchEncoding:
        """Tokenize a string or a list of strings into a 2-D batch.

        padding: False (rows must already be of equal length), True or "longest" (pad to the
        longest row), "max_length" (pad to max_length). Pads go on `padding_side` with
        `pad_token_id`, and the attention mask is 0 there. truncation=True cuts rows to
        max_length (or model_max_length), keeping their beginning, as transformers does.
        """
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("the tokenizer takes a string or a non-empty list of strings")
        for i, t in enumerate(texts):
            check_unicode(t, "the text" if isinstance(text, str) else f"text {i}")
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise InputError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise InputError(f"max_length must be a positive integer, got {max_length!r}")
        rows = [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        if truncation:
            limit = max_length if max_length is not None else self.model_max_length
            rows = [r[:limit] for r in rows]
        pad = padding not in (False, "do_not_pad")
        if pad and self.pad_token_id is None:
            raise InputError(
                "asked to pad, but the tokenizer has no pad token (GPT-2 has none); "
                "set tok.pad_token = tok.eos_token first"
            )
        if padding == "max_length":
            width = max_length if max_length is not None else self.model_max_length
            if max(len(r) for r in rows) > width:
                raise InputError(
                    f"a text is longer than max_length={width} tokens; pass truncation=True or a larger max_length"
                )
        elif pad:
            width = max(len(r) for r in rows)
        else:
            lengths = sorted({len(r) for r in rows})
            if len(lengths) > 1:
                raise InputError(
                    f"the texts have different lengths in tokens ({', '.join(map(str, (len(r) for r in rows)))}), and a "
                    "ragged list cannot be one [batch, sequence] array: pass padding=True (with a pad token, on the "
                    "left for generation)"
                )
            width = lengths[0]
        input_ids = np.full((len(rows), width), self.pad_token_id if pad else 0, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if self._padding_side == "left" else slice(0, len(r))
            input_ids[i, cols] = r
            attention_mask[i, cols] = 1
        return BatchEncoding(input_ids=input_ids, attention_mask=attention_mask)

    # --- ids -> text ----------------------------------------------------------------------

    def decode(self, ids: ArrayLike, skip_special_tokens: bool = False) -> str:
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise InputError(
                f"decode takes a 1-D sequence of token ids, got shape {list(ids.shape)} of {ids.dtype}; use batch_decode for a batch"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InputError(f"decode got ids outside 0 .. {self.vocab_size - 1}")
        return self.backend.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[ArrayLike], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    def convert_ids_to_tokens(self, ids: ArrayLike) -> list[str]:
        """The BPE pieces themselves; "Ġ" is the byte-level stand-in for a space."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InputError(
                f"convert_ids_to_tokens takes a 1-D sequence of token ids, got shape {list(ids.shape)} of {ids.dtype}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):  # id_to_token would quietly give None
            raise InputError(f"convert_ids_to_tokens got ids outside 0 .. {self.vocab_size - 1}")
        return [self.backend.id_to_token(int(i)) for i in ids]  # type: ignore[misc]  # in range: never None
