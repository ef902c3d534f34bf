"""gpt2np against transformers' stored outputs (tests/data/references.*), without torch.

The references were made by scripts/make_references.py from the random test models; the
models are rebuilt here from their seeds, and their sha256 must equal the one recorded, so a
mismatch can only mean gpt2np computes something else.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA, build_model
from gpt2np import GPT2
from gpt2np.hub import sha256_of

TOLERANCE = 1e-4  # max |logits - transformers| at every real position (issue 2)
META = json.loads((DATA / "references.json").read_text())
REF = np.load(DATA / "references.npz")
FILLS = ["-inf", "-1e9", "min"]
CASES = sorted({k.rsplit("/", 2)[0] for k in REF.files if k.endswith("/eager/top_ids")})  # "model/batch"
ATTNS = ["eager", "sdpa"]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name, fill="min"):
        if (name, fill) not in cache:
            folder = build_model(name)
            digest = sha256_of(folder / "model.safetensors")
            assert digest == META["models"][name]["sha256"], (
                f"the rebuilt test model {name} differs from the one the references were made from; "
                "rerun scripts/make_references.py"
            )
            cache[(name, fill)] = GPT2.from_pretrained(folder, mask_fill=fill)
        return cache[(name, fill)]

    return get


def inputs(case):
    return REF[f"{case}/input_ids"], REF[f"{case}/attention_mask"]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(models, case, attn, fill):
    name = case.split("/")[0]
    model = models(name, fill)
    ids, mask = inputs(case)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.astype(bool)
    logits = out.logits[real]  # [n_real, V]
    columns = REF[f"{name}/columns"]
    k = f"{case}/{attn}"
    assert np.abs(logits[:, columns] - REF[f"{k}/logits_columns"]).max() <= TOLERANCE
    top_ids, top_logits = REF[f"{k}/top_ids"], REF[f"{k}/top_logits"]
    assert np.abs(np.take_along_axis(logits, top_ids, axis=-1) - top_logits).max() <= TOLERANCE
    # transformers' best token is ours too (or within the tolerance of our best)
    assert (logits.max(axis=-1) - np.take_along_axis(logits, top_ids[:, :1], axis=-1)[:, 0]).max() <= TOLERANCE
    assert np.abs(out.hidden_states[-1][real] - REF[f"{k}/last_hidden"]).max() <= TOLERANCE


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", CASES)
def test_arange_positions_reproduce_transformers_plain_forward(models, case, attn):
    """transformers' forward (outside generate) numbers positions 0..T-1 even for pads."""
    name = case.split("/")[0]
    ids, mask = inputs(case)
    logits = models(name)(ids, attention_mask=mask, position_ids=np.arange(ids.shape[1])).logits[mask.astype(bool)]
    expected = REF[f"{case}/{attn}/arange_logits_columns"]
    assert np.abs(logits[:, REF[f"{name}/columns"]] - expected).max() <= TOLERANCE


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_matches_transformers(models, case, fill, use_cache):
    """Token for token against transformers' generate, eager and sdpa alike."""
    name = case.split("/")[0]
    model = models(name, fill)
    ids, mask = inputs(case)
    new_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=META["new_tokens"], use_cache=use_cache)
    max_length = model.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 5, use_cache=use_cache)
    for attn in ATTNS:
        k = f"{case}/{attn}"
        np.testing.assert_array_equal(new_tokens, REF[f"{k}/generate_new_tokens"])
        np.testing.assert_array_equal(max_length, REF[f"{k}/generate_max_length"])
        eos = int(REF[f"{k}/eos_token_id"])
        got = model.generate(ids, attention_mask=mask, max_new_tokens=META["new_tokens"], eos_token_id=eos, pad_token_id=0,
                             use_cache=use_cache)  # fmt: skip
        np.testing.assert_array_equal(got, REF[f"{k}/generate_eos"])


def test_eos_case_really_stops_a_row_early():
    """The eos references are only a test of stopping if some row did stop before the end."""
    stopped = 0
    for case in CASES:
        gen, eos = REF[f"{case}/eager/generate_eos"], int(REF[f"{case}/eager/eos_token_id"])
        T = REF[f"{case}/input_ids"].shape[1]
        stopped += int(((gen[:, T:-1] == eos).any(axis=1)).sum())
    assert stopped >= 3
