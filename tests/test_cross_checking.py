"""docs/cross-checking.md's worked example: each deliberately wrong GPT-2 is caught by
compare at the exact point where it goes wrong; the correct float32 one passes everywhere."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SEED_ATTENTION_MASK, SEED_INPUT_IDS

from gpt2np import GPT2
from gpt2np.tools.compare import compare_traces, format_report
from gpt2np.tools.trace import write_trace
from gpt2np.tools.tracefile import load_trace


def load_script():
    spec = importlib.util.spec_from_file_location("wrong_variants", ROOT / "scripts" / "data" / "wrong_variants.py")
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
    write_trace(
        ref,
        model64,
        SEED_INPUT_IDS,
        SEED_ATTENTION_MASK,
        model_name="tiny-sharp",
        float32_model=GPT2.from_pretrained(sharp, mask_fill=fill),
    )
    paths = {p.stem: p for p in wv.write_variants(ref, sharp, out / "variants")}
    return fill, ref, paths


def test_the_sharp_head_has_scores_that_overflow_a_naive_softmax(sharp):
    model = GPT2.from_pretrained(sharp)
    _, cache = model.run_with_cache(
        SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, names_filter="blocks.0.attn.hook_attn_scores"
    )
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
    why = {
        "pad-rows-nan": "at pads only (row 0: tokens 0-2; row 2: tokens 0-4). The query of a left pad may see no key",
        "mask-not-applied": "forbidden cells get weight",
        "heads-major": "looks like [B, H, T, D]",
    }
    assert why.get(variant, "") in report.first.note, text


@pytest.mark.parametrize("convention", list(wv.CONVENTIONS))
def test_each_convention_passes_with_a_note(traces, convention):
    """Correct code that forbids cells another way: -inf whatever the reference's fill; a loop
    over the allowed keys only, which never writes the forbidden cells."""
    fill, ref, paths = traces
    report = compare_traces(ref, paths[convention])
    text = format_report(report, ref, paths[convention])
    assert report.first is None, text
    if convention == "fill-minus-inf" and fill == "-inf":  # the reference's own fill: nothing to say
        assert report.notes == [], text
        return
    (note,) = report.notes
    found = "hold -inf" if convention == "fill-minus-inf" else "hold 0 (never written)"
    assert note.startswith(f"hook_attn_scores of blocks 0-1: the forbidden cells {found}"), text


# --- docs/cross-checking.md shows real output ------------------------------------------------

DOC = ROOT / "docs" / "cross-checking.md"
ROW = re.compile(r"^(\S+)\s+\[[\d, ]+\]\s.*?\s(ok|DIVERGES|SHAPE)(  \(.*\))?$")


def doc_commands(text: str):
    """(command, shown output) of every ```console block, in order."""
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command, _, output = block.partition("\n")
        yield command.removeprefix("$ "), output


def run_doc_command(command: str, cwd: Path, tiny: Path) -> subprocess.CompletedProcess:
    """Run a command of the page from `cwd`, with this checkout's tiny model (the tokenizer ships in the package)."""
    command = command.replace("weights/test-models/tiny ", f"{shlex.quote(str(tiny))} ")
    command = command.replace("python scripts/", f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'scripts'))}/")
    command = re.sub(r"^gpt2np ", f"{shlex.quote(sys.executable)} -m gpt2np ", command)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True)


def comparable(output: str) -> list:
    """compare's table rows by (point, verdict, note): float32's last digits vary by CPU."""
    return [m.group(1, 2, 3) if (m := ROW.match(line)) else line for line in output.splitlines()]


def test_the_page_shows_what_the_commands_print(model_dir, tmp_path):
    commands = list(doc_commands(DOC.read_text(encoding="utf-8")))
    assert len(commands) >= 9
    for command, shown in commands:
        result = run_doc_command(command, tmp_path, model_dir("tiny"))
        assert result.stderr == "", f"{command}: {result.stderr}"
        assert comparable(result.stdout) == comparable(shown), (
            f"docs/cross-checking.md shows stale output for `{command}`"
        )


def test_the_pages_python_writer_writes_a_trace_compare_reads(traces, tmp_path):
    """Section 3's hand-written safetensors writer: its file passes compare."""
    fill, ref, paths = traces
    code = re.search(r"```python\n(import json, struct.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S).group(1)
    namespace = {}
    exec(code, namespace)
    tensors, _ = load_trace(paths["correct"])
    namespace["write_safetensors"](tmp_path / "mine.safetensors", {k: np.array(v) for k, v in tensors.items()})
    assert compare_traces(ref, tmp_path / "mine.safetensors").first is None
    metadata = {"dtype": "float32", "model": "gpt2.c", "mask_fill": fill, "compiler": "cc -O2"}  # the last: ignored
    namespace["write_safetensors"](
        tmp_path / "meta.safetensors", {k: np.array(v) for k, v in tensors.items()}, metadata
    )
    report = compare_traces(ref, tmp_path / "meta.safetensors")
    assert f"candidate  meta.safetensors: float32, model gpt2.c, mask_fill {fill}\n" in format_report(
        report, ref, "meta.safetensors"
    )


# --- the backward: wrong training implementations ----------------------------------------------------


def grad_reference(sharp, fill, out):
    """A float64 reference with gradients, calibrated (gpt2np's float32 error per gradient)."""
    ref = out / "reference-grads.safetensors"
    write_trace(
        ref,
        GPT2.from_pretrained(sharp, dtype="float64", mask_fill=fill),
        SEED_INPUT_IDS,
        SEED_ATTENTION_MASK,
        model_name="tiny-sharp",
        float32_model=GPT2.from_pretrained(sharp, mask_fill=fill),
        grads=True,
    )
    return ref


@pytest.fixture(scope="module", params=["min", "-inf"])
def grad_traces(request, sharp, tmp_path_factory):
    """A float64 reference with gradients and each wrong backward's trace."""
    out = tmp_path_factory.mktemp(f"grads{request.param}")
    ref = grad_reference(sharp, request.param, out)
    return ref, {p.stem: p for p in wv.write_variants(ref, sharp, out / "variants")}


def test_the_correct_float32_backward_passes_every_gradient(grad_traces):
    ref, paths = grad_traces
    report = compare_traces(ref, paths["correct-grads"])
    assert report.first is None and report.first_grad is None, format_report(report, ref, "correct-grads")
    assert not report.missing and len(report.grads) == 63  # the loss, 34 points' gradients, 28 parameters'


@pytest.mark.parametrize("variant", list(wv.BACKWARD_VARIANTS))
def test_each_wrong_backward_is_caught_at_its_gradient(grad_traces, variant):
    """The forward agrees, and every gradient before the expected one (from the loss) too."""
    ref, paths = grad_traces
    report = compare_traces(ref, paths[variant])
    text = format_report(report, ref, paths[variant])
    expected = wv.BACKWARD_VARIANTS[variant][1]
    assert report.first is None, text
    assert report.first_grad is not None and report.first_grad.name == expected, text
    rows = [r for r in report.rows if r.name in report.grads]
    assert all(r.verdict == "ok" for r in rows[: [r.name for r in rows].index(expected)]), text
    why = {
        "layernorm-backward-no-mean": "made by ln_f's backward (its three terms: gain, mean, variance), "
        "from ln_final.hook_normalized_grad, which agrees",
        "softmax-backward-no-rowsum": "made by softmax's backward",
        "loss-grad-not-averaged": "looks not divided by N",
        "weight-grads-transposed": "nn.Linear stores its weight [out, in]",
    }[variant]
    assert why in text, text


@pytest.mark.transformers
def test_the_page_s_torch_writer_passes_with_torch_s_float32_gradients(transformers, sharp, tmp_path):
    """Section 7's PyTorch script, run on transformers' float32 model: someone else's correct
    float32 backward passes every gradient it writes. Prints the share of the tolerance it uses."""
    ref = grad_reference(sharp, "min", tmp_path)  # min: transformers' own fill
    code = re.search(r"```python\n(import torch\n.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S).group(1)
    (tmp_path / "cross-check-demo").mkdir()
    (tmp_path / "cross-check-demo" / "reference-grads.safetensors").symlink_to(ref)
    (tmp_path / "cross-check-demo" / "tiny-sharp").symlink_to(sharp)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(code, {})
    finally:
        os.chdir(cwd)
    report = compare_traces(ref, tmp_path / "cross-check-demo" / "torch-grads.safetensors")
    text = format_report(report, ref, "torch-grads")
    assert report.first is None and report.first_grad is None, text
    assert sum(r.name in report.grads for r in report.rows) == 33  # loss, 4 points' gradients, 28 parameters'
    used = max(r.measurement.diff / (r.measurement.scale or 1) / r.tolerance for r in report.rows if r.measurement)
    print(f"torch float32 autograd uses at most {used:.2f} of the tolerance")
