"""`gpt2np explain`: batched GPT-2 inference, step by step, with the numbers the code produces.

Each step calls the library (the tokenizer, masks.py, layers.softmax, attention.attention,
the model) and prints what came back; nothing shown is typed in by hand. The steps follow
the way a batch really goes through gpt2np:

    tokens -> padding -> left-padding -> positions -> mask -> softmax -> empty-rows -> generate

and then `block` opens the forward pass: one token's path through block 0, every number read
from model.run_with_cache; `decode` one generation step through the KV cache, its shapes and
positions; `parameters` the parameter count; `gelu` GPT-2's tanh GELU against the erf form;
`bpe` how the words became tokens (gpt2np/bpe.py). Every step from empty-rows on but bpe needs
the model's weights; without them the others still run, and the command says how to get them.
"""

from __future__ import annotations

import argparse
import copy
import math
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..attention import attention
from ..bpe import BPE, split_words
from ..errors import InputError, ModelNotFoundError
from ..hooks import Hooks
from ..inputs import check_input_ids
from ..kv_cache import KVCache
from ..layers import softmax
from ..masks import MASK_FILLS, build_attention_mask, position_ids_from_mask, resolve_fill
from ..plain import gelu as plain_gelu
from .common import add_model_args, load_model_and_tokenizer, with_random_model_hint

SEED_SENTENCES = ("It will rain in the", "I want to eat a big bowl of", "My dog is")
PAD_LABEL = "[pad]"


# --- small formatting helpers --------------------------------------------------------------


def fmt_number(x: float) -> str:
    """0.125 -> '0.125', -inf -> '-inf', nan -> 'nan', -1e9 -> '-1e+09', finfo.min -> '-3.4e+38'."""
    if not np.isfinite(x):
        return str(float(x))  # 'nan', '-inf'
    if x == 0:
        return "0"
    if abs(x) >= 1e5:
        return f"{x:.2g}"
    return f"{x:.3f}"


def fmt_row(values, width: int = 8) -> str:
    return "".join(f"{fmt_number(v):>{width}}" for v in values)


def fmt_array(a: np.ndarray) -> str:
    """An integer array as NumPy prints it, indented under its name."""
    return "    " + np.array2string(np.asarray(a), max_line_width=110).replace("\n", "\n    ")


def token_labels(tok, ids, mask) -> list[str]:
    """The BPE piece of each token ("Ġ" is a space), PAD_LABEL where the mask is 0."""
    pieces = tok.convert_ids_to_tokens(ids)
    return [piece if m else PAD_LABEL for piece, m in zip(pieces, mask)]


def fmt_matrix(matrix: np.ndarray, labels: list[str], width: int = 7) -> str:
    """A [T, T] query x key matrix, rows labelled 'i token', columns by key index (wider
    columns when a cell needs them, e.g. -3.4e+38)."""
    width = max(width, 2 + max(len(fmt_number(v)) for v in np.ravel(matrix)))
    label_width = max(len(f"{i} {s}") for i, s in enumerate(labels))
    corner = "  query \\ key"
    lines = [f"{corner:<{label_width + 8}}" + "".join(f"{j:>{width}}" for j in range(len(labels)))]
    for i, label in enumerate(labels):
        lines.append(f"  query {f'{i} {label}':<{label_width}}" + fmt_row(matrix[i], width))
    return "\n".join(lines)


def left_padded(tok, sentences) -> tuple[np.ndarray, np.ndarray]:
    """The batch as generation needs it: padded on the left, with eos as the pad."""
    tok = copy.copy(tok)  # leave the caller's tokenizer settings alone
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(list(sentences), padding=True)
    return batch["input_ids"], batch["attention_mask"]


def demo_row(attention_mask: np.ndarray) -> int:
    """The sequence the mask steps show: the first one with padding (else the first)."""
    padded = np.flatnonzero(attention_mask[:, 0] == 0)
    return int(padded[0]) if padded.size else 0


# --- the steps -----------------------------------------------------------------------------


def show_tokens(tok, sentences) -> str:
    lines = [
        "GPT-2 reads token ids, not characters. Its byte-level BPE cuts each sentence into pieces",
        '("Ġ" is how the vocabulary writes a space: it belongs to the word after it):',
    ]
    for s in sentences:
        ids = tok.encode(s)
        pieces = tok.convert_ids_to_tokens(ids)
        width = max(len(p) for p in pieces + [str(i) for i in ids]) + 2
        lines.append(f"  {s!r}: {len(ids)} token{'' if len(ids) == 1 else 's'}")
        lines.append("    " + "".join(f"{p:>{width}}" for p in pieces))
        lines.append("    " + "".join(f"{i:>{width}}" for i in ids))
    return "\n".join(lines)


def show_padding(tok, sentences) -> str:
    rows = [tok.encode(s) for s in sentences]
    lines = [
        f"The rows have {', '.join(str(len(r)) for r in rows)} tokens. The model works on one [batch, sequence] array,"
    ]
    try:
        array = np.asarray(rows)
    except ValueError as e:  # NumPy refuses a ragged list of lists
        lines += [
            "and a ragged list is not a rectangle. NumPy refuses it (np.asarray(rows) raises",
            f"ValueError: {str(e).split('.')[0]}), and so does the model, which checks its input first:",
        ]
    else:
        lines += [
            f"and these happen to be equal, so np.asarray(rows) already has shape {list(array.shape)}:",
            "no padding is needed. Give sentences of different lengths to see why it usually is.",
        ]
        return "\n".join(lines)
    try:
        check_input_ids(rows, tok.vocab_size)
    except InputError as e:
        lines.append(f"    InputError: {e}")
    try:
        tok(list(sentences))  # padding=False
    except InputError as e:
        lines += ["The tokenizer, asked for a batch without padding, says the same:", f"    InputError: {e}"]
    return "\n".join(lines)


def show_left_padding(tok, sentences) -> str:
    ids, mask = left_padded(tok, sentences)
    B, T = ids.shape
    right = copy.copy(tok)
    right.padding_side, right.pad_token = "right", right.eos_token
    right_batch = right(list(sentences), padding=True)  # the same batch padded on the other side
    right_last, right_pads = (
        right_batch["input_ids"][:, -1],
        np.flatnonzero(right_batch["attention_mask"][:, -1] == 0),
    )  # [B], rows
    last_left = ids[:, -1]  # [B] the column generation continues from
    return "\n".join(
        [
            f"GPT-2 has no pad token, so the end-of-text token {tok.eos_token!r} (id {tok.eos_token_id}) is reused as the pad.",
            f"Each row is filled up to the longest ({T} tokens); the attention mask says which cells are real (1) or pads (0).",
            "tok.padding_side = 'left'; tok.pad_token = tok.eos_token; batch = tok(sentences, padding=True):",
            f"  input_ids  [{B}, {T}]",
            fmt_array(ids),
            f"  attention_mask  [{B}, {T}]",
            fmt_array(mask),
            "Why on the left: the next token is predicted from the last column, and generation appends",
            "a new column on the right. Padded on the right, the last column would hold",
            f"    {right_last.tolist()}  "
            + (
                f"(pads in rows {right_pads.tolist()}: those rows would continue from a pad)"
                if right_pads.size
                else "(no row is padded here, so both sides agree)"
            ),
            "Padded on the left it holds every row's own last token:",
            f"    {last_left.tolist()} = {[tok.decode([i]) for i in last_left]}",
        ]
    )


def show_positions(tok, sentences) -> str:
    ids, mask = left_padded(tok, sentences)
    positions = position_ids_from_mask(mask)  # [B, T]
    naive = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)  # [B, T] what arange would give
    row = int(np.argmin(mask.sum(axis=1)))  # the most padded row
    real = mask[row] == 1
    lines = [
        "GPT-2 adds a learned vector per position (wpe) to each token's embedding. A real token's",
        "position must not count the pads in front of it, so positions come from the mask,",
        "cumsum(attention_mask) - 1, with pads set to 0 (no real token ever reads them):",
        f"  position_ids  [{ids.shape[0]}, {ids.shape[1]}]",
        fmt_array(positions),
    ]
    if real.all():
        return "\n".join(lines + [f"No row is padded, so these are just arange({ids.shape[1]})."])
    return "\n".join(
        lines
        + [
            f"With plain arange({ids.shape[1]}), {sentences[row]!r} would sit at positions {naive[row][real].tolist()}",
            f"instead of {positions[row][real].tolist()}: the model would read it as if other words came before it.",
        ]
    )


def fill_label(mask_fill, dtype) -> str:
    """'-inf' for the fill -inf; 'min = -3.4e+38 (float32)' for a named fill and its value."""
    value = fmt_number(resolve_fill(mask_fill, dtype))
    return value if str(mask_fill) == value else f"{mask_fill} = {value} in {np.dtype(dtype)}"


def show_mask(tok, sentences, row: int, mask_fill="-inf", dtype=np.float32) -> str:
    ids, mask = left_padded(tok, sentences)
    T = ids.shape[1]
    additive = build_attention_mask(mask, T, resolve_fill(mask_fill, dtype), dtype)  # [B, 1, T, T]
    labels = token_labels(tok, ids[row], mask[row])
    # [n] the queries that see nothing; empty_rows is None when no row of the batch is padded
    empty = np.flatnonzero(additive.empty_rows[row, 0, :, 0]) if additive.empty_rows is not None else np.array([], int)
    return "\n".join(
        [
            "Attention scores every (query, key) pair of tokens. Two kinds of pair are forbidden: a key in",
            "the future (causal) and a key that is a pad. build_attention_mask turns both into ONE additive",
            f"mask, 0 where allowed and the fill (here {fill_label(mask_fill, dtype)}) where forbidden, added to the scores before",
            f"softmax. Row {row} of the batch ({sentences[row]!r}), mask [{T}, {T}]:",
            fmt_matrix(additive.additive[row, 0], labels, width=6),
            f"Queries {empty.tolist()} are pads: their own key is a pad, and so is every key before them,"
            if empty.size
            else "No query of this row is a pad: only the causal part of the mask forbids anything.",
            "so their whole row is forbidden. The next two steps show why that matters." if empty.size else "",
        ]
    ).rstrip()


def demo_scores(T: int, dtype=np.float32) -> np.ndarray:
    """Made-up attention scores for one query (any numbers would do): [T] of dtype."""
    return np.random.default_rng(0).standard_normal(T).astype(dtype).round(2)


def describe_difference(diff: float, dtype=np.float32) -> str:
    """Say 'rounding' rather than print a last-digit number that varies from CPU to CPU."""
    if diff == 0:
        return "0"
    return (
        f"{np.dtype(dtype)} rounding only (below 1e-6; that sum also adds the zeros)" if diff < 1e-6 else f"{diff:.1e}"
    )


def column_width(*rows, least: int = 8) -> int:
    """Wide enough for every number of `rows` plus two spaces (-3.4e+38 needs 10)."""
    return max(least, 2 + max(len(fmt_number(v)) for r in rows for v in r))


def show_softmax(tok, sentences, row: int, mask_fill="-inf", dtype=np.float32) -> str:
    ids, mask = left_padded(tok, sentences)
    T = ids.shape[1]
    fill = resolve_fill(mask_fill, dtype)
    additive = build_attention_mask(mask, T, fill, dtype).additive[row, 0]  # [T, T]
    query = T - 1  # the last token: it may see every real token
    scores = demo_scores(T, dtype)  # [T]
    masked = scores + additive[query]  # [T] forbidden keys -> -inf
    probs = softmax(masked.copy())  # [T] (softmax works in place)
    real = mask[row] == 1
    alone = softmax(scores[real].copy())  # [n_real] the same row with the pad keys simply deleted
    diff = float(np.abs(probs[real] - alone).max())
    w = column_width(additive[query], masked)
    why_zero = (
        "exp(-inf) = 0"
        if fill == -np.inf
        else f"exp(score {fmt_number(fill)} - max) underflows to 0 in {np.dtype(dtype)}"
    )
    return "\n".join(
        [
            f"Query {query} (the last token of row {row}) with made-up scores, one per key:",
            f"  scores            {fmt_row(scores, w)}",
            f"  + mask row {query}      {fmt_row(additive[query], w)}",
            f"  = masked scores   {fmt_row(masked, w)}",
            f"  softmax           {fmt_row(probs, w)}   (sum {probs.sum():.6f})",
            f"{why_zero}, so the pads get weight exactly 0 and the real keys share all of it. Softmax of",
            f"the real keys' scores alone, with the pad keys deleted:  {fmt_row(alone).strip()}",
            f"Largest difference: {describe_difference(diff, dtype)}. Masking a key is the same as deleting it.",
        ]
    )


def forbidden_row_softmax(mask_row: np.ndarray, query: int, scores: np.ndarray, dtype) -> dict[str, np.ndarray]:
    """{fill: softmax(scores + mask row `query`)} in dtype: what a forbidden row turns into."""
    T = mask_row.shape[0]
    rows = {}
    for name in MASK_FILLS:
        full = build_attention_mask(mask_row[None, :], T, resolve_fill(name, dtype), dtype).additive  # [1, 1, T, T]
        additive = full[0, 0, query]  # [T]
        rows[name] = softmax(scores + additive)  # [T]
    return rows


def fill_rows(rows: dict[str, np.ndarray], dtype) -> list[str]:
    return [
        f"  fill {name + ' = ' + fmt_number(resolve_fill(name, dtype)):<17} softmax = {fmt_row(probs, 7)}"
        for name, probs in rows.items()
    ]


def finite_fills_story(rows: dict[str, np.ndarray], scores: np.ndarray, dtype) -> list[str]:
    """What the finite fills did to the forbidden row, in this dtype: uniform, or (for -1e9 in
    float64) softmax(scores) itself, the mask lost to rounding never having happened."""
    uniform = [name for name, p in rows.items() if name != "-inf" and np.ptp(p) == 0]
    kept = [name for name, p in rows.items() if name != "-inf" and np.ptp(p) != 0]
    lines = []
    if uniform:
        lines += [
            f"With {' and '.join(uniform)}, the scores all round to the same huge negative number and the row is uniform:",
            "an average over keys this token must not see, including future ones.",
        ]
    for name in kept:
        fill = resolve_fill(name, dtype)
        gap = float(np.spacing(np.abs(np.asarray(fill, dtype))))  # distance between neighbouring numbers near the fill
        diff = float(np.abs(rows[name] - softmax(scores.copy())).max())
        lines += [
            f"With {name}, the row is softmax(scores) itself (max difference {diff:.0e}), as if nothing were masked:",
            f"{dtype} numbers near {fmt_number(fill)} are {gap:.2g} apart, so score + ({fmt_number(fill)}) keeps the scores'",
            (
                f"differences, and softmax ignores a shift. In float32 they are {float(np.spacing(np.float32(abs(fill)))):.2g} "
                "apart and the differences vanish."
            ),
        ]
    return lines


def attention_demo(mask_row: np.ndarray, dtype=np.float32) -> tuple[dict, np.ndarray]:
    """gpt2np's own attention on small random q, k, v for one masked sequence, with each fill.
    Returns {fill: (output [T, D], weights [T, T])} and the rows that may see nothing."""
    T, D = mask_row.shape[0], 4
    q, k, v = np.random.default_rng(0).standard_normal((3, 1, 1, T, D)).astype(dtype)  # 3 x [1, 1, T, D]
    results = {}
    for name in MASK_FILLS:
        m = build_attention_mask(mask_row[None, :], T, resolve_fill(name, dtype), dtype)
        out, probs = attention(q, k, v, m, scale=1 / np.sqrt(D))  # [1, 1, T, D], [1, 1, T, T]
        results[name] = (out[0, 0], probs[0, 0])
    # (the ignore: the caller passes a padded row, so some query sees nothing and empty_rows is set)
    empty = build_attention_mask(mask_row[None, :], T, -np.inf, dtype).empty_rows[0, 0, :, 0]  # type: ignore[index]
    return results, empty


def logits_across_fills(model, ids, mask) -> dict[str, float]:
    """max |logits(fill) - logits(min)| over real tokens, for each fill, from the real model."""
    from ..model import GPT2

    real = mask == 1  # [B, T]
    logits = {
        f: GPT2(model.config, model.weights, dtype=model.dtype, mask_fill=f)(ids, attention_mask=mask).logits[real]
        for f in MASK_FILLS
    }
    return {f: float(np.abs(logits[f] - logits["min"]).max()) for f in MASK_FILLS}


def show_empty_rows(tok, sentences, row: int, model, model_problem: str | None, dtype=np.float32) -> str:
    ids, mask = left_padded(tok, sentences)
    T = ids.shape[1]
    if mask[row].all():
        return (
            f"Row {row} has no padding, so none of its queries is left with nothing to see; choose a padded row "
            "with --row, or give sentences of different lengths."
        )
    query = 0  # a left pad: it may see no key at all
    scores = demo_scores(T, dtype)
    rows = forbidden_row_softmax(mask[row], query, scores, dtype)
    results, empty = attention_demo(mask[row], dtype)
    out, probs = results["-inf"]
    diffs = {f: float(np.abs(results[f][1] - probs).max()) for f in MASK_FILLS}
    lines = [
        f"Query {query} of row {row} is a pad; every key it could see is forbidden. The same made-up scores,",
        f"masked with each fill, through gpt2np's softmax (layers.softmax), in {np.dtype(dtype)}:",
        *fill_rows(rows, dtype),
        "With -inf, every score is -inf, max - max = -inf - (-inf) = NaN, and the whole row is NaN (0/0).",
        *finite_fills_story(rows, scores, np.dtype(dtype)),
        "None of these means anything, and a NaN spreads: next layer, every real token multiplies this",
        "pad's value by its weight 0, and 0 * NaN = NaN.",
        "",
        "gpt2np's attention (attention.attention) defines the row instead: a query with nothing to see",
        f"attends to nothing (weights 0, output 0). On random q, k, v [1, 1, {T}, 4] with fill -inf:",
        fmt_matrix(probs, token_labels(tok, ids[row], mask[row]), width=6),
        f"  empty rows (mask.empty_rows): {np.flatnonzero(empty).tolist()}; largest |output| of those rows: {np.abs(out[empty]).max()}",
        f"  NaN anywhere in the output: {bool(np.isnan(out).any())}",
        f"  max |weights(fill) - weights(-inf)|: {', '.join(f'{f} {d}' for f, d in diffs.items())}",
    ]
    if model is not None:
        lines += [
            "The model, on this batch: max |logits(fill) - logits(min)| over the real tokens:",
            "  " + ", ".join(f"{f} {d}" for f, d in logits_across_fills(model, ids, mask).items()),
            "Real tokens never look at pads, so every fill gives the same numbers.",
        ]
    else:
        lines += [f"(That the model's real-token logits are identical for every fill needs the model: {model_problem})"]
    return "\n".join(lines)


def until_eos(tokens: np.ndarray, eos: int) -> list[int]:
    """New tokens up to and including the first eos (a finished row is then padded)."""
    ids: list[int] = tokens.tolist()
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def show_generation(tok, sentences, model, max_new_tokens: int) -> str:
    ids, mask = left_padded(tok, sentences)
    T = ids.shape[1]
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id
    )  # [B, T + n]
    lines = [
        f"model.generate(input_ids, attention_mask, max_new_tokens={max_new_tokens}): one forward pass over the prompt,",
        "then one token per step through the KV cache, the most likely token each time (greedy):",
        f"  new tokens  [{out.shape[0]}, {out.shape[1] - T}]",
        fmt_array(out[:, T:]),
    ]
    same = []
    for i, s in enumerate(sentences):
        lines.append(f"  {s!r} -> {tok.decode(out[i, T:], skip_special_tokens=True)!r}")
        alone_ids, alone_mask = left_padded(tok, [s])
        alone_out = model.generate(alone_ids, attention_mask=alone_mask, max_new_tokens=max_new_tokens)  # [1, T1 + n]
        alone = alone_out[0, alone_ids.shape[1] :]  # [n]
        same.append(until_eos(alone, tok.eos_token_id) == until_eos(out[i, T:], tok.eos_token_id))
    lines.append(f"Each sentence generated alone (no padding) gives the same tokens as in the batch: {same}")
    return "\n".join(lines)


def fmt_vector(v: np.ndarray, n: int = 6) -> str:
    """The first n numbers of a vector, and how many there are: '[0.123 -1.5 ... ] (768)'."""
    head = " ".join(f"{x:.3f}" for x in v[:n])
    return f"[{head}{' ...' if v.shape[0] > n else ''}] ({v.shape[0]})"


def show_block(tok, sentences, row: int, model) -> str:
    """The last token of `row` through block 0, then ln_f, the logits and the next token."""
    ids, mask = left_padded(tok, sentences)
    cfg = model.config
    T, t = ids.shape[1], ids.shape[1] - 1  # the row's last token: always real with left padding
    logits, c = model.run_with_cache(ids, attention_mask=mask)  # every activation point, by name
    labels = token_labels(tok, ids[row], mask[row])
    position = int(position_ids_from_mask(mask)[row, t])
    b = "blocks.0."

    def at(name):  # the token's own vector at a point
        return c[name][row, t]

    def line(label, vector, name):
        return f"  {label:<28}{fmt_vector(vector):<54} {name}"

    q, k, v = c[b + "attn.hook_q"][row], c[b + "attn.hook_k"][row], c[b + "attn.hook_v"][row]  # [T, H, D]
    raw = (k[:, 0] @ q[t, 0]) * model.scale(0)  # [Tk] head 0: q . k_j * scale, from the cached q and k
    additive = build_attention_mask(mask, T, model.fill, model.dtype).additive[row, 0, t]  # [Tk]
    scores, pattern = c[b + "attn.hook_attn_scores"][row, 0, t], c[b + "attn.hook_pattern"][row, 0, t]  # [Tk]
    x = at(b + "hook_resid_pre")
    pre, post = at(b + "mlp.hook_pre"), at(b + "mlp.hook_post")
    negative = pre < 0
    top = np.argsort(logits[row, t])[::-1][:5]  # [5] the most likely next tokens
    probs = softmax(logits[row, t].astype(np.float64))  # [V]
    first = model.generate(ids, attention_mask=mask, max_new_tokens=1, pad_token_id=tok.pad_token_id)[row, -1]
    width = 9
    lines = [
        f"Token {t} of row {row}, {labels[t]!r} (id {ids[row, t]}, position id {position}), through block 0 of {cfg.n_layer}.",
        f"C = {cfg.n_embd} numbers per token, {cfg.n_head} heads of D = {cfg.head_dim}, MLP width F = {cfg.mlp_width}. Each vector",
        "is read from model.run_with_cache (its name on the right); the first 6 numbers are shown.",
        line(f"wte[{ids[row, t]}]", at("hook_embed"), "hook_embed"),
        line(f"+ wpe[{position}]", at("hook_pos_embed"), "hook_pos_embed"),
        line("= x, the residual stream", x, b + "hook_resid_pre"),
        line("(x - mean) / std", (x - x.mean()) / x.std(), "(LayerNorm before its gain and bias)"),
        line("ln_1(x)", at(b + "ln1.hook_normalized"), b + "ln1.hook_normalized"),
        f"c_attn(ln_1(x)): {3 * cfg.n_embd} numbers, cut into q, k, v of C each, and each into {cfg.n_head} heads of D:",
        *[
            line(f"{name} head {h}", a[t, h], f"{b}attn.hook_{name}")
            for name, a in (("q", q), ("k", k), ("v", v))
            for h in range(min(2, cfg.n_head))
        ],
        f"Head 0: this token's query against the key of every token j (scale {model.scale(0):.4g} = 1/sqrt(D)):",
        f"  {'key j':<28}" + "".join(f"{label[: width - 1]:>{width}}" for label in labels),
        f"  {'q . k_j * scale':<28}" + fmt_row(raw, width),
        f"  {'+ mask (fill: pads, future)':<28}" + fmt_row(additive, width),
        f"  {'= scores':<28}" + fmt_row(scores, width) + f"   {b}attn.hook_attn_scores",
        f"  {'softmax':<28}" + fmt_row(pattern, width) + f"   {b}attn.hook_pattern (sum {pattern.sum():.3f})",
        line("z = weights @ v, head 0", c[b + "attn.hook_z"][row, t, 0], b + "attn.hook_z"),
        f"The {cfg.n_head} heads' z side by side ({cfg.n_embd} numbers) go through c_proj, and back into the residual stream:",
        line("attention output", at(b + "hook_attn_out"), b + "hook_attn_out"),
        line("x + attention output", at(b + "hook_resid_mid"), b + "hook_resid_mid"),
        line("ln_2", at(b + "ln2.hook_normalized"), b + "ln2.hook_normalized"),
        line("c_fc: widen to F", pre, b + "mlp.hook_pre"),
        line("GELU", post, b + "mlp.hook_post"),
        (
            f"  ({int(negative.sum())} of {pre.size} are negative before GELU; after it they lie in "
            f"[{post[negative].min() if negative.any() else 0:.3f}, 0]: GELU passes positives, squashes negatives towards 0)"
        ),
        line("c_proj: back to C", at(b + "hook_mlp_out"), b + "hook_mlp_out"),
        line("x + MLP output", at(b + "hook_resid_post"), b + "hook_resid_post"),
        {1: "The model has one block; then:", 2: "Block 1 does the same with its own weights; then:"}.get(
            cfg.n_layer, f"Blocks 1 .. {cfg.n_layer - 1} do the same with their own weights; then:"
        ),
        line("ln_f", at("ln_final.hook_normalized"), "ln_final.hook_normalized"),
        line("logits = ln_f . wte", logits[row, t], "logits (one score per token)"),
        "The most likely next tokens (softmax of the logits):",
        *[
            f"  {tok.convert_ids_to_tokens([int(i)])[0]!r:>16} id {int(i):>5}  logit {logits[row, t, i]:7.3f}  p = {probs[i]:.3f}"
            for i in top
        ],
        f"Next token: {tok.decode([int(top[0])])!r}; model.generate picks {tok.decode([int(first)])!r} for {sentences[row]!r}.",
    ]
    return "\n".join(lines)


def shape(a) -> str:
    return "[" + ", ".join(str(n) for n in np.shape(a)) + "]"


def show_decode(tok, sentences, row: int, model) -> str:
    """One decode step: the prompt once into the KV cache, then one new token per row through it,
    with every shape and position read from the arrays that took part."""
    ids, mask = left_padded(tok, sentences)
    cfg = model.config
    B, T = ids.shape
    positions = position_ids_from_mask(mask)  # [B, T]
    cache = KVCache(cfg.n_layer, B, cfg.n_head, T + 1, cfg.head_dim, model.dtype)
    new = model.forward(ids, mask, positions, cache, logits_to_keep=1).logits[:, -1].argmax(-1)  # [B] greedy
    filled = cache.length
    step_ids = new[:, None]  # [B, 1] only the new tokens go in
    step_mask = np.concatenate([mask, np.ones((B, 1), mask.dtype)], axis=1)  # [B, T + 1] one column of 1s more
    step_positions = positions[:, -1:] + 1  # [B, 1] each row's last position + 1
    b = "blocks.0."
    hooks = Hooks(model.activation_names(), record=[b + "attn.hook_q", b + "attn.hook_pattern"], dtype=model.dtype)
    step = model.forward(step_ids, step_mask, step_positions, cache, logits_to_keep=1, hook=hooks).logits  # [B, 1, V]
    keys = cache.keys[0, :, :, : cache.length]  # [B, H, T + 1, D] block 0's keys after the step
    additive = build_attention_mask(step_mask, 1, model.fill, model.dtype).additive  # [B, 1, 1, T + 1]
    q, weights = hooks.cache[b + "attn.hook_q"], hooks.cache[b + "attn.hook_pattern"]
    again = model(np.concatenate([ids, step_ids], axis=1), attention_mask=step_mask).logits[:, -1]  # [B, V] no cache
    labels = token_labels(tok, np.concatenate([ids[row], new[row : row + 1]]), step_mask[row])
    width = 9

    def line(label, value, note):
        return f"  {label:<26}{value:<18}{note}"

    return "\n".join(
        [
            f"The prompt, {shape(ids)} ids, ran once with a KVCache (model.forward(..., cache)): each of the",
            f"{cfg.n_layer} blocks stored its keys and values of the {T} columns.",
            line(
                "cache.keys, .values", shape(cache.keys), f"[n_layer, B, H, room, D]: {filled} filled, room for 1 more"
            ),
            "Greedy picked one token per row; the decode step feeds only those:",
            line(
                "input_ids",
                shape(step_ids),
                f"{[int(i) for i in new]} ({', '.join(repr(tok.decode([int(i)])) for i in new)})",
            ),
            line(
                "position_ids",
                shape(step_positions),
                f"{[int(p) for p in step_positions[:, 0]]}: each row's last position + 1 (pads never count)",
            ),
            line(
                "attention_mask",
                shape(step_mask),
                f"one column of 1s appended; row {row}: {' '.join(str(int(m)) for m in step_mask[row])}",
            ),
            "In each block (block 0 read here):",
            line(
                "q",
                shape(q.swapaxes(1, 2)),
                f"[B, H, 1, D]: one query per row and head, the new token's (hook_q: {shape(q)})",
            ),
            line(
                "k, v after cache.update",
                shape(keys),
                f"[B, H, {T} + 1, D]: the cached ones and this token's, written in place",
            ),
            line("the additive mask", shape(additive), "its one new row: the new token may see every real token"),
            line("softmax weights", shape(weights), f"[B, H, 1, {T} + 1] ({b}attn.hook_pattern)"),
            f"  {'key j':<26}" + "".join(f"{label[: width - 1]:>{width}}" for label in labels),
            f"  {f'row {row}: + mask':<26}" + fmt_row(additive[row, 0, 0], width),
            f"  {f'row {row}: head 0 weights':<26}" + fmt_row(weights[row, 0, 0], width),
            line("logits", shape(step), "[B, 1, V]: the next token's scores, for each row"),
            f"Re-running all {T + 1} columns without the cache gives the same next tokens: "
            + ("yes" if (again.argmax(-1) == step[:, 0].argmax(-1)).all() else "NO"),
            f"and the same logits within 1e-4: {'yes' if np.abs(again - step[:, 0]).max() <= 1e-4 else 'NO'}. The step computed",
            f"q, k, v and the MLP for 1 token per row instead of {T + 1}; only attention reads all {T + 1} keys.",
        ]
    )


def show_parameters(model) -> str:
    """The parameter count, from the arrays the model holds: per tensor, per block, in total."""
    w, cfg = model.weights, model.config

    def row(name, shape_text, n):
        return f"  {name:<28}{shape_text:>22}{n:>14,}"

    def linear(layer):
        n_in, n_out = layer.weight.shape
        return f"{n_in} x {n_out} + {n_out}", layer.weight.size + layer.bias.size

    def norm(ln):
        return f"2 x {ln.weight.size}", ln.weight.size + ln.bias.size

    def parts(b):  # (name, shape, count) of each tensor pair of block b
        return [
            ("ln_1 (gain, bias)", *norm(b.ln_1)),
            ("attn.c_attn (q, k, v)", *linear(b.attn.c_attn)),
            ("attn.c_proj", *linear(b.attn.c_proj)),
            ("ln_2", *norm(b.ln_2)),
            ("mlp.c_fc", *linear(b.mlp.c_fc)),
            ("mlp.c_proj", *linear(b.mlp.c_proj)),
        ]

    first = parts(w.h[0])
    per_block = sum(n for _, _, n in first)
    blocks = sum(n for b in w.h for _, _, n in parts(b))  # every block counted, not block 0 times n_layer
    mlp = first[4][2] + first[5][2]
    total = sum(a.size for a in w.arrays())  # every array once: a tied lm_head is wte, not counted twice
    if w.lm_head is w.wte:
        head = "  lm_head                     tied: it is wte, no parameters of its own"
    else:
        head = row("lm_head (untied)", f"{w.lm_head.shape[0]} x {w.lm_head.shape[1]}", w.lm_head.size)
    sizes = f"{cfg.n_layer} blocks of C = {cfg.n_embd}, F = {cfg.mlp_width}; a vocabulary of {cfg.vocab_size}"
    lines = [
        f"{sizes}; {cfg.n_positions} positions:",
        row("wte (token embeddings)", f"{w.wte.shape[0]} x {w.wte.shape[1]}", w.wte.size),
        row("wpe (position embeddings)", f"{w.wpe.shape[0]} x {w.wpe.shape[1]}", w.wpe.size),
        "  one block:",
        *[row("  " + name, text, n) for name, text, n in first],
        row("  = one block", "", per_block),
        row(f"{cfg.n_layer} blocks", "", blocks),
        row("ln_f", *norm(w.ln_f)),
        head,
        row("total", "", total),
        f"The MLP is {mlp / per_block:.0%} of a block; the embeddings are {(w.wte.size + w.wpe.size) / total:.0%} of the model.",
        *memory_to_train(total, cfg),
    ]
    return "\n".join(lines)


def mib(n_bytes: int) -> str:
    """Bytes in MiB, with a decimal below 10 MiB (a small model's figures stay distinct)."""
    return f"{n_bytes / 2**20:,.1f} MiB" if n_bytes < 10 * 2**20 else f"{n_bytes / 2**20:,.0f} MiB"


def memory_to_train(total: int, cfg) -> list[str]:
    """What training with AdamW in float32 holds: weights, gradients, AdamW's two moments, and
    the activations GPT2.loss_and_grads keeps at B = 4, T = context (backward.block_forward's:
    each block's input and stream after attention in float64, qkv, z and the MLP's input in
    float32; with gradient checkpointing, the inputs only)."""

    B, T, C = 4, cfg.n_positions, cfg.n_embd
    F = cfg.n_inner or 4 * C
    per_token = 8 * C + 4 * 3 * C + 4 * C + 8 * C + 4 * F  # x, qkv, z, x1, pre: bytes per token and layer
    kept, inputs = cfg.n_layer * B * T * per_token, cfg.n_layer * B * T * C * 8
    return [
        "Memory to train it in float32 with AdamW (4 bytes a number):",
        f"  weights {mib(4 * total)}, gradients {mib(4 * total)}, AdamW's two moments {mib(8 * total)}: {mib(16 * total)} in all;",
        f"  and the activations loss_and_grads keeps at B x T = {B} x {T}: each block's input and stream after",
        f"  attention (float64), qkv, z and the MLP's input (float32): {cfg.n_layer} x {B} x {T} x {per_token:,} bytes = {mib(kept)};",
        f"  with gradient checkpointing only each block's input, {mib(inputs)}, and each block's forward run twice;",
        "  plus one block's work arrays at a time.",
    ]


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), in float64 (math.erf per number)."""
    erf = np.frompyfunc(math.erf, 1, 1)
    x64 = np.asarray(x, dtype=np.float64)
    return 0.5 * x64 * (1 + np.asarray(erf(x64 / math.sqrt(2)), dtype=np.float64))


def show_gelu(tok, sentences, model) -> str:
    """GPT-2's tanh GELU against the exact erf form: the functions, then the whole model with each."""
    xs = np.array([-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0])
    tanh_form, erf_form = plain_gelu(xs.copy()), gelu_erf(xs)
    grid = np.linspace(-6, 6, 120001)
    gap = np.abs(plain_gelu(grid.copy()) - gelu_erf(grid))
    ids, mask = left_padded(tok, sentences)
    pre: dict[str, np.ndarray] = {}

    def keep_pre(x, name):
        pre[name.rsplit(".", 1)[0]] = x.copy()

    def erf_post(x, name):
        return gelu_erf(pre[name.rsplit(".", 1)[0]]).astype(x.dtype)

    hooks = [(lambda n: n.endswith("mlp.hook_pre"), keep_pre), (lambda n: n.endswith("mlp.hook_post"), erf_post)]
    with_erf = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=hooks)  # [B, T, V]
    with_tanh = model(ids, attention_mask=mask).logits  # [B, T, V]
    real = mask.astype(bool)
    diff = float(np.abs(with_erf[real] - with_tanh[real]).max())
    same = bool((with_erf[:, -1].argmax(-1) == with_tanh[:, -1].argmax(-1)).all())
    width = 8
    return "\n".join(
        [
            "GELU(x) = x * Phi(x), Phi the standard normal's CDF: 0.5 * x * (1 + erf(x / sqrt(2))). GPT-2 was",
            "trained with the tanh approximation 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))),",
            'so that is what it must run with (transformers: "gelu_new"):',
            f"  {'x':<20}" + fmt_row(xs, width),
            f"  {'tanh form (GPT-2)':<20}" + fmt_row(tanh_form, width),
            f"  {'erf form (exact)':<20}" + fmt_row(erf_form, width),
            f"Largest |tanh - erf| over [-6, 6]: {gap.max():.1e}, at x = {grid[gap.argmax()]:.2f}.",
            "The whole model with the erf form in every MLP (run_with_hooks replacing each mlp.hook_post):",
            f"  the logits move by up to {diff:.0e} at the real positions; the next tokens the same: {'yes' if same else 'NO'}.",
            "Small, but not rounding: the erf form is another function, and a cross-check against gpt2np",
            "names it at blocks.0.mlp.hook_post (docs/cross-checking.md plants exactly this bug).",
        ]
    )


def show_bpe(tok, sentences) -> str:
    """How the batch's word with the most merges became tokens, by gpt2np/bpe.py's plain BPE, shown
    with the words of the sentence it comes from."""
    bpe = BPE.gpt2()
    pairs = [(s, w) for s in sentences for w in split_words(s)]
    sentence, word = max(pairs, key=lambda p: (len(bpe.merge_steps(p[1])), len(p[1])))  # the most merges
    steps = bpe.merge_steps(word)
    lines = [
        f"Words of {sentence!r} (a word keeps the space before it): "
        + " ".join(repr(w) for w in split_words(sentence)),
        f"{word!r}, the batch's word with the most merges: its UTF-8 bytes, each as one character (the",
        "space is 'Ġ'), then each merge of the adjacent pair that comes first in merges.txt (its rank: 0",
        "is the first line after the header):",
        f"  {' '.join(steps[0])}",
    ]
    for before, after in pairwise(steps):
        i = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)  # where the pair was joined
        pair = (before[i], before[i + 1])
        lines.append(f"  {' '.join(after):<28}merged {pair[0]!r} + {pair[1]!r} (rank {bpe.rank[pair]})")
    ids = [bpe.vocab[piece] for piece in steps[-1]]
    lines.append(f"No adjacent pair left in merges.txt: tokens {steps[-1]}, ids {ids}.")
    same = all(bpe.encode(s) == tok.encode(s) for s in sentences)
    lines.append(
        f"Every sentence, by this plain BPE and by the tokenizers library: the same ids: {'yes' if same else 'NO'}."
    )
    return "\n".join(lines)


def show_backward(tok, sentences, row: int, model) -> str:
    """The loss of the batch, the gradient's size at a few points of one row, and a finite-
    difference check of one weight, all in float64 (the model's weights, converted)."""
    from ..backward import placed_targets
    from ..labels import labels_from_mask
    from ..model import GPT2
    from ..weights import named_parameters, weights_from_tensors

    cfg = model.config
    tensors = named_parameters(model.weights)  # the untied lm_head too
    m = GPT2(cfg, weights_from_tensors(tensors, cfg, dtype="float64", check_values=False), "float64", model.mask_fill)
    ids, mask = left_padded(tok, sentences)
    labels = labels_from_mask(ids, mask)
    points = [
        "logits",
        "ln_final.hook_normalized",
        f"blocks.{cfg.n_layer - 1}.hook_resid_post",
        "blocks.0.hook_resid_pre",
        "hook_embed",
    ]
    _, cache = m.run_with_cache(ids, attention_mask=mask, names_filter=points, labels=labels, incl_bwd=True)
    loss, grads = m.loss_and_grads(ids, labels, mask)
    n = int(placed_targets(labels, ids, mask, cfg.vocab_size)[1].sum())
    pieces = token_labels(tok, ids[row], mask[row])
    width = max(9, *(len(p) + 2 for p in pieces))
    lines = [
        "Labels from the mask (gpt2np.labels.labels_from_mask): each real token after a real token is its own",
        "label; pads and each row's first real token get -100 (nothing real predicts them):",
        f"  row {row}: " + " ".join(str(v) for v in labels[row]),
        f"The loss, the mean of -log p(label) over the {n} labels counted: {loss:.4f}",
        f"The gradient of the loss at a few points, row {row}: its length |g| at each token (float64).",
        "Backpropagation reaches them in this order, from the loss down:",
        " " * 28 + "".join(f"{p:>{width}}" for p in pieces),
    ]
    for point in points:
        g = cache[point + "_grad"][row]  # [T, ...]
        norms = np.sqrt((g.reshape(g.shape[0], -1) ** 2).sum(axis=-1))  # [T]
        lines.append(f"  {point:<26}" + "".join(f"{v:>{width}.2e}" if v else f"{'0':>{width}}" for v in norms))
    lines.append("The pads get none: nothing counted reads them (the empty-row rule has a backward too); nor does")
    lines.append("the last token: it predicts nothing in this batch, and no other token reads it.")
    name, index, h = "transformer.h.0.mlp.c_fc.weight", (0, 0), 1e-6
    w = m.weights.h[0].mlp.c_fc.weight
    old = w[index]
    steps = []
    for step in (h, -h):
        w[index] = old + step
        steps.append(float(m(ids, attention_mask=mask, labels=labels).loss or 0.0))  # .loss is set: labels given
    w[index] = old
    lines += [
        f"A finite-difference check of one weight, {name}[0, 0] (h = {h:g}):",
        f"  backpropagation             {grads[name][index]: .6e}",
        f"  (L(w + h) - L(w - h)) / 2h  {(steps[0] - steps[1]) / (2 * h): .6e}",
    ]
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------

# name: (title, where the code is: the plain page's function first (gpt2np/plain.py, bpe.py: the
# formula to read), then its fast twin, which is what runs; tests/test_plain.py holds them equal).
# The order is docs/how-it-works.md's, so a step's number is its section's.
STEPS = {
    "tokens": ("Tokens and ids", "plain: gpt2np/bpe.py: BPE.encode; fast: gpt2np/tokenizer.py: Tokenizer.encode"),
    "bpe": ("BPE: how text became tokens", "plain: gpt2np/bpe.py: BPE.encode"),
    "padding": ("Why padding is needed", "gpt2np/tokenizer.py: Tokenizer.__call__, gpt2np/inputs.py: check_input_ids"),
    "left-padding": ("Left padding, pad = eos", "gpt2np/tokenizer.py: Tokenizer.__call__"),
    "positions": (
        "Position ids from the mask",
        "plain: gpt2np/plain.py: forward; fast: gpt2np/masks.py: position_ids_from_mask",
    ),
    "mask": (
        "The additive attention mask",
        "plain: gpt2np/plain.py: additive_mask; fast: gpt2np/masks.py: build_attention_mask",
    ),
    "softmax": ("Softmax of a masked row", "plain: gpt2np/plain.py: softmax; fast: gpt2np/layers.py: softmax"),
    "empty-rows": (
        "A row with nothing to see: -inf, -1e9, min",
        "plain: gpt2np/plain.py: attention; fast: gpt2np/attention.py: attention, gpt2np/masks.py: resolve_fill",
    ),
    "parameters": ("Where the parameters are", "gpt2np/weights.py: Weights"),
    "gelu": ("GELU: GPT-2's tanh form and the exact erf", "plain: gpt2np/plain.py: gelu; fast: gpt2np/layers.py: gelu"),
    "block": (
        "Inside block 0: one token's path",
        "plain: gpt2np/plain.py: block; fast: gpt2np/model.py: GPT2.block, gpt2np/attention.py: self_attention",
    ),
    "generate": (
        "Greedy generation of the batch",
        "plain: gpt2np/plain.py: generate; fast: gpt2np/generation.py: generate",
    ),
    "decode": (
        "One decode step through the KV cache",
        "fast only (plain.generate re-runs the whole sequence): gpt2np/generation.py: decode, gpt2np/kv_cache.py",
    ),
    "backward": (
        "Backpropagation: the loss and its gradients",
        "plain: gpt2np/plain_backward.py: loss_and_grads; fast: gpt2np/backward.py: loss_and_grads",
    ),
}
NEEDS_MODEL = (
    "empty-rows",
    "generate",
    "block",
    "decode",
    "parameters",
    "gelu",
    "backward",
)  # empty-rows: only its last check


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="walk through batched inference step by step, with the real numbers",
        description="Batched GPT-2 inference step by step: tokens, padding, masks, positions, softmax, the -inf/NaN "
        "question, generation. Every number shown is computed by gpt2np.",
    )
    p.add_argument(
        "sentences", nargs="*", help=f"sentences to batch (default: {', '.join(repr(s) for s in SEED_SENTENCES)})"
    )
    add_model_args(p, default_fill="-inf")  # the exact value: the mask then reads "forbidden"
    p.add_argument("--max-new-tokens", type=int, default=10, help="tokens to generate per sentence (default 10)")
    p.add_argument(
        "--step", action="append", choices=list(STEPS), help="show only this step (repeatable; default: all)"
    )
    p.add_argument(
        "--row", type=int, default=None, help="sequence shown by the mask steps (default: the first padded one)"
    )
    p.set_defaults(run=cmd_explain)


def load_tokenizer(args):
    from ..tokenizer import Tokenizer

    try:
        return Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
    except ModelNotFoundError as e:
        how = (
            ""
            if "--tokenizer" in str(e)
            else " (pass --tokenizer FOLDER, a folder with vocab.json + merges.txt or tokenizer.json)"
        )
        raise ModelNotFoundError(f"explain needs a tokenizer even without a model: {e}{how}") from None


def load_model_or_reason(args):
    """(model, None), or (None, what to do) when the weights are not on this machine."""
    try:
        model, _ = load_model_and_tokenizer(args)
    except ModelNotFoundError as e:
        problem = str(e)
        looks_like_path = args.model.startswith((".", "/", "~")) or ("/" in args.model and Path(args.model).exists())
        if "gpt2np download" not in problem and not looks_like_path:  # a name: download can fetch it
            problem += f" Get the weights with `gpt2np download {args.model}` and run explain again."
        return None, with_random_model_hint(problem)
    return model, None


def cmd_explain(args: argparse.Namespace) -> int:
    sentences = args.sentences or list(SEED_SENTENCES)
    if any(not s for s in sentences):
        raise InputError("a sentence is empty; every sentence needs at least one token")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    tok = load_tokenizer(args)
    _, mask = left_padded(tok, sentences)
    row = demo_row(mask) if args.row is None else args.row
    if not 0 <= row < len(sentences):
        raise InputError(f"--row {row} is not a sequence of the batch; give 0 .. {len(sentences) - 1}")
    steps = args.step or list(STEPS)
    model, problem = load_model_or_reason(args) if any(s in NEEDS_MODEL for s in steps) else (None, None)
    for number, name in enumerate(STEPS, start=1):
        if name not in steps:
            continue
        title, code = STEPS[name]
        print(f"== {number}. {title} ==  [{code}]")
        if name == "tokens":
            print(show_tokens(tok, sentences))
        elif name == "padding":
            print(show_padding(tok, sentences))
        elif name == "left-padding":
            print(show_left_padding(tok, sentences))
        elif name == "positions":
            print(show_positions(tok, sentences))
        elif name == "mask":
            print(show_mask(tok, sentences, row, args.mask_fill, np.dtype(args.dtype)))
        elif name == "softmax":
            print(show_softmax(tok, sentences, row, args.mask_fill, np.dtype(args.dtype)))
        elif name == "empty-rows":
            print(show_empty_rows(tok, sentences, row, model, problem, np.dtype(args.dtype)))
        elif name == "bpe":
            print(show_bpe(tok, sentences))
        elif model is None:
            what = {
                "generate": "Generation needs",
                "block": "Looking inside a block needs",
                "decode": "A decode step needs",
                "parameters": "Counting the parameters needs",
                "backward": "Backpropagation needs",
            }.get(name, "Running the model with either GELU needs")
            print(f"{what} the model's weights, and they are not on this machine (the steps above needed")
            print(f"only the tokenizer):\n  {problem}")
        elif name == "generate":
            print(show_generation(tok, sentences, model, args.max_new_tokens))
        elif name == "block":
            print(show_block(tok, sentences, row, model))
        elif name == "decode":
            print(show_decode(tok, sentences, row, model))
        elif name == "parameters":
            print(show_parameters(model))
        elif name == "backward":
            print(show_backward(tok, sentences, row, model))
        else:
            print(show_gelu(tok, sentences, model))
        print()
    return 0
