"""gpt2np compare: rows in forward order, the first divergence, partial candidates, shape
hints, tolerances that pass a correct float32 run (ours, transformers') and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, InputError
from gpt2np.hooks import axes
from gpt2np.masks import position_ids_from_mask
from gpt2np.tools.cli import main
from gpt2np.tools.compare import FACTOR, FLOOR, compare_traces, format_report
from gpt2np.tools.trace import trace_metadata, trace_tensors, write_trace
from gpt2np.tools.tracefile import load_trace, save_trace

MODELS = ["tiny", "small-outliers", "odd", "gpt2-shaped"]


def batch_for(model_name):
    if model_name != "odd":
        return SEED_INPUT_IDS, SEED_ATTENTION_MASK
    ids = np.random.default_rng(0).integers(0, 1000, size=(3, 10))
    return ids, (np.arange(10)[None, :] >= np.array([0, 4, 9])[:, None]).astype(np.int64)


def write_reference(path, folder, ids, mask, **kwargs):
    """A float64 trace of the model in `folder`, calibrated: with its float32 error per point."""
    model64, model32 = GPT2.from_pretrained(folder, dtype="float64"), GPT2.from_pretrained(folder)
    write_trace(path, model64, ids, mask, float32_model=model32, **kwargs)
    return path


@pytest.fixture(scope="module")
def tiny_traces(model_dir, tmp_path_factory):
    """tiny's float64 reference (calibrated) and its float32 trace, both with fill 'min'."""
    folder = model_dir("tiny")
    out = tmp_path_factory.mktemp("tiny")
    model32 = GPT2.from_pretrained(folder)
    write_reference(out / "ref.safetensors", folder, SEED_INPUT_IDS, SEED_ATTENTION_MASK, model_name="tiny")
    tensors = trace_tensors(model32, SEED_INPUT_IDS, SEED_ATTENTION_MASK)
    save_trace(out / "f32.safetensors", tensors, trace_metadata(model32, "tiny", None, []))
    return out / "ref.safetensors", tensors, trace_metadata(model32, "tiny", None, []), out


def edited(traces, name, tensors_change, **kwargs):
    """Save a copy of tiny's float32 trace with some tensors changed; -> its path."""
    ref, tensors, metadata, out = traces
    changed = dict(tensors)
    tensors_change(changed)
    path = out / f"{name}.safetensors"
    save_trace(path, changed, metadata)
    return path


def test_rows_are_in_forward_order_and_a_correct_run_passes(tiny_traces):
    ref, tensors, _, out = tiny_traces
    report = compare_traces(ref, out / "f32.safetensors")
    names = [r.name for r in report.rows]
    assert (
        names[:5] == ["input_ids", "attention_mask", "position_ids", "hook_embed", "hook_pos_embed"]
        and names[-1] == "logits"
    )
    assert names[3:] == json.loads(load_trace(ref)[1]["names"])
    assert report.first is None and "no divergence: all 37 compared points agree" in format_report(report, ref, "c")


def test_tolerance_is_measured_per_point(tiny_traces):
    ref, _, _, out = tiny_traces
    measured = json.loads(load_trace(ref)[1]["float32_error"])
    report = compare_traces(ref, out / "f32.safetensors")
    for row in report.rows:
        if row.measurement is not None:
            assert row.tolerance == pytest.approx(FACTOR * max(measured[row.name] / row.measurement.scale, FLOOR))
            assert row.measurement.diff == pytest.approx(
                measured[row.name], rel=1e-2, abs=1e-12
            )  # the same run, the same measure


def test_a_change_is_named_at_its_point(tiny_traces):
    ref = tiny_traces[0]

    def nudge(t):
        t["blocks.1.mlp.hook_pre"] = t["blocks.1.mlp.hook_pre"].copy()
        t["blocks.1.mlp.hook_pre"][0, -1, 5] += 1e-3  # one number, at a real token

    report = compare_traces(ref, edited(tiny_traces, "nudge", nudge))
    assert report.first.name == "blocks.1.mlp.hook_pre"
    assert [r.name for r in report.rows if r.verdict != "ok"] == [
        "blocks.1.mlp.hook_pre"
    ]  # the later ones were not recomputed

    def pad_only(t):
        t["blocks.0.hook_resid_mid"] = t["blocks.0.hook_resid_mid"].copy()
        t["blocks.0.hook_resid_mid"][0, 0] = 123.0  # row 0 position 0 is a pad: not compared

    assert compare_traces(ref, edited(tiny_traces, "pad", pad_only)).first is None


def test_nan_diverges(tiny_traces):
    def nan(t):
        t["blocks.0.attn.hook_z"] = t["blocks.0.attn.hook_z"].copy()
        t["blocks.0.attn.hook_z"][1, 2, 0, 0] = np.nan

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "nan", nan))
    assert report.first.name == "blocks.0.attn.hook_z" and "1 non-finite values" in report.first.note


def test_partial_candidate_reports_the_missing_and_compares_the_rest(tiny_traces):
    def keep_some(t):
        for name in list(t):
            if not name.endswith(("hook_resid_post", "logits")):
                del t[name]

    path = edited(tiny_traces, "partial", keep_some)
    report = compare_traces(tiny_traces[0], path)
    assert [r.name for r in report.rows] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "logits"]
    assert report.first is None and "input_ids" in report.missing and len(report.missing) == 37 - 3
    assert "missing in the candidate (34 of 37, not compared)" in format_report(report, tiny_traces[0], path)


def test_shape_mismatch_hints(tiny_traces):
    def wrong_layouts(t):
        t["blocks.0.attn.hook_q"] = t["blocks.0.attn.hook_q"].transpose(0, 2, 1, 3)  # [B, H, T, D]
        t["blocks.0.attn.hook_k"] = t["blocks.0.attn.hook_k"].reshape(3, 8, 32)  # heads not split
        t["logits"] = t["logits"][0]  # no batch axis
        t["blocks.0.attn.q"] = t["blocks.0.attn.hook_v"]  # not a name

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "shapes", wrong_layouts))
    notes = {r.name: r.note for r in report.rows if r.verdict == "SHAPE"}
    assert "looks like [B, H, T, D]: transpose" in notes["blocks.0.attn.hook_q"]
    assert "given as [B, T, H*D]: split the heads" in notes["blocks.0.attn.hook_k"]
    assert "the batch axis is missing" in notes["logits"]
    assert report.first.name == "blocks.0.attn.hook_q"
    assert report.unknown == ["blocks.0.attn.q (did you mean blocks.0.attn.hook_q?)"]


def test_different_inputs_diverge_at_the_inputs(tiny_traces):
    def other_ids(t):
        t["input_ids"] = t["input_ids"] + 1

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "ids", other_ids))
    assert report.first.name == "input_ids"


def test_bad_usage(tiny_traces, tmp_path):
    ref = tiny_traces[0]
    with pytest.raises(InputError, match="does not exist"):
        compare_traces(ref, tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="not a readable safetensors trace"):
        compare_traces(ref, tmp_path / "junk.safetensors")
    save_trace(tmp_path / "bare.safetensors", {"logits": np.zeros(3, np.float32)}, {})
    with pytest.raises(InputError, match="no input_ids/attention_mask"):
        compare_traces(tmp_path / "bare.safetensors", ref)


def edited_reference(traces, tmp_path, name, tensors_change=None, **metadata_change):
    """A copy of tiny's float64 reference with some tensors or metadata fields changed."""
    tensors, metadata = load_trace(traces[0])
    tensors = {k: np.array(v) for k, v in tensors.items()}
    if tensors_change is not None:
        tensors_change(tensors)
    path = tmp_path / f"{name}.safetensors"
    save_trace(path, tensors, {**metadata, **metadata_change})
    return path


@pytest.mark.parametrize(
    "case, change, message",
    [
        (
            "nan-error",
            dict(float32_error='{"logits": NaN}'),
            r"'float32_error' gives logits nan: each must be a finite number >= 0",
        ),
        ("string-error", dict(float32_error='{"logits": "small"}'), r"gives logits 'small'"),
        ("negative-error", dict(float32_error='{"logits": -1}'), r"gives logits -1"),
        ("not-json", dict(float32_error="{logits: 1e-6"), r"'float32_error' is not JSON"),
        ("a-list", dict(float32_error="[1e-6]"), r"'float32_error' is a JSON list, not an object"),
        (
            "unknown-point",
            dict(float32_error='{"blocks.0.hook_q": 1e-6}'),
            r"names 'blocks.0.hook_q', which is no point",
        ),
        ("fill-text", dict(fill="lots"), r"'fill' is 'lots', not a number"),
        ("fill-nan", dict(fill="nan"), r"'fill' is 'nan', not a negative number"),
        ("config-not-json", dict(config="{"), r"'config' is not JSON"),
        ("config-nested", dict(config="[" * 100_000 + "]" * 100_000), r"'config' is JSON nested too deeply"),
    ],
)
def test_a_malformed_reference_is_bad_usage_naming_the_field(tiny_traces, tmp_path, case, change, message):
    """A reference whose metadata compare cannot trust is refused (exit 2), never a verdict:
    a NaN float32_error made every tolerance NaN, and NaN comparisons pass anything."""
    ref = edited_reference(tiny_traces, tmp_path, case, **change)
    with pytest.raises(InputError, match=message):
        compare_traces(ref, tiny_traces[3] / "f32.safetensors")
    assert main(["compare", str(ref), str(tiny_traces[3] / "f32.safetensors")]) == 2


@pytest.mark.parametrize(
    "case, change, message",
    [
        (
            "mask-shape",
            lambda t: t.update(attention_mask=t["attention_mask"][:, :-1]),
            r"attention_mask has shape \[3, 7\], not input_ids' \[B, T\] = \[3, 8\]",
        ),
        (
            "mask-values",
            lambda t: t.update(attention_mask=t["attention_mask"] * 2),
            r"attention_mask holds values other than 0 and 1",
        ),
        (
            "1-D-point",
            lambda t: t.update({"blocks.0.hook_resid_pre": t["blocks.0.hook_resid_pre"].ravel()}),
            r"blocks\.0\.hook_resid_pre is float64 \[768\], not a float \[B, T, C\] point of a \[3, 8\] batch",
        ),
        ("other-T", lambda t: t.update({"logits": t["logits"][:, :4]}), r"logits is float64 \[3, 4, 50257\]"),
        ("int-point", lambda t: t.update({"logits": t["logits"].astype(np.int64)}), r"logits is int64"),
        # issue 30: a NaN in the reference passed every candidate ("no divergence", exit 0) ...
        ("nan-logits", lambda t: t["logits"].__setitem__((0, -1, 5), np.nan), r"logits holds nan at \[0, 7, 5\]"),
        ("inf-point", lambda t: t["blocks.1.hook_mlp_out"].__setitem__((1, 3, 0), np.inf), r"hook_mlp_out holds inf"),
        # ... and float input_ids made every candidate "diverge" (exit 1) at the inputs
        (
            "float-ids",
            lambda t: t.update(input_ids=t["input_ids"].astype(np.float64)),
            r"input_ids is float64, not integers",
        ),
    ],
)
def test_a_malformed_reference_tensor_is_bad_usage(tiny_traces, tmp_path, case, change, message):
    ref = edited_reference(tiny_traces, tmp_path, case, change)
    with pytest.raises(InputError, match=message):
        compare_traces(ref, tiny_traces[3] / "f32.safetensors")
    assert main(["compare", str(ref), str(tiny_traces[3] / "f32.safetensors")]) == 2


def test_a_minus_inf_fill_in_the_reference_scores_is_no_nan(model_dir, tmp_path):
    """The one non-finite value a reference may hold: -inf in hook_attn_scores' forbidden cells."""
    model64 = GPT2.from_pretrained(model_dir("tiny"), dtype="float64", mask_fill="-inf")
    write_trace(tmp_path / "ref.safetensors", model64, SEED_INPUT_IDS, SEED_ATTENTION_MASK)
    assert np.isneginf(load_trace(tmp_path / "ref.safetensors")[0]["blocks.0.attn.hook_attn_scores"]).any()
    assert compare_traces(tmp_path / "ref.safetensors", tmp_path / "ref.safetensors").first is None


@pytest.mark.parametrize("rtol", ["inf", "1e308", "1", "nan", "0"])
def test_an_rtol_that_accepts_anything_is_bad_usage(tiny_traces, rtol, capsys):
    """Issue 30: --rtol inf (or 1e308) passed logits x 1000: a tolerance relative to the point's
    scale must lie below 1."""
    ref, cand = tiny_traces[0], tiny_traces[3] / "f32.safetensors"
    assert main(["compare", str(ref), str(cand), "--rtol", rtol]) == 2
    assert "--rtol must be a positive number below 1" in capsys.readouterr().err


def test_a_crafted_block_number_is_refused_at_once(tiny_traces, tmp_path):
    """blocks.99999999999.hook_resid_pre made compare build 10^11 names (OOM after 116 s): the
    names come from the file now, and blocks must be numbered 0, 1, ... as gpt2np trace writes."""
    import time

    def crafted(t):
        t["blocks.99999999999.hook_resid_pre"] = t["blocks.0.hook_resid_pre"]

    ref = edited_reference(tiny_traces, tmp_path, "crafted", crafted)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"blocks are numbered \[0, 1, 99999999999\] \.\.\. 99999999999, not 0, 1"):
        compare_traces(ref, tiny_traces[3] / "f32.safetensors")
    assert time.perf_counter() - start < 10  # seconds, not minutes: no list of 10^11 names

    def a_block_too_many(t):
        t["blocks.2.hook_resid_pre"] = t["blocks.0.hook_resid_pre"]

    with pytest.raises(InputError, match=r"it holds 3 blocks, its config 2"):
        compare_traces(
            edited_reference(tiny_traces, tmp_path, "three", a_block_too_many), tiny_traces[3] / "f32.safetensors"
        )


# --- the tolerances pass other correct float32 code: transformers' --------------------------


@pytest.mark.parametrize("name", MODELS)
def test_transformers_float32_passes_against_our_float64_reference(model_dir, hf_model, name, tmp_path):
    """transformers' float32 forward, read at every point with torch hooks (hf_points.py), is a
    correct float32 implementation written by others: it must pass everywhere. Prints how much
    of the tolerance it uses at worst (the margin docs/cross-checking.md quotes)."""
    from hf_points import hf_points

    folder = model_dir(name)
    ids, mask = batch_for(name)
    ref = tmp_path / "ref.safetensors"
    write_trace(
        ref,
        GPT2.from_pretrained(folder, dtype="float64"),
        ids,
        mask,
        model_name=name,
        float32_model=GPT2.from_pretrained(folder),
    )
    positions = position_ids_from_mask(mask)
    theirs = hf_points(hf_model(folder, "eager"), ids, mask, positions)
    save_trace(
        tmp_path / "hf.safetensors",
        {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **theirs},
        {"dtype": "float32"},
    )
    report = compare_traces(ref, tmp_path / "hf.safetensors")
    assert report.first is None, format_report(report, ref, "transformers")
    used = max(r.measurement.diff / (r.measurement.scale or 1) / r.tolerance for r in report.rows if r.measurement)
    print(f"{name}: transformers float32 uses at most {used:.2f} of the tolerance")


@pytest.mark.parametrize("name", ["tiny", "small-outliers"])
def test_float32_reference_uses_the_uncalibrated_tolerance_and_transformers_passes(model_dir, hf_model, name, tmp_path):
    from hf_points import hf_points

    folder = model_dir(name)
    ids, mask = batch_for(name)
    model = GPT2.from_pretrained(folder)
    write_trace(tmp_path / "ref32.safetensors", model, ids, mask, model_name=name)
    positions = position_ids_from_mask(mask)
    theirs = hf_points(hf_model(folder, "eager"), ids, mask, positions)
    save_trace(
        tmp_path / "hf.safetensors", {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **theirs}, {}
    )
    report = compare_traces(tmp_path / "ref32.safetensors", tmp_path / "hf.safetensors")
    assert report.first is None and "carries no float32 error" in report.tolerance_rule


# --- NaN and inf anywhere, pads included (issue 23, item 1) --------------------------------


def test_nan_in_a_pad_row_of_the_pattern_fails_there_naming_the_rows_and_the_reason(tiny_traces, capsys):
    """A softmax that turns a pad query's fully masked row into 0/0 = NaN was invisible (pads are
    not compared) until one block later, with nothing pointing back to the pads."""

    def nan_pad_rows(t):
        p = t["blocks.0.attn.hook_pattern"].copy()  # [B, H, T, Tk]
        p[0, :, :3] = np.nan  # row 0's three left pads (tokens 0-2)
        p[2, :, :5] = np.nan  # row 2's five (tokens 0-4)
        t["blocks.0.attn.hook_pattern"] = p

    path = edited(tiny_traces, "nan-pads", nan_pad_rows)
    report = compare_traces(tiny_traces[0], path)
    assert report.first.name == "blocks.0.attn.hook_pattern" and report.first.verdict == "DIVERGES"
    note = report.first.note
    assert "non-finite values (e.g. nan) at pads only (row 0: tokens 0-2; row 2: tokens 0-4)" in note
    assert "every score is masked is 0/0 = NaN" in note and "0 * NaN reaches the real tokens" in note
    assert main(["compare", str(tiny_traces[0]), str(path)]) == 1
    assert "first divergence: blocks.0.attn.hook_pattern" in capsys.readouterr().out


def test_nan_at_a_pad_of_any_point_fails_there(tiny_traces):
    def nan_pad(t):
        t["blocks.1.hook_resid_mid"] = t["blocks.1.hook_resid_mid"].copy()
        t["blocks.1.hook_resid_mid"][2, 1, 7] = np.inf  # row 2, token 1: a pad

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "inf-pad", nan_pad))
    assert report.first.name == "blocks.1.hook_resid_mid"
    assert "1 non-finite values (e.g. inf) at pads only (row 2: token 1)" in report.first.note
    assert "does not stay there" in report.first.note


def test_nan_at_real_tokens_and_pads_names_both(tiny_traces):
    def nan(t):
        t["blocks.0.hook_mlp_out"] = t["blocks.0.hook_mlp_out"].copy()
        t["blocks.0.hook_mlp_out"][1, 4:6, 0] = np.nan  # row 1 has no pad
        t["blocks.0.hook_mlp_out"][0, 0, 0] = np.nan  # a pad

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "nan-both", nan))
    assert "3 non-finite values (e.g. nan) at real tokens (row 1: tokens 4-5) and at pads (row 0: token 0)" in (
        report.first.note
    )


def test_finite_pad_values_stay_unchecked_and_the_report_counts_them(tiny_traces):
    def pad_only(t):
        t["blocks.0.hook_resid_mid"] = t["blocks.0.hook_resid_mid"].copy()
        t["blocks.0.hook_resid_mid"][0, 0] = 123.0  # row 0 position 0 is a pad

    path = edited(tiny_traces, "pad-finite", pad_only)
    report = compare_traces(tiny_traces[0], path)
    assert report.first is None
    text = format_report(report, tiny_traces[0], path)
    assert (
        "pads: 8 of the 24 positions (in rows 0, 2) are pads; their values are not compared, only checked to be finite"
        in text
    )


# --- the fill is a convention (issue 23, item 2) --------------------------------------------


def raw_scores(t, layer):
    """q k^T * scale for every cell, no mask: what a loop that masks nothing leaves [B, H, T, Tk]."""
    q, k = t[f"blocks.{layer}.attn.hook_q"], t[f"blocks.{layer}.attn.hook_k"]  # [B, T, H, D]
    return np.einsum("bthd,bshd->bhts", q, k) / np.float32(np.sqrt(q.shape[-1]))


def forbidden(t, layer=0):
    from gpt2np.tools.measure import allowed_cells

    scores = t[f"blocks.{layer}.attn.hook_attn_scores"]
    return ~np.broadcast_to(allowed_cells(t["attention_mask"], scores.shape[2]), scores.shape)


def with_forbidden(value_of):
    """A change writing value_of(t, layer) into every block's forbidden score cells."""

    def change(t):
        for layer in (0, 1):
            name = f"blocks.{layer}.attn.hook_attn_scores"
            scores, cells = t[name].copy(), forbidden(t, layer)
            scores[cells] = np.broadcast_to(value_of(t, layer), scores.shape)[cells]
            t[name] = scores

    return change


@pytest.mark.parametrize(
    "case, value_of, found, advice",
    [
        (
            "minus-inf",
            lambda t, i: -np.inf,
            "hold -inf where the reference has its fill -3.403e+38",
            "--mask-fill -inf",
        ),
        ("minus-1e9", lambda t, i: np.float32(-1e9), "hold -1e+09 where", "--mask-fill -1e9"),
        ("zeros", lambda t, i: 0.0, "hold 0 (never written) where", "loop over the allowed keys only (j <= i)"),
        ("raw-scores", raw_scores, "hold ordinary numbers (never written?)", "(j <= i)"),
    ],
    ids=["minus-inf", "minus-1e9", "zeros", "raw-scores"],
)
def test_another_convention_for_the_forbidden_cells_passes_with_one_note(tiny_traces, case, value_of, found, advice):
    """A correct C using -INFINITY, or a loop that never writes the forbidden cells (llama2.c's
    `for j <= i`), was called a bug ("DIVERGES", with a guess about pads)."""
    path = edited(tiny_traces, f"fill-{case}", with_forbidden(value_of))
    report = compare_traces(tiny_traces[0], path)
    text = format_report(report, tiny_traces[0], path)
    assert report.first is None, text
    (note,) = report.notes  # one note for both blocks
    assert note.startswith("hook_attn_scores of blocks 0-1: the forbidden cells " + found), note
    assert advice in note and "a fill is a convention" in note and "which hook_pattern shows" in note
    assert text.count("note: ") == 1


def test_the_reference_s_own_fill_gives_no_note(tiny_traces):
    report = compare_traces(tiny_traces[0], tiny_traces[3] / "f32.safetensors")
    assert report.notes == [] and "note:" not in format_report(report, tiny_traces[0], "c")


def test_a_mask_that_does_not_reach_the_softmax_fails_at_hook_pattern(tiny_traces):
    """The scores' forbidden cells hold the raw scores (passes: never written?), and softmax over
    every key gives them weight: that leak fails at hook_pattern, named as such."""

    def unmasked(t):
        with_forbidden(raw_scores)(t)
        for layer in (0, 1):
            s = raw_scores(t, layer)
            e = np.exp(s - s.max(-1, keepdims=True))
            t[f"blocks.{layer}.attn.hook_pattern"] = e / e.sum(-1, keepdims=True)  # softmax over every key

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "leak", unmasked))
    verdicts = {r.name: r.verdict for r in report.rows}
    assert verdicts["blocks.0.attn.hook_attn_scores"] == "ok"
    assert report.first.name == "blocks.0.attn.hook_pattern"
    assert "forbidden cells get weight (up to" in report.first.note
    assert "where the reference has 0: a key in the future or a pad is attended to" in report.first.note


def test_the_fill_added_twice_still_diverges(tiny_traces):
    """min + min overflows to -inf where a key is both a pad and in the future: a bug, not a convention."""
    from gpt2np.tools.measure import twice_forbidden

    def doubled(t):
        scores = t["blocks.0.attn.hook_attn_scores"].copy()
        scores[twice_forbidden(scores.shape, t["attention_mask"])] = -np.inf
        t["blocks.0.attn.hook_attn_scores"] = scores

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "twice", doubled))
    assert report.first.name == "blocks.0.attn.hook_attn_scores"
    assert "26 forbidden cells hold e.g. -inf, the others -3.403e+38: the fill added twice" in report.first.note


def test_nan_in_a_forbidden_score_cell_diverges(tiny_traces):
    def nan(t):
        with_forbidden(lambda t, i: -np.inf)(t)
        t["blocks.0.attn.hook_attn_scores"][1, 0, 0, 5] = np.nan  # row 1 (no pads), query 0, a future key

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "nan-forbidden", nan))
    assert report.first.name == "blocks.0.attn.hook_attn_scores"
    assert "1 non-finite values (e.g. nan) at real tokens (row 1: token 0)" in report.first.note


@pytest.fixture(scope="module")
def unpadded_traces(model_dir, tmp_path_factory):
    """tiny's float64 reference of a batch without pads, and its float32 trace with fill -inf."""
    folder, out = model_dir("tiny"), tmp_path_factory.mktemp("unpadded")
    ids = SEED_INPUT_IDS[1:2]  # "I want to eat a big bowl of": 8 real tokens
    mask = np.ones_like(ids)
    write_reference(out / "ref.safetensors", folder, ids, mask)
    model = GPT2.from_pretrained(folder, mask_fill="-inf")
    save_trace(out / "inf.safetensors", trace_tensors(model, ids, mask), trace_metadata(model, "tiny", None, []))
    return out


def test_without_pads_nothing_mentions_pads(unpadded_traces):
    """Batch of one, no pads, -inf against min: it was "the fill added twice ... where a key is both
    a pad and in the future?" with no pad in sight."""
    ref, cand = unpadded_traces / "ref.safetensors", unpadded_traces / "inf.safetensors"
    report = compare_traces(ref, cand)
    text = format_report(report, "ref.safetensors", "inf.safetensors")  # (the temporary folder's name has "pad")
    assert report.first is None and len(report.notes) == 1 and "hold -inf" in report.notes[0]
    assert "pad" not in text.lower(), text
    assert main(["compare", str(ref), str(cand)]) == 0  # it was exit 1, "DIVERGES"


def test_the_candidate_s_metadata_is_printed(tiny_traces, tmp_path):
    ref, tensors, _, _ = tiny_traces
    save_trace(
        tmp_path / "c.safetensors", tensors, {"dtype": "float32", "model": "gpt2.c", "mask_fill": "-inf", "x": "y"}
    )
    text = format_report(compare_traces(ref, tmp_path / "c.safetensors"), ref, "c.safetensors")
    assert "candidate  c.safetensors: float32, model gpt2.c, mask_fill -inf\n" in text
    save_trace(tmp_path / "bare.safetensors", tensors, {})
    assert "candidate  bare.safetensors\n" in format_report(
        compare_traces(ref, tmp_path / "bare.safetensors"), ref, "bare.safetensors"
    )


# --- axes of the same length swapped (issue 23, item 3) -------------------------------------


@pytest.fixture(scope="module")
def four_heads(tmp_path_factory):
    """A random GPT-2 with 4 heads, its float64 reference of a [2, 4] batch (T == H == 4) and its
    float32 trace."""
    from gpt2np.config import GPT2Config
    from gpt2np.tools.random_model import make_random_checkpoint

    out = tmp_path_factory.mktemp("four-heads")
    config = GPT2Config(
        vocab_size=1000, n_layer=1, n_head=4, n_embd=32, n_positions=16, bos_token_id=999, eos_token_id=999
    )
    folder = make_random_checkpoint(out / "model", config, seed=5)
    ids = np.array([[999, 999, 17, 42], [5, 6, 7, 8]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    write_reference(out / "ref.safetensors", folder, ids, mask)
    return out / "ref.safetensors", trace_tensors(GPT2.from_pretrained(folder), ids, mask), out


@pytest.mark.parametrize(
    "point, swap, looks",
    [
        ("blocks.0.attn.hook_q", (1, 2), "axes T and H swapped (both 4 long): it looks like [B, H, T, D]"),
        ("blocks.0.attn.hook_z", (1, 2), "axes T and H swapped (both 4 long): it looks like [B, H, T, D]"),
        ("blocks.0.attn.hook_pattern", (2, 3), "axes T and Tk swapped (both 4 long): it looks like [B, H, Tk, T]"),
    ],
    ids=["q", "z", "pattern"],
)
def test_axes_of_equal_length_swapped_are_named(four_heads, point, swap, looks):
    """[B, H, T, D] saved where [B, T, H, D] belongs, with a 4-token prompt on 4 heads: the same
    shape, so it was a bare DIVERGES though the docs promise a transposed array is recognised."""
    ref, tensors, out = four_heads
    changed = {**tensors, point: np.ascontiguousarray(np.swapaxes(tensors[point], *swap))}
    save_trace(out / "swapped.safetensors", changed, {})
    report = compare_traces(ref, out / "swapped.safetensors")
    assert report.first.name == point and report.first.verdict == "DIVERGES"
    assert looks in report.first.note and report.first.note.endswith(f"transpose it to [{', '.join(axes(point))}]")


def test_a_real_difference_is_not_called_a_swap(four_heads):
    ref, tensors, out = four_heads
    q = tensors["blocks.0.attn.hook_q"] * np.float32(1.01)
    save_trace(out / "scaled.safetensors", {**tensors, "blocks.0.attn.hook_q": q}, {})
    report = compare_traces(ref, out / "scaled.safetensors")
    assert report.first.name == "blocks.0.attn.hook_q" and "swapped" not in report.first.note


def test_a_mix_of_conventions_passes_with_a_note_naming_each(tiny_traces):
    def mixed(t):
        with_forbidden(lambda t, i: -np.inf)(t)
        scores = t["blocks.0.attn.hook_attn_scores"]
        scores[1][forbidden(t)[1]] = 0  # row 1 (no pads) never written
        t["blocks.0.attn.hook_attn_scores"] = scores

    report = compare_traces(tiny_traces[0], edited(tiny_traces, "mixed", mixed))
    assert report.first is None
    assert any(
        "hold -inf (214 cells) and 0 (never written) (56 cells)" in n and "more than one convention" in n
        for n in report.notes
    ), report.notes


def test_a_custom_fill_of_the_reference_s_own_gives_no_note(model_dir, tmp_path):
    """A fill of -1e4 leaves score + fill in a forbidden cell, which is not the fill itself: the
    candidate's cells are compared with the reference's own, and a match needs no note."""
    folder = model_dir("tiny")
    model64 = GPT2.from_pretrained(folder, dtype="float64", mask_fill=-1e4)
    write_trace(tmp_path / "ref.safetensors", model64, SEED_INPUT_IDS, SEED_ATTENTION_MASK)
    model32 = GPT2.from_pretrained(folder, mask_fill=-1e4)
    tensors = trace_tensors(model32, SEED_INPUT_IDS, SEED_ATTENTION_MASK)
    save_trace(tmp_path / "c.safetensors", tensors, trace_metadata(model32, "tiny", None, []))
    report = compare_traces(tmp_path / "ref.safetensors", tmp_path / "c.safetensors")
    assert report.first is None and report.notes == []
