"""`gpt2np plot`: pictures of the attention mask of a padded batch and of attention weights.

- mask.png: for every sequence of the left-padded batch, its [T, T] mask, each cell coloured
  by why it is allowed or not: allowed, forbidden because the key is in the future (causal),
  or forbidden because a pad is involved (highlighted). Built from masks.build_attention_mask.
- attention_L{layer}_H{head}.png: the softmax weights of one head for one sequence, rows =
  queries, columns = keys, labelled with the tokens. Pads' rows and columns come out 0.

matplotlib is an optional extra (`pip install -e '.[plot]'`). We draw on a bare Figure with
the Agg canvas (PNG, no window, no pyplot global state), so it works on servers and in threads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import GPT2npError, InputError, ModelNotFoundError
from ..masks import build_attention_mask
from .common import add_model_args, load_model_and_tokenizer
from .explain import PAD_LABEL, SEED_SENTENCES, left_padded, token_labels
from .overwrite import add_overwrite_flag, check_out_file

ALLOWED, FUTURE, PAD = 0, 1, 2  # what each mask cell is
CATEGORY_COLORS = ("#3b7dd8", "#e4e4e4", "#f39c12")  # blue, light grey, orange (pads stand out)
CATEGORY_NAMES = ("allowed", "future (causal)", "pad")


def require_matplotlib():
    """matplotlib's Figure and Agg canvas, or a clear error saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise GPT2npError(
            f"gpt2np plot draws with matplotlib, which is not installed ({e}); pip install -e '.[plot]'"
        ) from None
    return Figure, FigureCanvasAgg


def mask_categories(attention_mask: np.ndarray) -> np.ndarray:
    """[B, T] 0/1 mask -> [B, T, T] cell categories (ALLOWED, FUTURE or PAD), from the real mask.

    A forbidden cell is PAD when its key or its query is a pad (a pad query may see nothing),
    FUTURE otherwise."""
    B, T = attention_mask.shape
    additive = build_attention_mask(attention_mask, T, -np.inf, np.float32).additive[:, 0]  # [B, T, T]
    allowed = additive == 0  # [B, T, T]
    pad = attention_mask == 0  # [B, T]
    involves_pad = pad[:, :, None] | pad[:, None, :]  # [B, T(query), T(key)]
    return np.where(allowed, ALLOWED, np.where(involves_pad, PAD, FUTURE))


def label_axes(ax, labels: list[str]) -> None:
    """Tokens on both axes (keys along the top reading down, queries down the side); pads grey."""
    T = len(labels)
    ax.set_xticks(range(T), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(T), labels, fontsize=8)
    for tick in ax.get_xticklabels() + ax.get_yticklabels():
        if tick.get_text() == PAD_LABEL:
            tick.set_color("#b36b00")
    ax.set_xlabel("key (attended to)", fontsize=8)
    ax.set_ylabel("query (attending)", fontsize=8)


def save(fig, path: Path, dpi: int) -> Path:
    _, FigureCanvasAgg = require_matplotlib()
    FigureCanvasAgg(fig)  # attach the Agg canvas: PNG rendering without any GUI backend
    fig.savefig(path, dpi=dpi, metadata={"Software": SOFTWARE})  # what says, later, that gpt2np drew it
    return path


SOFTWARE = "gpt2np plot"  # the PNG's Software text, written before its pixels


def is_our_png(path: Path) -> bool:
    """A picture `gpt2np plot` drew (the overwrite rule: only those are replaced without --overwrite)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and b"Software\x00" + SOFTWARE.encode() in head


def plot_masks(tok, input_ids: np.ndarray, attention_mask: np.ndarray, path, dpi: int = 100) -> Path:
    """One panel per sequence: its [T, T] mask, allowed / future / pad, labelled with tokens."""
    Figure, _ = require_matplotlib()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    categories = mask_categories(attention_mask)  # [B, T, T]
    B, T = input_ids.shape
    panel = max(2.5, 0.3 * T + 1.2)  # inches per panel: room for the token labels
    fig = Figure(figsize=(panel * B, panel + 1.0), layout="constrained")
    axes = fig.subplots(1, B, squeeze=False)[0]
    cmap = ListedColormap(CATEGORY_COLORS)
    for b, ax in enumerate(axes):
        ax.imshow(categories[b], cmap=cmap, vmin=0, vmax=len(CATEGORY_COLORS) - 1)
        label_axes(ax, token_labels(tok, input_ids[b], attention_mask[b]))
        real = attention_mask[b] == 1
        ax.set_title(f"row {b}: {tok.decode(input_ids[b][real])!r}\n{int((~real).sum())} pads", fontsize=9)
    present = np.unique(categories)  # only the kinds of cell this batch has
    fig.legend(
        handles=[Patch(color=CATEGORY_COLORS[c], label=CATEGORY_NAMES[c]) for c in present],
        loc="outside lower center",
        ncols=len(present),
        fontsize=8,
    )
    fig.suptitle("attention mask of the left-padded batch (padding + causal)", fontsize=10)
    return save(fig, Path(path), dpi)


def plot_attention(
    tok, ids: np.ndarray, mask: np.ndarray, weights: np.ndarray, layer: int, head: int, path, dpi: int = 100
) -> Path:
    """One head's [T, T] softmax weights for one sequence, labelled with its tokens."""
    Figure, _ = require_matplotlib()
    T = len(ids)
    side = max(3.5, 0.4 * T + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
    label_axes(ax, token_labels(tok, ids, mask))
    if T <= 16:  # few enough cells to print each weight
        for q in range(T):
            for k in range(T):
                color = "black" if weights[q, k] > 0.6 else "white"
                ax.text(k, q, f"{weights[q, k]:.2f}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    ax.set_title(f"layer {layer}, head {head}: {tok.decode(ids[mask == 1])!r}", fontsize=9)
    return save(fig, Path(path), dpi)


def check_indices(values, limit: int, what: str) -> list[int]:
    bad = [v for v in values if not 0 <= v < limit]
    if bad:
        raise InputError(f"{what} {bad[0]} does not exist: the model has {limit} {what}s, numbered 0 .. {limit - 1}")
    return list(values)


def plot_attentions(
    model, tok, input_ids, attention_mask, sequence: int, layers, heads, out_dir, dpi: int = 100
) -> list[Path]:
    """attention_L{l}_H{h}.png for every chosen layer and head, for one sequence of the batch."""
    layers = check_indices(layers, model.config.n_layer, "layer")
    heads = check_indices(heads, model.config.n_head, "head")
    out = model(input_ids, attention_mask=attention_mask, output_attentions=True)  # attentions: n_layer x [B, H, T, T]
    paths = []
    for layer in layers:
        for head in heads:
            weights = out.attentions[layer][sequence, head]  # [T, T]
            path = Path(out_dir) / f"attention_L{layer}_H{head}.png"
            paths.append(
                plot_attention(tok, input_ids[sequence], attention_mask[sequence], weights, layer, head, path, dpi)
            )
    return paths


# --- the command ---------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG pictures of the batch's attention mask and of attention weights",
        description="Write DIR/mask.png (the padded batch's masks: padding + causal, pads highlighted) and "
        "DIR/attention_L{layer}_H{head}.png (one head's weights for one sequence, labelled with tokens). "
        "Needs matplotlib: pip install -e '.[plot]'.",
    )
    p.add_argument(
        "sentences", nargs="*", help=f"sentences to batch (default: {', '.join(repr(s) for s in SEED_SENTENCES)})"
    )
    p.add_argument("--out", required=True, help="folder to write the PNGs into (created if needed)")
    p.add_argument("--layers", type=int, nargs="+", default=[0], help="layers to draw attention for (default: 0)")
    p.add_argument(
        "--heads", type=int, nargs="+", default=[0], help="heads to draw in each of those layers (default: 0)"
    )
    p.add_argument("--sequence", type=int, default=0, help="which sentence's attention to draw (default: 0, the first)")
    p.add_argument("--mask-only", action="store_true", help="only mask.png: needs the tokenizer but no model weights")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default 100)")
    add_overwrite_flag(p, "the PNGs")
    add_model_args(p)
    p.set_defaults(run=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from ..tokenizer import Tokenizer

    require_matplotlib()  # fail before any work
    sentences = args.sentences or list(SEED_SENTENCES)
    if any(not s for s in sentences):
        raise InputError("a sentence is empty; every sentence needs at least one token")
    if not 0 <= args.sequence < len(sentences):
        raise InputError(f"--sequence {args.sequence} is not a sentence of the batch; give 0 .. {len(sentences) - 1}")
    if not 10 <= args.dpi <= 1000:
        raise InputError(f"--dpi {args.dpi} is not a sensible resolution; give 10 .. 1000 (default 100)")
    if args.mask_only:
        model, tok = None, Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
    else:
        try:
            model, tok = load_model_and_tokenizer(args)
        except ModelNotFoundError as e:
            raise ModelNotFoundError(
                f"{e} (--mask-only draws the mask alone, which needs only the tokenizer)"
            ) from None
        check_indices(args.layers, model.config.n_layer, "layer")  # before writing anything
        check_indices(args.heads, model.config.n_head, "head")
    input_ids, attention_mask = left_padded(tok, sentences)  # [B, T] each
    out_dir = Path(args.out)
    names = ["mask.png"] + (
        [] if model is None else [f"attention_L{i}_H{h}.png" for i in args.layers for h in args.heads]
    )
    for name in names:  # the overwrite rule (tools/overwrite.py): a PNG of someone else's is kept
        check_out_file(
            str(out_dir / name), overwrite=args.overwrite, is_ours=is_our_png, ours="a picture gpt2np plot drew"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_masks(tok, input_ids, attention_mask, out_dir / "mask.png", args.dpi)]
    if model is not None:
        paths += plot_attentions(
            model, tok, input_ids, attention_mask, args.sequence, args.layers, args.heads, out_dir, args.dpi
        )
    for path in paths:
        print(f"wrote {path}")
    return 0
