"""gpt2np compare: rows in forward order, the first divergence, partial candidates, shape
hints, tolerances that pass a correct float32 run (ours, transformers') and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, InputError
from gpt2np.masks import position_ids_from_mask
from gpt2np.tools.compare import FACTOR, FLOOR, compare_traces, format_report, load_trace
from gpt2np.tools.trace import save_trace, trace_metadata, trace_tensors, write_trace

MODELS = ["tiny", "small-outliers", "odd", "gpt2-shaped"]


def batch_for(model_name):
    if model_name != "odd":
        return SEED_INPUT_IDS, SEED_ATTENTION_MASK
    ids = np.random.default_rng(0).integers(0, 1000, size=(3, 10))
    return ids, (np.arange(10)[None, :] >= np.array([0, 4, 9])[:, None]).astype(np.int64)


@pytest.fixture(scope="module")
def tiny_traces(model_dir, tmp_path_factory):
    """tiny's float64 reference (calibrated) and its float32 trace, both with fill 'min'."""
    folder = model_dir("tiny")
    out = tmp_path_factory.mktemp("tiny")
    model32 = GPT2.from_pretrained(folder)
    write_trace(
        out / "ref.safetensors",
        GPT2.from_pretrained(folder, dtype="float64"),
        SEED_INPUT_IDS,
        SEED_ATTENTION_MASK,
        model_name="tiny",
        float32_model=model32,
    )
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
