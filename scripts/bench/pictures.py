"""The PNGs: how cost grows with work, each implementation against the machine's floor.

    decode.png   ms per decode step against context length, batch 1 and batch 8
    prefill.png  time of a 1 x T prefill (last position's logits) against T
Points are medians over repeats; the bars span the fastest and slowest repeat.
"""

from __future__ import annotations

from pathlib import Path

from .tasks import DECODE_CONTEXTS, PREFILL_LENGTHS

STYLE = {
    "gpt2np": ("tab:blue", "o"),
    "gpt2np-default-blas": ("tab:green", "s"),
    "transformers": ("tab:orange", "^"),
    "onnxruntime": ("tab:purple", "D"),
    "llama.cpp": ("tab:red", "v"),
}
LABEL = {
    "gpt2np": "gpt2np",
    "gpt2np-default-blas": "gpt2np (OpenBLAS's own kernel)",
    "transformers": "transformers (sdpa)",
    "onnxruntime": "ONNX Runtime (exported from transformers)",
    "llama.cpp": "llama.cpp (f32 GGUF)",
}


def _series(rep, impl, key, metric, xs, scale):
    pts = [(x, rep.agg.get(impl, {}).get(key, {}).get(f"{metric}@{x}")) for x in xs]
    pts = [(x, e) for x, e in pts if e]
    return (
        [x for x, _ in pts],
        [scale * e["median"] for _, e in pts],
        [scale * (e["median"] - e["min"]) for _, e in pts],
        [scale * (e["max"] - e["median"]) for _, e in pts],
    )


def _plot(ax, rep, key, metric, xs, scale, floors, title, xlabel, ylabel):
    for impl in rep.impls:
        x, y, lo, hi = _series(rep, impl, key, metric, xs, scale)
        if x:
            color, marker = STYLE.get(impl, ("gray", "x"))
            ax.errorbar(x, y, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=LABEL.get(impl, impl))
    if floors and all(v is not None for v in floors):
        ax.plot(xs, [scale * v for v in floors], "k--", label="machine floor")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def draw(rep, folder: Path, note: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, b in zip(axes, (1, 8)):
        floors = [rep.decode_floor("gpt2", b, c) for c in DECODE_CONTEXTS]
        _plot(
            ax,
            rep,
            f"decode_curve{b}",
            "step_s",
            DECODE_CONTEXTS,
            1e3,
            floors,
            f"decode step, batch {b}",
            "context (tokens in the cache)",
            "ms per step",
        )
    fig.suptitle(f"GPT-2 124M shapes, float32 — {note}", fontsize=9)
    fig.tight_layout()
    paths.append(folder / "decode.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    floors = [rep.floors.get(f"prefill_last_{T}") for T in PREFILL_LENGTHS]
    _plot(
        ax,
        rep,
        "prefill_curve",
        "time_s",
        PREFILL_LENGTHS,
        1e3,
        floors,
        "prefill 1 x T, last position's logits",
        "prompt length T (tokens)",
        "ms",
    )
    fig.suptitle(f"GPT-2 124M shapes, float32 — {note}", fontsize=9)
    fig.tight_layout()
    paths.append(folder / "prefill.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
