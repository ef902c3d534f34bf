"""GPT-2's tokenizer, written out: byte-level BPE over merges.txt, on one page.

gpt2np's Tokenizer uses the `tokenizers` library (fast, Rust). This module is the same
algorithm in plain Python, to read; tests/test_bpe.py holds it equal to `tokenizers`, id for
id, on text with accents, emoji, CJK, numbers, contractions and runs of spaces.

Three steps turn text into ids:
1. Split the text into words (pre-tokenize): a word keeps the space before it (" rain"),
   letters, numbers and punctuation never share a word, and "'s", "'t", ... are words of their
   own. Merges never cross a word's edge.
2. Each word becomes bytes (UTF-8), and each byte one printable character (bytes_to_unicode:
   the space byte becomes "Ġ", the newline "Ċ"), so any text, in any script, can be spelled.
3. Byte pair encoding (Sennrich et al., 2016): merges.txt lists 50000 pairs, most frequent in
   the training text first. Repeatedly join the adjacent pair that comes earliest in that list,
   until no adjacent pair is in it. Each remaining piece is a token of vocab.json: its id.

    from gpt2np.bpe import BPE
    BPE.gpt2().encode("It will rain")  # [1026, 481, 6290], as Tokenizer.from_pretrained("gpt2")

Which characters are letters and numbers comes from Python's unicodedata: a character assigned
after that Unicode version (Python 3.11 has Unicode 14) is unknown here and may split differently.
"""

from __future__ import annotations

import json
import unicodedata
from itertools import pairwise
from pathlib import Path

from .errors import InputError

TOKENIZER_FILES = Path(__file__).resolve().parent / "tokenizer_files"  # GPT-2's, shipped in the package
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")  # GPT-2's: lower case only, straight quote only
# Unicode's White_Space characters: what the regex engine `tokenizers` uses calls \s. (Python's
# str.isspace also says yes to the separators \x1c-\x1f, which are not white space there.)
WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


def bytes_to_unicode() -> dict[int, str]:
    """Each of the 256 byte values -> one printable character. The printable bytes (! .. ~,
    ¡ .. ¬, ® .. ÿ) stand for themselves; the others (space, control bytes, ...) are given the
    characters from 256 on, in order: byte 32, the space, becomes chr(256 + 32) = "Ġ"."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def kind(ch: str) -> str:
    """'space', 'letter', 'number' or 'other': the classes GPT-2's pre-tokenizer splits on."""
    if ch in WHITE_SPACE:
        return "space"
    category = unicodedata.category(ch)[0]  # 'L' letter, 'N' number, 'P' punctuation, ...
    return {"L": "letter", "N": "number"}.get(category, "other")


def split_words(text: str) -> list[str]:
    """GPT-2's pre-tokenizer, the regex
        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    written as a scan: at each position, the first of these that matches, as long as it goes."""
    words, i, n = [], 0, len(text)
    while i < n:
        start = i
        contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:  # "'s", "'ll", ...: a word of its own
            i += len(contraction)
        elif kind(text[i]) != "space" or (text[i] == " " and i + 1 < n and kind(text[i + 1]) != "space"):
            # a run of one kind (letters, numbers or other), with one plain space before it, if any
            if text[i] == " ":
                i += 1
            run = kind(text[i])
            while i < n and kind(text[i]) == run:
                i += 1
        else:  # white space: all of it, but the last one when a word follows (that word takes it)
            while i < n and kind(text[i]) == "space":
                i += 1
            if i < n and i - start > 1:
                i -= 1
        words.append(text[start:i])
    return words


class BPE:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
        self.vocab = vocab  # token (as bytes_to_unicode characters) -> id
        self.rank = {pair: r for r, pair in enumerate(merges)}  # pair -> its line in merges.txt: lower merges first
        self.byte_char = bytes_to_unicode()

    @classmethod
    def from_files(cls, vocab_json: str | Path, merges_txt: str | Path) -> BPE:
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        return cls(vocab, merges)  # type: ignore[arg-type]

    @classmethod
    def gpt2(cls) -> BPE:
        """GPT-2's own vocabulary and merges (the same for all five GPT-2 models)."""
        return cls.from_files(TOKENIZER_FILES / "vocab.json", TOKENIZER_FILES / "merges.txt")

    def merge_steps(self, word: str) -> list[list[str]]:
        """The pieces of one word after each merge: first its bytes, last its tokens."""
        pieces = [self.byte_char[b] for b in word.encode("utf-8")]  # " rain" -> ['Ġ', 'r', 'a', 'i', 'n']
        steps = [pieces]
        while len(pieces) > 1:
            pairs = set(pairwise(pieces))  # every adjacent pair
            best = min(pairs, key=lambda p: self.rank.get(p, len(self.rank)))  # the earliest in merges.txt
            if best not in self.rank:
                break  # no adjacent pair can merge: done
            merged, i = [], 0
            while i < len(pieces):  # join every occurrence of the pair, left to right
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
            steps.append(pieces)
        return steps

    def tokenize(self, text: str) -> list[str]:
        """Text -> tokens (as vocab.json spells them: 'ĠIt' is ' It')."""
        if not isinstance(text, str):
            raise InputError(f"BPE.encode needs a str, got {type(text).__name__}")
        return [piece for word in split_words(text) for piece in self.merge_steps(word)[-1]]

    def encode(self, text: str) -> list[int]:
        """Text -> ids."""
        return [self.vocab[token] for token in self.tokenize(text)]
