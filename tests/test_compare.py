"""gpt2np compare: rows in forward order, the first divergence, partial candidates, shape
hints, tolerances that pass a correct float32 run (ours, transformers') and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2, InputError
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
    ],
)
def test_a_malformed_reference_tensor_is_bad_usage(tiny_traces, tmp_path, case, change, message):
    ref = edited_reference(tiny_traces, tmp_path, case, change)
    with pytest.raises(InputError, match=message):
        compare_traces(ref, tiny_traces[3] / "f32.safetensors")


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
