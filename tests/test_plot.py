"""`gpt2np plot`: the PNGs exist, have the right size, and show the pads where the pads are."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_SENTENCES, require_module

from gpt2np import GPT2npError
from gpt2np.tools.cli import main
from gpt2np.tools.plot import ALLOWED, CATEGORY_COLORS, FUTURE, PAD, mask_categories, require_matplotlib

require_module("matplotlib", "pip install -e '.[plot]'")  # skip locally without it, fail in CI


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, which always comes first."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def pixels_of(path, hex_color: str) -> int:
    """How many pixels have exactly this colour."""
    import matplotlib.image

    image = matplotlib.image.imread(path)[..., :3]  # [H, W, 3] floats in 0..1
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int(np.all(np.abs(image - rgb) < 1 / 512, axis=-1).sum())


def plot(capsys, *args):
    code = main(["plot", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mask_categories_follow_the_rules():
    categories = mask_categories(SEED_ATTENTION_MASK)  # [3, 8, 8]
    B, T = SEED_ATTENTION_MASK.shape
    for b in range(B):
        for q in range(T):
            for k in range(T):
                real_q, real_k = SEED_ATTENTION_MASK[b, q] == 1, SEED_ATTENTION_MASK[b, k] == 1
                if k <= q and real_q and real_k:
                    expected = ALLOWED
                elif not (real_q and real_k):
                    expected = PAD
                else:
                    expected = FUTURE
                assert categories[b, q, k] == expected, (b, q, k)


def test_cli_writes_the_pngs(model_dir, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "pictures"
    code, printed, _ = plot(
        capsys,
        "--model",
        model_dir("tiny"),
        "--tokenizer",
        tokenizer_dir,
        "--out",
        out,
        "--layers",
        0,
        1,
    )
    assert code == 0
    names = ["mask.png", "attention_L0.png", "attention_L1.png"]  # one picture per layer, every head in it
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        assert f"wrote {out / name}" in printed
        assert (out / name).stat().st_size > 10_000  # a real picture, not an empty canvas
    width, height = png_size(out / "mask.png")
    assert width > 2 * height  # three square-ish panels side by side
    for name in names[1:]:
        w, h = png_size(out / name)
        assert h >= 300 and 1.5 * h <= w <= 3 * h  # two square-ish heads side by side and a colour bar


def figure_for(model_dir, tokenizer, heads=None, drop_pads=False, sequence=0):
    from gpt2np import GPT2
    from gpt2np.tools.explain import left_padded
    from gpt2np.tools.plot import attention_figure

    model = GPT2.from_pretrained(model_dir("small-outliers"))  # 4 heads
    ids, mask = left_padded(tokenizer, SEED_SENTENCES)
    weights = model(ids, attention_mask=mask, output_attentions=True).attentions[1][sequence]  # [H, T, T]
    heads = list(range(model.config.n_head)) if heads is None else heads
    fig = attention_figure(tokenizer, ids[sequence], mask[sequence], weights, 1, heads, "min", drop_pads)
    return fig, mask[sequence]


def panels(fig):
    return [ax for ax in fig.axes if ax.get_images() and ax.get_title().startswith("layer")]


def test_every_head_of_a_layer_is_one_panel_titled_with_layer_head_and_fill(model_dir, tokenizer):
    fig, _ = figure_for(model_dir, tokenizer)
    assert [ax.get_title() for ax in panels(fig)] == [f"layer 1, head {h}, fill min" for h in range(4)]
    fig, _ = figure_for(model_dir, tokenizer, heads=[2])
    assert [ax.get_title() for ax in panels(fig)] == ["layer 1, head 2, fill min"]
    assert "Ġ = a leading space" in " ".join(t.get_text() for t in fig.texts)  # the legend explains Ġ


def test_masked_cells_are_hatched_and_carry_no_number(model_dir, tokenizer):
    fig, mask = figure_for(model_dir, tokenizer, heads=[0])
    (ax,) = panels(fig)
    T, real = len(mask), int(mask.sum())
    allowed = real * (real + 1) // 2  # causal among the real tokens
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == T * T - allowed  # every forbidden cell, and only those
    assert len(ax.texts) == allowed  # a number in each allowed cell, none in a masked one
    image = ax.get_images()[0].get_array()
    assert image.mask.sum() == T * T - allowed  # masked cells are not coloured as a weight of 0


def test_drop_pads_leaves_the_pads_out(model_dir, tokenizer):
    fig, mask = figure_for(model_dir, tokenizer, heads=[0], drop_pads=True, sequence=2)
    (ax,) = panels(fig)
    assert ax.get_images()[0].get_array().shape == (3, 3)  # "My dog is"
    assert "[pad]" not in [t.get_text() for t in ax.get_xticklabels()]


def test_masked_cells_look_different_from_a_zero_weight(model_dir, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "p"
    assert (
        plot(capsys, "--model", model_dir("tiny"), "--tokenizer", tokenizer_dir, "--out", out, "--heads", "0")[0] == 0
    )
    assert pixels_of(out / "attention_L0.png", "#e4e4e4") > 1000  # the hatched cells' grey
    assert pixels_of(out / "mask.png", "#e4e4e4") > 1000


def test_heads_must_be_numbers_or_all(model_dir, tokenizer_dir, tmp_path, capsys):
    code, _, err = plot(capsys, "--model", model_dir("tiny"), "--out", tmp_path / "x", "--heads", "one")
    assert code == 1 and "--heads takes head numbers or 'all'" in err
    code, _, err = plot(capsys, "--model", model_dir("tiny"), "--out", tmp_path / "x", "--heads", "5")
    assert code == 1 and "head 5 does not exist" in err


def test_a_picture_it_did_not_draw_is_replaced_only_with_overwrite(tokenizer_dir, tmp_path, capsys):
    """The overwrite rule (issue 30): DIR/mask.png of someone else's is kept; plot's own is redrawn."""
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "mask.png").write_bytes(b"\x89PNG the user's own picture")
    code, _, err = plot(capsys, "--tokenizer", tokenizer_dir, "--mask-only", "--out", out)
    assert code == 1 and "already exists and is not a picture gpt2np plot drew" in err and "--overwrite" in err
    assert (out / "mask.png").read_bytes() == b"\x89PNG the user's own picture"
    assert plot(capsys, "--tokenizer", tokenizer_dir, "--mask-only", "--out", out, "--overwrite")[0] == 0
    assert plot(capsys, "--tokenizer", tokenizer_dir, "--mask-only", "--out", out)[0] == 0  # now its own: redrawn


def test_dpi_sets_the_pixel_size(tokenizer_dir, tmp_path, capsys):
    sizes = {}
    for dpi in (50, 100):
        assert (
            plot(capsys, "--mask-only", "--tokenizer", tokenizer_dir, "--out", tmp_path / str(dpi), "--dpi", dpi)[0]
            == 0
        )
        sizes[dpi] = png_size(tmp_path / str(dpi) / "mask.png")
    assert abs(sizes[100][0] - 2 * sizes[50][0]) <= 2 and abs(sizes[100][1] - 2 * sizes[50][1]) <= 2


def test_pads_are_highlighted_only_when_there_are_pads(tokenizer_dir, tmp_path, capsys):
    pad_color, allowed_color = CATEGORY_COLORS[PAD], CATEGORY_COLORS[ALLOWED]
    assert plot(capsys, "--mask-only", "--tokenizer", tokenizer_dir, "--out", tmp_path / "padded")[0] == 0
    assert (
        plot(
            capsys, "--mask-only", "--tokenizer", tokenizer_dir, "--out", tmp_path / "plain", "My dog is", "My cat is"
        )[0]
        == 0
    )
    padded, plain = tmp_path / "padded" / "mask.png", tmp_path / "plain" / "mask.png"
    assert pixels_of(padded, pad_color) > 1000
    assert pixels_of(plain, pad_color) == 0  # no pads, no orange (not even in the legend)
    assert pixels_of(plain, allowed_color) > 1000


def test_a_layer_that_does_not_exist(model_dir, tokenizer_dir, tmp_path, capsys):
    code, _, err = plot(
        capsys, "--model", model_dir("tiny"), "--tokenizer", tokenizer_dir, "--out", tmp_path / "x", "--layers", 2
    )
    assert code == 1 and "layer 2 does not exist: the model has 2 layers, numbered 0 .. 1" in err
    assert not (tmp_path / "x").exists()  # checked before anything was written


def test_without_a_model_it_points_to_mask_only(tokenizer_dir, tmp_path, capsys):
    code, _, err = plot(capsys, "--model", tmp_path / "missing", "--tokenizer", tokenizer_dir, "--out", tmp_path / "x")
    assert code == 1 and "--mask-only" in err and err.count("\n") == 1


def test_without_matplotlib_it_says_how_to_install(monkeypatch, tokenizer_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import matplotlib.figure` now fails
    with pytest.raises(GPT2npError, match=r"pip install -e '\.\[plot\]'"):
        require_matplotlib()
    code, _, err = plot(capsys, "--mask-only", "--tokenizer", tokenizer_dir, "--out", tmp_path / "x")
    assert code == 1 and "pip install -e '.[plot]'" in err
