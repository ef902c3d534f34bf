"""docs/cross-checking.md's worked example: each deliberately wrong GPT-2 is caught by
compare at the exact point where it goes wrong; the correct float32 one passes everywhere."""

from __future__ import annotations

import importlib.util
import numpy as np
import pytest

from conftest import ROOT, SEED_ATTENTION_MASK, SEED_INPUT_IDS
from gpt2np import GPT2
from gpt2np.tools.compare import compare_traces, format_report
from gpt2np.tools.trace import write_trace


def load_script():
    spec = importlib.util.spec_from_file_location("wrong_variants", ROOT / "scripts" / "wrong_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wv = load_script()


@pytest.fixture(scope="module")
def sharp(model_dir, tmp_path_factory):
    return wv.sharpen(model_dir("tiny"), tmp_path_factory.mktemp("models") / "tiny-sharp")


@pytest.fixture(scope="module", params=["min", "-1e9", "-inf"])
def traces(request, sharp, tmp_path_factory):
    """A float64 reference (with gpt2np's float32 error per point) and every variant's trace."""
    fill = request.param
    out = tmp_path_factory.mktemp(f"traces{fill}")
    ref = out / "reference.safetensors"
    model64 = GPT2.from_pretrained(sharp, dtype="float64", mask_fill=fill)
    write_trace(ref, model64, SEED_INPUT_IDS, SEED_ATTENTION_MASK, model_name="tiny-sharp",
                float32_model=GPT2.from_pretrained(sharp, mask_fill=fill))  # fmt: skip
    paths = {p.stem: p for p in wv.write_variants(ref, sharp, out / "variants")}
    return fill, ref, paths


def test_the_sharp_head_has_scores_that_overflow_a_naive_softmax(sharp):
    model = GPT2.from_pretrained(sharp)
    _, cache = model.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, names_filter="blocks.0.attn.hook_attn_scores")
    scores = cache["blocks.0.attn.hook_attn_scores"]
    assert scores[scores > -1e30].max() > np.log(np.finfo(np.float32).max)  # 88.7


def test_the_correct_float32_run_passes_every_point(traces, sharp):
    fill, ref, paths = traces
    report = compare_traces(ref, paths["correct"])
    assert report.first is None, format_report(report, ref, paths["correct"])
    assert not report.missing and len(report.rows) == 3 + len(GPT2.from_pretrained(sharp).activation_names())


@pytest.mark.parametrize("variant", list(wv.VARIANTS))
def test_each_wrong_variant_is_caught_at_its_point(traces, variant):
    fill, ref, paths = traces
    report = compare_traces(ref, paths[variant])
    text = format_report(report, ref, paths[variant])
    if variant == "mask-fill-twice" and fill == "-inf":
        # -inf + -inf = -inf: adding the mask twice is harmless with this fill, and compare agrees
        assert report.first is None, text
        return
    expected = wv.VARIANTS[variant][1]
    assert report.first is not None and report.first.name == expected, text
    assert f"first divergence: {expected}" in text
    names = [r.name for r in report.rows]
    assert all(r.verdict == "ok" for r in report.rows[: names.index(expected)]), text  # nothing before it
