"""`gpt2np plot`: pictures of the attention mask of a padded batch and of attention weights.

- mask.png: for every sequence of the left-padded batch, its [T, T] mask, each cell coloured
  by why it is allowed or not: allowed (blue), forbidden because the key is in the future
  (light grey), or forbidden because a pad is involved (orange). Built from masks.build_attention_mask.
- attention_L{layer}.png: every chosen head of one layer (all of them by default), one panel
  each, for one sequence: its softmax weights, rows = queries (down the left side), columns =
  keys (along the bottom), labelled with the tokens. A cell the mask forbids is hatched grey and
  carries no number: its weight is 0 because of the mask, which is not the same as a real
  weight the model made 0. `--drop-pads` leaves the pads' rows and columns out.

Tokens are GPT-2's BPE pieces: "Ġ" is how the vocabulary writes a leading space (the legend
says so), pads are labelled "[pad]" in orange.

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
    """Tokens on both axes (keys along the bottom, queries down the left side); pads in orange."""
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


TOKEN_NOTE = 'Ġ = a leading space (GPT-2\'s BPE); "[pad]" = padding; hatched = masked (forbidden by the mask: weight 0)'


def attention_figure(tok, ids: np.ndarray, mask: np.ndarray, weights: np.ndarray, layer: int, heads: list[int],
                     fill: str, drop_pads: bool = False):  # fmt: skip
    """One layer's chosen heads side by side for one sequence: weights [n_head, T, T] (all heads;
    `heads` picks the panels). Masked cells are hatched, not coloured as a 0 weight."""
    Figure, _ = require_matplotlib()
    from matplotlib.patches import Rectangle

    categories = mask_categories(mask[None])[0]  # [T, T] allowed / future / pad
    keep = np.flatnonzero(mask == 1) if drop_pads else np.arange(len(ids))  # the tokens drawn
    labels = [token_labels(tok, ids, mask)[t] for t in keep]
    n = len(keep)
    side = max(3.0, 0.35 * n + 1.8)  # inches per panel: room for the token labels
    columns = min(len(heads), 4)
    rows = -(-len(heads) // columns)
    fig = Figure(figsize=(side * columns + 1.0, side * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    image = None
    for ax, head in zip(axes, heads):
        w = weights[head][np.ix_(keep, keep)]  # [n, n]
        masked = categories[np.ix_(keep, keep)] != ALLOWED  # [n, n]
        image = ax.imshow(np.ma.masked_array(w, masked), cmap="viridis", vmin=0.0, vmax=1.0)
        for q, k in zip(*np.nonzero(masked)):  # forbidden: hatched grey, no number
            ax.add_patch(Rectangle((k - 0.5, q - 0.5), 1, 1, facecolor="#e4e4e4", edgecolor="#9a9a9a",
                                   hatch="///", linewidth=0))  # fmt: skip
        label_axes(ax, labels)
        if n <= 16:  # few enough cells to print each weight
            for q, k in zip(*np.nonzero(~masked)):
                color = "black" if w[q, k] > 0.6 else "white"
                ax.text(k, q, f"{w[q, k]:.2f}", ha="center", va="center", fontsize=6, color=color)
        ax.set_title(f"layer {layer}, head {head}, fill {fill}", fontsize=9)
    for ax in axes[len(heads) :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(heads)]), shrink=0.8, label="attention weight")
    real = tok.decode(ids[mask == 1])
    fig.suptitle(f"{real!r}: attention weights of layer {layer}" + (", pads dropped" if drop_pads else ""), fontsize=10)
    fig.text(0.5, 0.0, TOKEN_NOTE, ha="center", va="bottom", fontsize=8)
    return fig


def check_indices(values, limit: int, what: str) -> list[int]:
    bad = [v for v in values if not 0 <= v < limit]
    if bad:
        raise InputError(f"{what} {bad[0]} does not exist: the model has {limit} {what}s, numbered 0 .. {limit - 1}")
    return list(values)


def plot_attentions(
    model,
    tok,
    input_ids,
    attention_mask,
    sequence: int,
    layers,
    heads,
    out_dir,
    dpi: int = 100,
    drop_pads: bool = False,
) -> list[Path]:
    """attention_L{l}.png for every chosen layer: its chosen heads (None: all), one sequence of the batch."""
    layers = check_indices(layers, model.config.n_layer, "layer")
    heads = list(range(model.config.n_head)) if heads is None else check_indices(heads, model.config.n_head, "head")
    out = model(input_ids, attention_mask=attention_mask, output_attentions=True)  # attentions: n_layer x [B, H, T, T]
    fill = model.mask_fill if isinstance(model.mask_fill, str) else repr(model.mask_fill)
    paths = []
    for layer in layers:
        fig = attention_figure(
            tok,
            input_ids[sequence],
            attention_mask[sequence],
            out.attentions[layer][sequence],
            layer,
            heads,
            fill,
            drop_pads,
        )
        paths.append(save(fig, Path(out_dir) / f"attention_L{layer}.png", dpi))
    return paths


# --- the command ---------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG pictures of the batch's attention mask and of attention weights",
        description="Write DIR/mask.png (the padded batch's masks: padding + causal, pads highlighted) and "
        "DIR/attention_L{layer}.png (every head of the layer, or those of --heads, for one sequence, labelled with "
        "tokens; masked cells hatched). Needs matplotlib: pip install -e '.[plot]'.",
    )
    p.add_argument(
        "sentences", nargs="*", help=f"sentences to batch (default: {', '.join(repr(s) for s in SEED_SENTENCES)})"
    )
    p.add_argument("--out", required=True, help="folder to write the PNGs into (created if needed)")
    p.add_argument("--layers", type=int, nargs="+", default=[0], help="layers to draw attention for (default: 0)")
    p.add_argument(
        "--heads",
        nargs="+",
        default=["all"],
        help="heads to draw in each of those layers, one panel each (default: all)",
    )
    p.add_argument("--drop-pads", action="store_true", help="leave the pads' rows and columns out of the attention")
    p.add_argument("--sequence", type=int, default=0, help="which sentence's attention to draw (default: 0, the first)")
    p.add_argument("--mask-only", action="store_true", help="only mask.png: needs the tokenizer but no model weights")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default 100)")
    add_overwrite_flag(p, "the PNGs")
    add_model_args(p)
    p.set_defaults(run=cmd_plot)


def parse_heads(values: list[str]) -> list[int] | None:
    """--heads: "all" (None) or head numbers."""
    if values == ["all"]:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise InputError(f"--heads takes head numbers or 'all', got {' '.join(values)}") from None


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
    heads = parse_heads(args.heads)
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
        if heads is not None:
            check_indices(heads, model.config.n_head, "head")
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
            model, tok, input_ids, attention_mask, args.sequence, args.layers, heads, out_dir, args.dpi, args.drop_pads
        )
    for path in paths:
        print(f"wrote {path}")
    return 0
