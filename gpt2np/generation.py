"""Generation: the prompt in one forward pass, then one token per step through the KV cache.

The batch is left-padded, so every row's last column is a real token and each step appends a
column on the right: the new token, a 1 in the attention mask, and position = last + 1. A row
that produces eos (or completes a stop string) is finished: it gets pad_token_id from then on,
and generation stops when every row is finished or the length is reached. This is
transformers' `generate`, step for step, so the tokens are the same, and a sequence gives the
same tokens alone or in a batch.

Each step: the logits of the last position -> the logits processors (processors.py:
repetition penalty, n-gram ban, bad words, minimum length) -> greedy argmax, or the warpers and
a random draw (sampling.py). With num_beams > 1 the steps are beam search's (beam_search.py).

Where gpt2np differs from transformers, on purpose: what follows a finished row or beam is
always pad_token_id (transformers' beam search writes eos there when the pad id is 0, and -1
when there is no eos; its greedy search lets a row that met a stop string run on when there is
no eos); settings it only warns about or silently drops are refused (min_new_tokens beyond the
limit, a bad word that is the eos alone); a prompt runs once, not once per beam or per
returned sequence (its keys and values are copied: KVCache.repeat_rows).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .beam_search import beam_search
from .errors import InputError
from .heap import available_memory, size
from .inputs import check_attention_mask, check_input_ids, check_length, check_unicode
from .kv_cache import KVCache
from .layers import log_softmax
from .masks import position_ids_from_mask
from .processors import Processors
from .sampling import check_logits, filter_logits, greedy, sample
from .stopping import StopStrings

DEFAULT_MAX_LENGTH = 20  # transformers' default when neither max_length nor max_new_tokens is given
EARLY_STOPPING = (True, False, "never")


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and bool(np.isfinite(float(x)))


def _is_bool(x: object) -> bool:
    return isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class GenerationSettings:
    """generate()'s settings, checked; n_new is the number of new tokens."""

    n_new: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    min_new_tokens: int = 0  # eos is banned before this many new tokens (min_length converted)
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    stop_strings: tuple[str, ...] = ()


SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None}  # transformers' own


def warn_unused_sampling(**settings: Any) -> None:
    """A sampling setting without do_sample=True changes nothing: greedy decoding (and beam search)
    never reads it. transformers' GenerationConfig.validate warns, in these words; so do we, once
    per setting that differs from its default (generate(temperature=0.7) alone is greedy)."""
    for name, value in settings.items():
        if value != SAMPLING_DEFAULTS[name]:
            warnings.warn(
                f"`do_sample` is set to `False`. However, `{name}` is set to `{value}` -- this flag is only used in "
                f"sample-based generation modes. You should set `do_sample=True` or unset `{name}`.",
                UserWarning,
                stacklevel=4,
            )


# Any: whatever the caller passed; checking it is this function's job.
def check_generation_args(
    prompt_len: int,
    max_length: Any = None,
    max_new_tokens: Any = None,
    do_sample: Any = False,
    temperature: Any = 1.0,
    top_k: Any = 50,
    top_p: Any = 1.0,
    seed: Any = None,
    *,
    min_p: Any = None,
    repetition_penalty: Any = 1.0,
    no_repeat_ngram_size: Any = 0,
    bad_words_ids: Any = None,
    min_length: Any = 0,
    min_new_tokens: Any = None,
    num_beams: Any = 1,
    num_return_sequences: Any = 1,
    length_penalty: Any = 1.0,
    early_stopping: Any = False,
    stop_strings: Any = None,
    dtype: Any = np.float32,
) -> GenerationSettings:
    """Validate the settings (each refusal names the setting and the fix) -> GenerationSettings.
    Token ids (bad words, eos) are checked against the model in generate()."""
    if not _is_bool(do_sample):  # "no" would be truthy and quietly sample
        raise InputError(f"do_sample must be True or False, got {do_sample!r}")
    if max_new_tokens is not None:
        if not _is_int(max_new_tokens) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        n_new = int(max_new_tokens)
    else:
        explicit = max_length is not None
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        if not _is_int(max_length) or max_length < 1:
            raise InputError(f"max_length must be a positive integer, got {max_length!r}")
        if max_length <= prompt_len:
            raise InputError(
                f"max_length={max_length}{'' if explicit else ' (the default)'} counts the prompt too, and the "
                f"prompt is already {prompt_len} tokens (pads included): nothing is left to generate; pass a larger "
                "max_length or use max_new_tokens"
            )
        n_new = int(max_length) - prompt_len
    if not _is_int(top_k) or top_k < 0:
        raise InputError(f"top_k must be an integer >= 0 (0 keeps every token), got {top_k!r}")
    if not isinstance(top_p, numbers.Real) or not (0 < top_p <= 1):  # type: ignore[operator]  # see below
        raise InputError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p!r}")
    # (the ignores: typeshed gives numbers.Real no comparison operators; a Real compares fine)
    if do_sample:
        if not isinstance(temperature, numbers.Real) or not (0 < temperature < float("inf")):  # type: ignore[operator]
            raise InputError(
                f"temperature must be a positive number when sampling, got {temperature!r} "
                "(for the single most likely token, use greedy decoding: do_sample=False)"
            )
        with np.errstate(over="ignore"):  # a temperature too large for the dtype is refused just below
            carried = np.dtype(dtype).type(temperature)  # what the logits are divided by
        if carried == 0 or not np.isfinite(carried):
            info = np.finfo(dtype)
            raise InputError(
                f"temperature={temperature!r} is {float(carried)} in {np.dtype(dtype).name}, the logits' dtype (it carries "
                f"{info.smallest_subnormal:.3g} .. {float(info.max):.3g}): the logits cannot be divided by it; "
                "a temperature that small is greedy decoding (do_sample=False)"
                if carried == 0
                else f"temperature={temperature!r} is inf in {np.dtype(dtype).name}, the logits' dtype (at most "
                f"{float(info.max):.3g}): every token would get the same probability; use a smaller temperature"
            )
    if min_p is not None and (not _is_real(min_p) or not 0 <= min_p <= 1):
        raise InputError(f"min_p must be a number in [0, 1] (or None: off), got {min_p!r}")
    if seed is not None and not ((_is_int(seed) and seed >= 0) or isinstance(seed, np.random.Generator)):
        # NumPy's own refusal of a negative seed is a bare ValueError: "expected non-negative integer".
        raise InputError(f"seed must be an integer >= 0 or a numpy.random.Generator, got {seed!r}")
    if not _is_real(repetition_penalty) or repetition_penalty <= 0:
        raise InputError(
            f"repetition_penalty must be a number > 0 (1: off, > 1 discourages repeating a token, < 1 encourages it), "
            f"got {repetition_penalty!r}"
        )
    with np.errstate(over="ignore", under="ignore"):  # too large or too small for the dtype: refused just below
        penalty = np.dtype(dtype).type(repetition_penalty)  # what the scores are multiplied or divided by
    info = np.finfo(dtype)
    if not info.tiny <= penalty <= info.max:  # 0, a subnormal or inf: the scores would become 0, inf or NaN
        raise InputError(
            f"repetition_penalty={repetition_penalty!r} is {float(penalty):.3g} in {np.dtype(dtype).name}, the scores' "
            f"dtype, which carries {float(info.tiny):.3g} .. {float(info.max):.3g} as normal numbers: the scores "
            "multiplied or divided by it would be 0, inf or NaN; use a penalty closer to 1 (1.2 is usual)"
        )
    if not _is_int(no_repeat_ngram_size) or no_repeat_ngram_size < 0:
        raise InputError(
            f"no_repeat_ngram_size must be an integer >= 0 (0: off, n: no n-gram twice), got {no_repeat_ngram_size!r}"
        )
    if not _is_int(min_length) or min_length < 0:
        raise InputError(f"min_length must be an integer >= 0, got {min_length!r}")
    if min_new_tokens is not None and (not _is_int(min_new_tokens) or min_new_tokens < 0):
        raise InputError(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    # As transformers: min_new_tokens wins over min_length, which counts the prompt (pads included).
    min_new = int(min_new_tokens) if min_new_tokens is not None else max(0, int(min_length) - prompt_len)
    if min_new > n_new:
        what = f"min_new_tokens={min_new_tokens}" if min_new_tokens is not None else f"min_length={min_length}"
        raise InputError(
            f"{what} asks for at least {min_new} new tokens, but only {n_new} may be generated "
            f"(max_new_tokens / max_length): raise the limit or lower the minimum"
        )
    if not _is_int(num_beams) or num_beams < 1:
        raise InputError(f"num_beams must be an integer >= 1 (1: no beam search), got {num_beams!r}")
    if not _is_int(num_return_sequences) or num_return_sequences < 1:
        raise InputError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_beams > 1 and do_sample:
        raise InputError(
            "beam search with do_sample=True (beam sampling) is not implemented: use num_beams=1 to sample, or "
            "do_sample=False for beam search"
        )
    if num_beams > 1 and num_return_sequences > num_beams:
        raise InputError(
            f"num_return_sequences={num_return_sequences} is more than num_beams={num_beams}: beam search returns "
            "some of its beams; raise num_beams"
        )
    if num_beams == 1 and num_return_sequences > 1 and not do_sample:
        raise InputError(
            f"num_return_sequences={num_return_sequences} with greedy decoding would return the same sequence "
            f"{num_return_sequences} times: sample (do_sample=True) or use beam search (num_beams >= "
            f"{num_return_sequences})"
        )
    if not _is_real(length_penalty):
        raise InputError(f"length_penalty must be a finite number (1.0: the default), got {length_penalty!r}")
    if num_beams > 1 and n_new > 1:
        # A finished beam's score is divided by its new tokens ** length_penalty, in the logits'
        # dtype. Keep that divisor (or its inverse) within the square root of the dtype's range,
        # leaving the other half for the score itself: -1e300 would make it 0 (every score -inf),
        # 1e300 an OverflowError, and +-30 with 40 tokens (1e48) is beyond float32 already.
        limit = math.log(float(np.finfo(dtype).max)) / 2 / math.log(n_new)
        if abs(length_penalty) > limit:
            raise InputError(
                f"length_penalty={length_penalty!r} is too large for {n_new} new tokens: the scores are divided by "
                f"n_new_tokens ** length_penalty, which {np.dtype(dtype).name} cannot carry beyond "
                f"{n_new} ** {limit:.3g}; use a length_penalty between {-limit:.3g} and {limit:.3g}"
            )
    if not (_is_bool(early_stopping) or early_stopping == "never"):
        raise InputError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not do_sample:  # every setting is valid; one that sampling alone reads is a no-op here
        warn_unused_sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    return GenerationSettings(
        n_new=n_new,
        do_sample=bool(do_sample),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        min_p=None if min_p is None else float(min_p),
        repetition_penalty=float(repetition_penalty),
        no_repeat_ngram_size=int(no_repeat_ngram_size),
        bad_words_ids=check_bad_words(bad_words_ids),
        min_new_tokens=min_new,
        num_beams=int(num_beams),
        num_return_sequences=int(num_return_sequences),
        length_penalty=float(length_penalty),
        early_stopping=early_stopping if early_stopping == "never" else bool(early_stopping),
        stop_strings=check_stop_strings(stop_strings),
    )


def check_memory(cfg: Any, B: int, T: int, s: GenerationSettings, n_rows: int, dtype: Any) -> None:
    """Refuse, naming the size, a generation whose arrays cannot fit in memory (num_beams=2**40
    ended in MemoryError): B * n_rows rows, each with its key/value cache (2 x n_layer x (T + n)
    x n_embd), its scores and log-probs for every token (a few x vocab_size) and its tokens."""
    N, L = B * n_rows, T + s.n_new  # rows, their length at the end
    itemsize = np.dtype(dtype).itemsize
    need = N * (2 * cfg.n_layer * L * cfg.n_embd * itemsize + 4 * cfg.vocab_size * itemsize + 4 * L * 8)
    have = available_memory()
    if need > have:
        what = (
            f"num_beams={s.num_beams}"
            if s.num_beams >= s.num_return_sequences
            else f"num_return_sequences={s.num_return_sequences}"
        )
        raise InputError(
            f"{what} with {B} prompt(s) generates {N:,} rows at once, whose key/value cache and scores need about "
            f"{size(need)}; this machine has {size(have)} available: use fewer beams or sequences, or fewer prompts at a time"
        )


def check_bad_words(bad_words_ids: Any) -> tuple[tuple[int, ...], ...]:
    """None, or a non-empty list of non-empty lists of token ids (transformers' format)."""
    if bad_words_ids is None:
        return ()
    how = "bad_words_ids must be a non-empty list of words, each a non-empty list of token ids ([[id], [id, id]]),"
    if not isinstance(bad_words_ids, (list, tuple)) or not bad_words_ids:
        raise InputError(f"{how} got {bad_words_ids!r}")
    for word in bad_words_ids:
        if not isinstance(word, (list, tuple)) or not word or not all(_is_int(i) and i >= 0 for i in word):
            raise InputError(f"{how} got the word {word!r} (tokenizer.encode(' word') gives a word's ids)")
    return tuple(tuple(int(i) for i in word) for word in bad_words_ids)


def check_stop_strings(stop_strings: Any) -> tuple[str, ...]:
    if stop_strings is None:
        return ()
    strings = [stop_strings] if isinstance(stop_strings, str) else stop_strings
    if not isinstance(strings, (list, tuple)) or not strings or not all(isinstance(s, str) and s for s in strings):
        raise InputError(f"stop_strings must be a non-empty string or a non-empty list of them, got {stop_strings!r}")
    for i, s in enumerate(strings):  # matched as UTF-8 bytes: '\udcff' (a byte of argv that is not UTF-8) has none
        check_unicode(s, "stop_strings" if len(strings) == 1 else f"stop_strings[{i}]")
    return tuple(strings)


def check_streamer(streamer: Any, num_beams: int) -> None:
    if streamer is None:
        return
    if not (callable(streamer) or callable(getattr(streamer, "put", None))):
        raise InputError(
            f"streamer must be a function called with each step's new tokens, or an object with .put(tokens) (and "
            f"optionally .end()) like transformers' streamers; got {type(streamer).__name__}"
        )
    if num_beams > 1:
        raise InputError(
            "streamer cannot be used with beam search (num_beams > 1): the beams are only known when the search ends; "
            "read the returned sequences instead"
        )


@dataclass
class GenerateOutput:
    """What generate(return_dict_in_generate=True) returns, named and shaped as transformers'
    GenerateDecoderOnlyOutput / GenerateBeamDecoderOnlyOutput."""

    sequences: np.ndarray  # [B * R, T + n] prompt included (R = num_return_sequences)
    scores: tuple[np.ndarray, ...] | None = None  # per step [rows, V]: what the token was chosen from (output_scores)
    logits: tuple[np.ndarray, ...] | None = None  # per step [rows, V]: the model's raw logits (output_logits)
    sequences_scores: np.ndarray | None = None  # beam search with output_scores: [B * R] final beam scores
    beam_indices: np.ndarray | None = None  # beam search: [B * R, n] the row of each step's scores a token came from

    def __getitem__(self, key: str) -> Any:  # out["sequences"], as with transformers' outputs
        return getattr(self, key)


def generate(
    model: Any,  # a GPT2 (model.py imports this module, so it is not imported here)
    input_ids: ArrayLike,
    attention_mask: ArrayLike | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    eos_token_id: int | None = -1,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    seed: int | np.random.Generator | None = None,
    streamer: Any = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    bad_words_ids: list[list[int]] | None = None,
    min_length: int = 0,
    min_new_tokens: int | None = None,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    stop_strings: str | list[str] | None = None,
    tokenizer: Any = None,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    output_logits: bool = False,
) -> np.ndarray | GenerateOutput:
    """Continue each row of a left-padded batch; returns [B, T + n_new] ids, prompt included
    (fewer columns if every row finished early). A 1-D prompt gives a 1-D result.

    Every setting has transformers' name, default and meaning:
    - length: max_length counts the prompt, pads included (default 20); max_new_tokens counts
      only new tokens and wins when both are given. min_length / min_new_tokens: eos is banned
      until then.
    - choosing: greedy by default. do_sample=True draws from the logits after temperature,
      top_k (default 50), top_p and min_p; `seed` (an int or a numpy Generator) makes the draw
      reproducible. num_beams > 1: beam search (beam_search.py), with length_penalty and
      early_stopping (True, False or "never").
    - processors (processors.py), applied first: repetition_penalty, no_repeat_ngram_size,
      bad_words_ids ([[ids of a word], ...]).
    - num_return_sequences: R sequences per prompt, rows b * R .. b * R + R - 1 (sampling: R
      draws; beam search: the R best beams, best first).
    - stopping: eos_token_id defaults to the model's (50256; None disables stopping),
      pad_token_id (for finished rows) to eos; stop_strings (with tokenizer=) end a row whose
      text ends with one of them.
    - outputs: return_dict_in_generate=True returns a GenerateOutput with the sequences and,
      with output_scores / output_logits, each step's processed scores / raw logits (see
      compute_transition_scores). `streamer` is called with each step's [B] new tokens (or, if
      it has .put/.end like transformers' streamers, those); not with beam search.
    """
    cfg = model.config
    ids, one_sequence = check_input_ids(input_ids, cfg.vocab_size)
    mask = check_attention_mask(attention_mask, ids.shape)
    right_padded = np.flatnonzero(mask[:, -1] == 0)
    if right_padded.size:
        raise InputError(
            f"row {int(right_padded[0])} of attention_mask ends with padding (0): generation appends after the last "
            "column, so the batch must be padded on the left (tokenizer.padding_side = 'left')"
        )
    B, T = ids.shape
    s = check_generation_args(
        T,
        max_length,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        seed,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        bad_words_ids=bad_words_ids,
        min_length=min_length,
        min_new_tokens=min_new_tokens,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        stop_strings=stop_strings,
        dtype=model.dtype,
    )
    check_length(T + s.n_new, cfg.n_positions, f"the prompt ({T}) plus {s.n_new} new tokens")
    for name, flag in (
        ("use_cache", use_cache),
        ("return_dict_in_generate", return_dict_in_generate),
        ("output_scores", output_scores),
        ("output_logits", output_logits),
    ):
        if not _is_bool(flag):
            raise InputError(f"{name} must be True or False, got {flag!r}")
    check_streamer(streamer, s.num_beams)
    eos_from_config = _is_int(eos_token_id) and eos_token_id == -1
    eos = cfg.eos_token_id if eos_from_config else eos_token_id
    pad = eos if pad_token_id is None else pad_token_id
    for name, value in (("eos_token_id", eos), ("pad_token_id", pad)):
        if value is not None and (not _is_int(value) or not 0 <= value < cfg.vocab_size):
            # Say where a bad eos came from: the caller may never have passed one.
            origin = ""
            if name == "eos_token_id" and eos_from_config:
                origin = " (the model's config.eos_token_id; pass eos_token_id=None never to stop early, or a valid id)"
            raise InputError(f"{name} must be a token id in 0 .. {cfg.vocab_size - 1} or None, got {value!r}{origin}")
    if (eos is not None or s.stop_strings) and pad is None:
        raise InputError(
            "pad_token_id is needed to fill rows that finished (set it, or set eos_token_id=None and no stop_strings)"
        )
    for word in s.bad_words_ids:
        if max(word) >= cfg.vocab_size:
            raise InputError(f"bad_words_ids holds {list(word)}: token ids must lie in 0 .. {cfg.vocab_size - 1}")
        if eos is not None and word == (eos,):
            raise InputError(
                f"bad_words_ids holds [{eos}], the eos token: transformers silently ignores that word; to keep "
                "generation from ending early use min_new_tokens, or eos_token_id=None"
            )
    stop = make_stop_strings(s.stop_strings, tokenizer, cfg.vocab_size)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    n_rows = max(s.num_beams, s.num_return_sequences)  # rows per prompt (transformers' expand_size)
    check_memory(cfg, B, T, s, n_rows, model.dtype)
    processors = Processors(
        repetition_penalty=s.repetition_penalty,
        first_real=np.repeat(mask.argmax(axis=1), n_rows),  # [B * n_rows] the first 1 of each row's mask
        no_repeat_ngram_size=s.no_repeat_ngram_size,
        bad_words_ids=s.bad_words_ids,
        eos_token_id=eos,
        min_length=T + s.min_new_tokens if s.min_new_tokens else 0,
    )
    if s.num_beams > 1:
        beams = beam_search(
            model,
            ids,
            mask,
            s.n_new,
            s.num_beams,
            s.num_return_sequences,
            s.length_penalty,
            s.early_stopping,
            eos,
            pad,
            processors,
            stop,
            bool(use_cache),
            output_scores and return_dict_in_generate,
            output_logits and return_dict_in_generate,
        )
        out = GenerateOutput(
            beams.sequences,
            None if beams.scores is None else tuple(beams.scores),
            None if beams.logits is None else tuple(beams.logits),
            beams.sequences_scores if output_scores else None,
            beams.beam_indices,
        )
    else:
        out = decode(
            model,
            ids,
            mask,
            s,
            eos,
            pad,
            processors,
            stop,
            bool(use_cache),
            rng,
            streamer,
            output_scores and return_dict_in_generate,
            output_logits and return_dict_in_generate,
        )
    if one_sequence and len(out.sequences) == 1:
        out.sequences = out.sequences[0]
    return out if return_dict_in_generate else out.sequences


def make_stop_strings(stop_strings: tuple[str, ...], tokenizer: Any, vocab_size: int) -> StopStrings | None:
    if not stop_strings:
        return None
    if tokenizer is None:
        raise InputError(
            "stop_strings need the tokenizer, to see the text of the tokens: pass tokenizer=Tokenizer.from_pretrained(...) "
            "(as transformers' generate(stop_strings=..., tokenizer=...))"
        )
    if not callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        raise InputError(f"tokenizer must be a Tokenizer (with convert_ids_to_tokens), got {type(tokenizer).__name__}")
    if len(tokenizer) < vocab_size:
        raise InputError(
            f"the tokenizer has {len(tokenizer)} tokens and the model {vocab_size}: it cannot say what the others "
            "are, so stop_strings cannot be matched; pass the model's own tokenizer"
        )
    return StopStrings(list(stop_strings), tokenizer, vocab_size)


def decode(
    model: Any,
    ids: np.ndarray,  # [B, T]
    mask: np.ndarray,  # [B, T]
    s: GenerationSettings,
    eos: int | None,
    pad: int | None,
    processors: Processors,
    stop: StopStrings | None,
    use_cache: bool,
    rng: np.random.Generator,
    streamer: Any,
    output_scores: bool,
    output_logits: bool,
) -> GenerateOutput:
    """Greedy or sampled decoding, num_return_sequences rows per prompt."""
    cfg = model.config
    B, T = ids.shape
    n_new, R = s.n_new, s.num_return_sequences
    N = B * R  # rows: prompt b's R sequences are rows b * R .. b * R + R - 1
    tokens = np.empty((N, T + n_new), dtype=np.int64)  # the result, filled column by column
    tokens[:, :T] = np.repeat(ids, R, axis=0) if R > 1 else ids
    full_mask = np.ones((N, T + n_new), dtype=np.int64)  # generated tokens are all real: 1
    full_mask[:, :T] = np.repeat(mask, R, axis=0) if R > 1 else mask
    positions = position_ids_from_mask(mask)  # [B, T] pads don't count
    finished = np.zeros(N, dtype=bool)
    may_finish = eos is not None or stop is not None

    # The prompt in one pass, once per prompt even when it is continued R times.
    cache = (
        KVCache(cfg.n_layer, B, cfg.n_head, T + n_new if R == 1 else T, cfg.head_dim, model.dtype)
        if use_cache
        else None
    )
    logits = model.forward(ids, mask, positions, cache, logits_to_keep=1).logits[:, -1]  # [B, vocab]
    if R > 1:
        logits = np.repeat(logits, R, axis=0)  # [N, vocab]
        positions = np.repeat(positions, R, axis=0)  # [N, T]
        if cache is not None:
            cache = cache.repeat_rows(R, T + n_new)
    scores: list[np.ndarray] | None = [] if output_scores else None
    raw_logits: list[np.ndarray] | None = [] if output_logits else None
    n_done = 0
    for step in range(n_new):
        check_logits(logits, step)
        if raw_logits is not None:
            raw_logits.append(logits)
        if processors.active:
            logits = processors(logits, tokens[:, : T + step])
        if s.do_sample:
            logits = filter_logits(logits, s.temperature, s.top_k, s.top_p, s.min_p)
            next_tokens = sample(logits, rng)  # [N]
        else:
            next_tokens = greedy(logits)  # [N]
        if scores is not None:
            scores.append(logits)  # what the token was chosen from
        if may_finish:
            # pad is set whenever a row may finish (checked above); mypy cannot see that, hence the ignore
            next_tokens = np.where(finished, pad, next_tokens)  # type: ignore[arg-type]  # finished rows get padding
            if eos is not None:
                finished |= next_tokens == eos
        tokens[:, T + step] = next_tokens
        n_done = step + 1
        if stop is not None:
            finished |= stop(tokens[:, : T + n_done])
        _stream(streamer, next_tokens)
        if finished.all() or n_done == n_new:
            break
        length = T + n_done  # tokens so far; the new one sits at index length - 1
        if cache is not None:  # feed only the new token; its keys/values join the cache
            # The decode step: input [N, 1] (the token just chosen); its position [N, 1] is the
            # row's last prompt position + the steps taken (pads never count); the mask grows by
            # one column of 1s, [N, length]; attention's q is [N, H, 1, D] against the cache's
            # keys and values [N, H, length, D], and the additive mask is one row [N, 1, 1, length].
            step_positions = positions[:, -1:] + n_done  # [N, 1] last prompt position + steps taken
            out = model.forward(next_tokens[:, None], full_mask[:, :length], step_positions, cache, logits_to_keep=1)
        else:  # recompute everything: slower, same tokens (a check of the cache)
            out = model.forward(
                tokens[:, :length],
                full_mask[:, :length],
                position_ids_from_mask(full_mask[:, :length]),
                logits_to_keep=1,
            )
        logits = out.logits[:, -1]  # [N, vocab]
    _stream_end(streamer)
    return GenerateOutput(
        tokens[:, : T + n_done],
        None if scores is None else tuple(scores),
        None if raw_logits is None else tuple(raw_logits),
    )


def compute_transition_scores(
    sequences: ArrayLike,
    scores: tuple[np.ndarray, ...] | list[np.ndarray],
    beam_indices: ArrayLike | None = None,
    normalize_logits: bool = False,
) -> np.ndarray:
    """Each generated token's score at the step it was chosen: [rows, n_steps] (transformers'
    `compute_transition_scores`). `scores` is generate(..., return_dict_in_generate=True,
    output_scores=True).scores. With normalize_logits=True each step's scores go through
    log_softmax first: greedy and sampling's scores are logits, so that gives the token's
    log-probability (under the distribution it was drawn from, when sampling). Beam search's
    scores are log-probabilities already: pass its beam_indices (which row of each step's
    scores a token came from), and the sum of a sequence's transition scores divided by
    n_new_tokens ** length_penalty is its sequences_scores. Steps after a sequence ended are 0.
    """
    seqs = np.asarray(sequences)
    if seqs.ndim == 1:
        seqs = seqs[None]
    if not isinstance(scores, (tuple, list)) or not scores:
        raise InputError(
            "scores must be the per-step tuple of generate(..., return_dict_in_generate=True, output_scores=True).scores"
        )
    stacked = np.stack(scores)  # [n_steps, rows, V]
    n_steps, rows, V = stacked.shape
    if normalize_logits:
        stacked = log_softmax(stacked.reshape(-1, V)).reshape(stacked.shape)
    if beam_indices is None:  # greedy / sampling: row i's token at step t comes from row i of step t
        index = np.broadcast_to(np.arange(rows)[:, None], (rows, n_steps))
    else:
        index = np.asarray(beam_indices)
    if index.ndim != 2 or index.shape[0] != len(seqs):
        raise InputError(f"beam_indices has shape {list(index.shape)}; it must be [{len(seqs)}, steps]")
    ended = index < 0  # [rows, steps] after the sequence's end
    n = int((~ended).sum(axis=-1).max())  # the longest sequence's new tokens
    index, ended = np.where(ended, 0, index)[:, :n], ended[:, :n]
    new_tokens = seqs[:, seqs.shape[1] - n :]  # [rows, n]
    steps = np.broadcast_to(np.arange(n), index.shape)
    out = stacked[steps, index, new_tokens]  # [rows, n] the chosen token's score at each step
    return np.where(ended, 0, out).astype(stacked.dtype)


def _stream(streamer: Any, next_tokens: np.ndarray) -> None:
    if streamer is None:
        return
    if hasattr(streamer, "put"):
        streamer.put(next_tokens)
    else:
        streamer(next_tokens)


def _stream_end(streamer: Any) -> None:
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
