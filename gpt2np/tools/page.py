"""`gpt2np page`: one self-contained HTML page of a forward pass, to look at in a browser.

    gpt2np page "It will rain in the" "My dog is" --model gpt2 --out seed.html

The prompts become one left-padded batch, as `generate` makes it. This module runs the model
and gathers what the page shows; page.html (beside this file) draws it. The data goes into the
page as JSON, the arrays as base64 float32, so the file needs nothing else: no network, no CDN,
it opens from file:// in any current browser. On the page:

- the batch: each row's tokens (pads marked, "␣" for a leading space), attention mask, position
  ids, and its additive [T, T] mask (allowed, forbidden as future, forbidden as a pad);
- attention: every head of every chosen layer as a small heatmap (hook_pattern, the softmax
  weights); a click enlarges one with its tokens on both axes; hovering a cell names the query,
  the key and the weight, or says "masked"; pads can be hidden;
- the fills: what a pad's query row would hold under -inf (NaN), -1e9 and min (a uniform row in
  float32) without gpt2np's empty-row rule, which makes it 0; real tokens' weights under each
  fill, compared with this page's (the same);
- the logit lens: for every layer and position, the top next tokens (ln_f and the output layer
  applied to the residual stream there);
- the next token at each row's last position, from the full logits: temperature, top-k and
  top-p recomputed in the page as gpt2np's (and transformers') sampling does.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import plain
from ..errors import GPT2npError, InputError
from ..hub import KNOWN_FILES, resolve_model_files, sha256_of
from ..layers import layer_norm, lm_head
from ..masks import position_ids_from_mask
from ..model import GPT2
from .common import add_model_args, load_model_and_tokenizer, read_prompts
from .explain import left_padded
from .overwrite import add_overwrite_flag, check_out_file, model_files
from .plot import mask_categories

TEMPLATE = Path(__file__).with_name("page.html")
MAX_TOKENS = 64  # a row's padded length: the heatmaps are T x T cells each
MAX_ROWS = 8
MAX_BYTES = 16 * 2**20  # what the page may hold: small enough to mail
LENS_TOP = 5  # tokens per logit-lens cell
NEXT_TOP = 50  # token strings shipped for the next-token view (its order does not depend on T)
FILLS = ("-inf", "-1e9", "min")  # the fills the page compares


def shown_token(tok, token_id: int) -> str:
    """A token as a reader should see it: its text, with "␣" for a leading space and "↵" for a
    newline. A token that is part of a character (its bytes alone are not UTF-8) shows its BPE piece."""
    text = tok.decode([token_id])
    if "\ufffd" in text:
        return tok.convert_ids_to_tokens([token_id])[0]
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def f32(a: np.ndarray) -> str:
    """An array as base64 of its float32 bytes, little-endian (JavaScript's Float32Array)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def estimated_bytes(rows: int, tokens: int, layers: int, heads: int, vocab: int) -> int:
    """What the page's arrays take, base64: the weights of every shown head, the fills' pad rows
    (at most as many again, three times) and each row's last logits."""
    weights = layers * rows * heads * tokens * tokens * 4  # [L, B, H, T, T] float32
    return (4 * weights + rows * vocab * 4) * 4 // 3


def check_size(rows: int, tokens: int, layers: list[int], heads: int, vocab: int) -> None:
    if rows > MAX_ROWS:
        raise InputError(f"the page takes at most {MAX_ROWS} prompts, got {rows}: give fewer")
    if tokens > MAX_TOKENS:
        raise InputError(
            f"the longest prompt is {tokens} tokens; the page draws T x T cells per head and takes at most "
            f"{MAX_TOKENS} tokens: give shorter prompts"
        )
    size = estimated_bytes(rows, tokens, len(layers), heads, vocab)
    if size > MAX_BYTES:
        raise InputError(
            f"the page would hold {size / 2**20:.1f} MB ({rows} rows x {tokens}^2 tokens x {len(layers)} layers x "
            f"{heads} heads); at most {MAX_BYTES // 2**20} MB: give fewer or shorter prompts, or fewer --layers"
        )


def raw_softmax(scores: np.ndarray) -> np.ndarray:
    """plain.softmax of the masked scores, without the empty-row rule: what a pad's query row
    would hold (NaN under -inf: its row is all -inf, and -inf - -inf = NaN)."""
    with np.errstate(invalid="ignore"):
        return plain.softmax(scores)


def weights_note(model_name: str) -> tuple[bool, str]:
    """(published, a sentence): whether the model's checkpoint is one of GPT-2's published files
    (size, then sha256), so the page can say when its predictions are those of random weights."""
    try:
        path = resolve_model_files(model_name, verify=False, local_files_only=True)["model.safetensors"]
    except (GPT2npError, OSError):  # the model loaded; where it came from is only for this note
        return False, "weights whose origin this page could not check"
    size = path.stat().st_size
    for (repo, filename), (known_size, digest) in KNOWN_FILES.items():
        if filename == "model.safetensors" and size == known_size and sha256_of(path) == digest:
            return True, f"{repo}'s published weights (sha256 {digest[:12]}...)"
    return False, (
        "not GPT-2's published weights (a random model from `gpt2np random-model`, or weights of your own): "
        "unless they were trained, the attention patterns and predictions below mean nothing about language; "
        "the mechanics (mask, positions, softmax, the fills) are exactly GPT-2's"
    )


def js_number(x: float) -> float | str:
    """JSON has no -inf: such a number goes as the string JavaScript's Number() reads."""
    x = float(x)
    return x if np.isfinite(x) else {np.inf: "Infinity", -np.inf: "-Infinity"}.get(x, "NaN")


def fill_name(mask_fill: str | float) -> str:
    return mask_fill if isinstance(mask_fill, str) else repr(float(mask_fill))


def page_data(
    model: GPT2, tok, prompts: list[str], layers: list[int] | None = None, model_name: str = ""
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready values (arrays as base64 float32)."""
    cfg = model.config
    layers = list(range(cfg.n_layer)) if layers is None else layers
    ids, mask = left_padded(tok, prompts)  # [B, T] each
    B, T = ids.shape
    check_size(B, T, layers, cfg.n_head, cfg.vocab_size)
    positions = position_ids_from_mask(mask)  # [B, T] as the model derives them

    def pattern_and_scores(m: GPT2) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        wanted = [f"blocks.{i}.attn.{p}" for i in layers for p in ("hook_pattern", "hook_attn_scores")]
        wanted += [f"blocks.{i}.hook_resid_pre" for i in range(cfg.n_layer)] + [
            f"blocks.{cfg.n_layer - 1}.hook_resid_post"
        ]
        logits, cache = m.run_with_cache(ids, attention_mask=mask, names_filter=wanted)
        pattern = np.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in layers])  # [L, B, H, T, T]
        scores = np.stack([cache[f"blocks.{i}.attn.hook_attn_scores"] for i in layers])  # [L, B, H, T, T]
        return logits, pattern, scores, cache

    logits, pattern, _, cache = pattern_and_scores(model)
    pad_queries = [(b, q) for b in range(B) for q in range(T) if mask[b, q] == 0]  # [P] (row, query)
    real = mask.astype(bool)  # [B, T]
    fills: dict[str, Any] = {}
    for name in FILLS:
        other = GPT2(cfg, model.weights, dtype=model.dtype, mask_fill=name)  # the same weights, another fill
        _, p, s, _ = pattern_and_scores(other)
        raw = raw_softmax(s)  # [L, B, H, T, T] without the empty-row rule
        pad_rows = np.stack([raw[:, b, :, q] for b, q in pad_queries], axis=2) if pad_queries else raw[:, 0, :, :0]
        diff = np.abs(p - pattern).transpose(1, 3, 0, 2, 4)[real]  # [real queries, L, H, T]
        fills[name] = {
            "pad_rows": f32(pad_rows),  # [L, H, P, T]
            "fill": js_number(other.fill),
            "real_max_diff": float(diff.max()) if diff.size else 0.0,
        }

    # The logit lens: ln_f and the output layer applied to the stream before each block and after the last.
    streams = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(cfg.n_layer)]
    streams.append(cache[f"blocks.{cfg.n_layer - 1}.hook_resid_post"])  # [B, T, C] each, L + 1 of them
    lens_ids, lens_probs = [], []
    for x in streams:
        z = lm_head(layer_norm(x, model.weights.ln_f, cfg.layer_norm_epsilon), model.weights.lm_head)  # [B, T, V]
        z = z.astype(np.float64)
        probs = np.exp(z - z.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)  # [B, T, V]
        top = np.argsort(-probs, axis=-1, kind="stable")[..., :LENS_TOP]  # [B, T, 5]
        lens_ids.append(top.tolist())
        lens_probs.append(np.take_along_axis(probs, top, axis=-1).tolist())

    last = logits[:, -1, :]  # [B, V] every row's last column is a real token (left padding)
    next_top = np.argsort(-last, axis=-1, kind="stable")[:, :NEXT_TOP]  # [B, 50]
    vocab_ids = {int(i) for i in np.ravel(ids)} | {int(i) for i in np.ravel(next_top)}
    vocab_ids |= {int(i) for i in np.ravel(lens_ids)}
    categories = mask_categories(mask)  # [B, T, T] allowed / future / pad
    published, note = weights_note(model_name) if model_name else (False, "weights given in Python")
    return {
        "model": model_name,
        "published": published,
        "weights_note": note,
        "dtype": str(model.dtype),
        "fill": fill_name(model.mask_fill),
        "fill_value": js_number(model.fill),
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "vocab_size": cfg.vocab_size,
        "layers": layers,
        "B": B,
        "T": T,
        "prompts": prompts,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "position_ids": positions.tolist(),
        "mask_categories": categories.tolist(),
        "pattern": f32(pattern),  # [L, B, H, T, T]
        "pad_queries": [[int(b), int(q)] for b, q in pad_queries],
        "fills": fills,
        "lens_ids": lens_ids,  # [L + 1][B][T][5]
        "lens_probs": lens_probs,
        "last_logits": f32(last),  # [B, V]
        "next_top": next_top.tolist(),  # [B][50]
        "pieces": {str(i): tok.convert_ids_to_tokens([i])[0] for i in sorted(vocab_ids)},
        "shown": {str(i): shown_token(tok, i) for i in sorted(vocab_ids)},
    }


def render(data: dict[str, Any]) -> str:
    """The page: the template with the data in it. "</" is escaped so no string in the data can
    end the script element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.read_text(encoding="utf-8").replace("/*DATA*/{}", text)


def is_page(path: Path) -> bool:
    """Was this file written by `gpt2np page`? (the template's first two lines)"""
    with open(path, "rb") as f:
        return f.read(200).startswith(TEMPLATE.read_bytes()[:80])


def write_page(path: Path, html: str) -> None:
    """Written to a temporary name and renamed: never a half-written page."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)


# --- the command ---------------------------------------------------------------------------


def layer_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of layer numbers") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "page",
        help="one self-contained HTML page of a forward pass: every head, the mask, the logit lens, the next token",
        description="Write one HTML file (no network needed: data, scripts and styles inside) showing the prompts' "
        "left-padded batch, its masks, every attention head, what each mask fill does to a pad's row, the logit "
        "lens and the next token with temperature, top-k and top-p. Open it in a browser.",
    )
    p.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--layers", type=layer_list, default=None, help="layers to show, e.g. 0,5,11 (default: all)")
    add_overwrite_flag(p, "--out")
    add_model_args(p)
    p.set_defaults(run=cmd_page)


def cmd_page(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    if any(not s for s in prompts):
        raise InputError("a prompt is empty; every prompt needs at least one token")
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the HTML file's name, e.g. {out / 'page.html'}")
    out = Path(
        check_out_file(
            args.out,
            overwrite=args.overwrite,
            protected=model_files(args.model, args.tokenizer),
            is_ours=is_page,
            ours="a page `gpt2np page` wrote",
        )
    )  # the overwrite rule (docs/errors.md): a page of ours is replaced; anything else needs --overwrite
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    model, tok = load_model_and_tokenizer(args)
    layers = args.layers
    if layers is not None:
        bad = [i for i in layers if not 0 <= i < model.config.n_layer]
        if bad or not layers:
            raise InputError(f"--layers: the model has layers 0 .. {model.config.n_layer - 1}; got {args.layers}")
    html = render(page_data(model, tok, prompts, layers, model_name=str(args.model)))
    write_page(out, html)
    print(f"wrote {out} ({len(html.encode()) / 1e6:.2f} MB): open it in a browser")
    return 0
