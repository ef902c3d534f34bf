"""`gpt2np trace --grads` and `gpt2np compare` on the backward: the labels, the loss, every
gradient at a point and every parameter's, in the order backpropagation computes them; compare
walks them from the loss back and names the first that diverges, with the step that made it.

The values are gpt2np's own (tests/test_backward.py holds them equal to torch autograd); what is
checked here is that the file holds exactly them, under the right names, in the right order, and
that compare finds a planted change where it is. No torch: the mutant gallery runs these."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS
from test_compare import edited  # a copy of a trace with some tensors changed

from gpt2np import GPT2
from gpt2np.hooks import Hooks
from gpt2np.labels import labels_from_mask
from gpt2np.masks import position_ids_from_mask
from gpt2np.tools.cli import main
from gpt2np.tools.compare import compare_traces, format_report
from gpt2np.tools.trace import trace_metadata, trace_tensors, write_trace
from gpt2np.tools.tracefile import gradient_names_in, load_trace, point_of, save_trace

PROMPTS = ["It will rain in the", "I want to eat a big bowl of", "My dog is"]


@pytest.fixture(scope="module")
def tiny(model_dir):
    return model_dir("tiny")


@pytest.fixture(scope="module")
def grad_traces(tiny, tmp_path_factory):
    """tiny's float64 reference with gradients (calibrated) and its float32 trace with gradients."""
    out = tmp_path_factory.mktemp("grads")
    model32 = GPT2.from_pretrained(tiny)
    write_trace(
        out / "ref.safetensors",
        GPT2.from_pretrained(tiny, dtype="float64"),
        SEED_INPUT_IDS,
        SEED_ATTENTION_MASK,
        model_name="tiny",
        float32_model=model32,
        grads=True,
    )
    tensors = trace_tensors(model32, SEED_INPUT_IDS, SEED_ATTENTION_MASK, grads=True)
    return out / "ref.safetensors", tensors, trace_metadata(model32, "tiny", None, []), out


# --- trace --grads -------------------------------------------------------------------------------


def test_trace_grads_holds_the_labels_the_loss_and_every_gradient(tmp_path, tiny, tokenizer_dir, capsys):
    path = tmp_path / "g.safetensors"
    args = ["trace", *PROMPTS, "--model", str(tiny), "--tokenizer", str(tokenizer_dir), "--out", str(path), "--grads"]
    assert main(args) == 0
    assert "34 points of a [3, 8] batch, float32, mask_fill min, the loss and 62 gradients" in capsys.readouterr().out
    tensors, meta = load_trace(path)
    ids, mask = tensors["input_ids"], tensors["attention_mask"]
    np.testing.assert_array_equal(tensors["labels"], labels_from_mask(ids, mask))  # the default: next-token
    assert tensors["labels"].dtype == np.int64
    model = GPT2.from_pretrained(tiny)
    loss, params = model.loss_and_grads(ids, attention_mask=mask)
    _, cache = model.run_with_cache(ids, attention_mask=mask, incl_bwd=True)
    grads = {k: v for k, v in cache.items() if k.endswith("_grad")}
    assert len(grads) == 34 and len(params) == 28  # every point's gradient, every parameter's
    assert tensors["loss"].shape == (1,) and float(tensors["loss"][0]) == pytest.approx(loss, rel=1e-6)
    for name, a in {**grads, **params}.items():
        np.testing.assert_array_equal(tensors[name], a, err_msg=name)
    names = json.loads(meta["grads"])
    assert names == gradient_names_in(tensors) and set(names) == {"loss", *grads, *params}
    assert names[:3] == ["loss", "logits_grad", "ln_final.hook_normalized_grad"]
    assert names[-2:] == ["transformer.wpe.weight", "transformer.wte.weight"]


def test_the_file_s_order_is_the_order_backpropagation_computes_them(tiny):
    """The points' gradients in the file come in the order the backward pass hands them to its
    hooks (measured, not assumed); each parameter's right after the gradient at its layer's input."""
    model = GPT2.from_pretrained(tiny)
    names = model.activation_names()
    seen = Hooks(names, record=names, dtype=model.dtype)  # the cache fills in the order the hooks are called
    model._backward_with(seen, SEED_INPUT_IDS, SEED_ATTENTION_MASK, position_ids_from_mask(SEED_ATTENTION_MASK), None)
    tensors = trace_tensors(model, SEED_INPUT_IDS, SEED_ATTENTION_MASK, grads=True)
    order = gradient_names_in(tensors)
    assert [point_of(n) for n in order if point_of(n)] == list(seen.cache)
    position = {n: i for i, n in enumerate(order)}
    for layer, made_with in [
        ("mlp.c_proj", "blocks.1.mlp.hook_post_grad"),
        ("mlp.c_fc", "blocks.1.ln2.hook_normalized_grad"),
        ("attn.c_proj", "blocks.1.attn.hook_z_grad"),
        ("attn.c_attn", "blocks.1.ln1.hook_normalized_grad"),
    ]:
        assert position[f"transformer.h.1.{layer}.weight"] == position[made_with] + 1, layer
    assert position["transformer.h.1.ln_2.bias"] + 1 == position["blocks.1.hook_resid_mid_grad"]


def test_labels_are_given_per_row(tmp_path, tiny, capsys):
    path = tmp_path / "l.safetensors"
    rows = ["--ids", "5,6,7,8", "--ids", "9,10"]  # the second row is left-padded to 4
    labels = ["--labels=-100,6,-100,8", "--labels=-100,10"]
    assert main(["trace", "--model", str(tiny), *rows, "--pad-id", "0", "--grads", *labels, "--out", str(path)]) == 0
    tensors, _ = load_trace(path)
    expected = np.array([[-100, 6, -100, 8], [-100, -100, -100, 10]])
    np.testing.assert_array_equal(tensors["labels"], expected)
    loss, _ = GPT2.from_pretrained(tiny).loss_and_grads(
        tensors["input_ids"], expected, tensors["attention_mask"]
    )  # 3 labels counted: 6, 8 and 10
    assert float(tensors["loss"][0]) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labels=-100,6"], "--labels is for the gradients: pass --grads"),
        (["--grads", "--labels=-100,6"], "1 --labels for 2 rows"),
        (["--grads", "--labels=1,2,3,4,5", "--labels=1"], "has 5 labels, but the rows are 2 tokens long"),
        (["--grads", "--labels=-100,6", "--labels=-100,99999"], "is neither a token id"),
        (["--grads", "--labels=-100,x", "--labels=-100,1"], "'x' is not an integer"),
    ],
)
def test_bad_labels_are_named(tmp_path, tiny, capsys, extra, message):
    args = [
        "trace",
        "--model",
        str(tiny),
        "--ids",
        "5,6",
        "--ids",
        "7,8",
        *extra,
        "--out",
        str(tmp_path / "x.safetensors"),
    ]
    assert main(args) == 1  # cli.EXIT_ERROR: an InputError, named
    assert message in capsys.readouterr().err


# --- compare on the backward ----------------------------------------------------------------------


def test_a_correct_float32_run_passes_every_gradient(grad_traces):
    ref, tensors, _, out = grad_traces
    save_trace(out / "f32.safetensors", tensors, {})
    report = compare_traces(ref, out / "f32.safetensors")
    text = format_report(report, ref, "f32")
    assert report.first is None and report.first_grad is None, text
    assert [r.name for r in report.rows if r.name in report.grads] == gradient_names_in(tensors)
    assert text.endswith("agree within tolerance, and so do the loss and all 62 gradients")
    assert "the loss and the gradients, from the loss back to the embeddings" in text


@pytest.mark.parametrize(
    "name, factor, hint",
    [
        ("blocks.0.attn.hook_q_grad", -1.0, "sign flipped"),
        ("blocks.1.mlp.hook_pre_grad", 2.0, "2 x the reference's"),
        ("transformer.h.0.ln_1.weight", 0.5, "0.5 x the reference's"),
    ],
)
def test_a_changed_gradient_is_the_first_divergence_with_its_diagnosis(grad_traces, name, factor, hint):
    """Every later gradient left as it was: the walk from the loss must stop at exactly the changed one."""
    path = edited(
        grad_traces, f"scaled-{name}", lambda t: t.__setitem__(name, (t[name] * factor).astype(t[name].dtype))
    )
    report = compare_traces(grad_traces[0], path)
    text = format_report(report, grad_traces[0], path)
    assert report.first is None and report.first_grad is not None and report.first_grad.name == name, text
    assert hint in report.first_grad.note, text
    assert f"first divergence in the backward: {name}" in text and "forward: no divergence" in text


def test_the_first_divergence_is_the_one_nearest_the_loss(grad_traces):
    """Two gradients changed: the one backpropagation computes first (block 1's, nearer the loss) is named."""

    def change(t):
        for name in ("blocks.0.hook_resid_mid_grad", "blocks.1.hook_resid_mid_grad"):
            t[name] = t[name] * 3

    report = compare_traces(grad_traces[0], edited(grad_traces, "two", change))
    assert report.first_grad.name == "blocks.1.hook_resid_mid_grad"
    text = format_report(report, grad_traces[0], "two")
    assert "made by ln_2's backward" in text and "from blocks.1.ln2.hook_normalized_grad, which agrees" in text


def test_the_gradient_of_a_mean_taken_as_a_sum_is_named(grad_traces):
    n = int(
        ((SEED_INPUT_IDS[:, 1:] > -1) & (labels_from_mask(SEED_INPUT_IDS, SEED_ATTENTION_MASK)[:, 1:] != -100)).sum()
    )

    def change(t):
        t["logits_grad"] = t["logits_grad"] * n

    report = compare_traces(grad_traces[0], edited(grad_traces, "sum", change))
    assert report.first_grad.name == "logits_grad"
    assert f"N = {n} labels are counted, and the loss is their mean: this gradient looks not divided by N" in (
        report.first_grad.note
    )


def test_a_forward_divergence_is_named_first_and_the_gradients_inherit_it(grad_traces):
    def change(t):
        t["blocks.1.mlp.hook_post"] = t["blocks.1.mlp.hook_post"] * 1.01
        t["blocks.1.mlp.hook_post_grad"] = t["blocks.1.mlp.hook_post_grad"] * 1.01

    report = compare_traces(grad_traces[0], edited(grad_traces, "fwd", change))
    text = format_report(report, grad_traces[0], "fwd")
    assert report.first.name == "blocks.1.mlp.hook_post" and report.first_grad.name == "blocks.1.mlp.hook_post_grad"
    assert (
        "The forward diverges first (blocks.1.mlp.hook_post): the gradients inherit that; fix the forward first" in text
    )


def test_nan_born_in_a_gradient_is_named_there(grad_traces):
    def change(t):
        t["blocks.0.attn.hook_pattern_grad"] = t["blocks.0.attn.hook_pattern_grad"].copy()
        t["blocks.0.attn.hook_pattern_grad"][1, 0, 4, 2] = np.nan

    report = compare_traces(grad_traces[0], edited(grad_traces, "nan", change))
    assert report.first_grad.name == "blocks.0.attn.hook_pattern_grad"
    assert "1 non-finite values (e.g. nan) at real tokens (row 1: token 4)" in report.first_grad.note


def test_a_parameter_gradient_saved_transposed_is_named(grad_traces):
    def change(t):
        for name in gradient_names_in(t):
            if name.startswith("transformer.h.") and t[name].ndim == 2:
                t[name] = np.ascontiguousarray(t[name].T)

    report = compare_traces(grad_traces[0], edited(grad_traces, "transposed", change))
    first = report.first_grad
    assert first.name == "transformer.h.1.mlp.c_proj.weight" and first.verdict == "SHAPE"
    assert "given transposed, as torch's nn.Linear stores its weight [out, in]" in first.note
    square = next(r for r in report.rows if r.name == "transformer.h.1.attn.c_proj.weight")  # [C, C]: same shape
    assert square.verdict == "DIVERGES" and "axes in and out swapped" in square.note


def test_a_scalar_loss_is_one_number_either_way(grad_traces):
    from safetensors.numpy import save_file

    _, tensors, _, out = grad_traces
    path = out / "scalar.safetensors"
    save_file({**tensors, "loss": tensors["loss"].reshape(())}, str(path))  # as torch's loss.numpy() is: 0-d
    assert load_trace(path)[0]["loss"].shape == ()
    report = compare_traces(grad_traces[0], path)
    assert report.first_grad is None and next(r for r in report.rows if r.name == "loss").verdict == "ok"


def test_a_reference_with_gradients_but_no_labels_is_bad_usage(grad_traces, tmp_path, capsys):
    ref, _, _, _ = grad_traces
    tensors, meta = load_trace(ref)
    save_trace(tmp_path / "r.safetensors", {k: v for k, v in tensors.items() if k != "labels"}, meta)
    assert main(["compare", str(tmp_path / "r.safetensors"), str(ref)]) == 2
    assert "it holds gradients but no labels" in capsys.readouterr().err


def test_the_pattern_s_gradient_at_a_pad_key_is_not_compared(grad_traces):
    """dL/dp[i, j] = dz_i . v_j: at a pad key j it holds the pad's value, which transformers and
    gpt2np define differently (a pad query's empty row): a convention, left out like a pad's values."""

    def change(t):
        g = t["blocks.1.attn.hook_pattern_grad"].copy()
        g[..., SEED_ATTENTION_MASK[:, None, None, :].repeat(g.shape[2], axis=2).repeat(g.shape[1], axis=1) == 0] += 1.0
        t["blocks.1.attn.hook_pattern_grad"] = g

    report = compare_traces(grad_traces[0], edited(grad_traces, "padkeys", change))
    assert report.first_grad is None, format_report(report, grad_traces[0], "padkeys")
