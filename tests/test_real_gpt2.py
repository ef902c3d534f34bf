"""Facts about the real GPT-2 124M. These run only where its weights are on disk
(`gpt2np download gpt2`, or a Hugging Face cache that has gpt2); elsewhere they skip and
say why. The expected values are published facts, not numbers we computed:
- the seed's worked example: "It will rain in the", greedy, max_length=10 ->
  "It will rain in the morning, and the rain";
- GPT-2 small has 124,439,808 parameters (transformers' count, lm_head tied);
- the hub's model.safetensors is 548105171 bytes with the sha256 in gpt2np.hub.KNOWN_FILES.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_ATTENTION_MASK, SEED_INPUT_IDS, SEED_SENTENCES

from gpt2np import GPT2
from gpt2np.hub import KNOWN_FILES, sha256_of

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def gpt2(real_gpt2):
    return GPT2.from_pretrained(real_gpt2)


def test_the_worked_example(gpt2, tokenizer):
    ids = tokenizer("It will rain in the")["input_ids"]
    out = gpt2.generate(ids, max_length=10)
    assert tokenizer.decode(out[0]) == "It will rain in the morning, and the rain"


def test_the_seed_batch_is_tokenized_as_published(tokenizer):
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    try:
        batch = tokenizer(SEED_SENTENCES, padding=True)
    finally:
        tokenizer.padding_side, tokenizer.pad_token = "right", None
    np.testing.assert_array_equal(batch["input_ids"], SEED_INPUT_IDS)
    np.testing.assert_array_equal(batch["attention_mask"], SEED_ATTENTION_MASK)


def test_parameter_count_and_checkpoint_digest(gpt2, real_gpt2):
    assert gpt2.num_parameters == 124_439_808
    size, digest = KNOWN_FILES[("openai-community/gpt2", "model.safetensors")]
    path = real_gpt2 / "model.safetensors"
    assert path.stat().st_size == size and sha256_of(path) == digest


@pytest.mark.parametrize("fill", ["-inf", "-1e9", "min"])
def test_seed_batch_matches_transformers(real_gpt2, hf_model, fill):
    import torch

    model = GPT2.from_pretrained(real_gpt2, mask_fill=fill)
    real = SEED_ATTENTION_MASK.astype(bool)
    positions = np.cumsum(SEED_ATTENTION_MASK, axis=1) - 1
    positions[~real] = 0
    for attn in ("eager", "sdpa"):
        hf = hf_model(real_gpt2, attn)
        with torch.no_grad():
            ref = hf(
                torch.tensor(SEED_INPUT_IDS),
                attention_mask=torch.tensor(SEED_ATTENTION_MASK),
                position_ids=torch.tensor(positions),
            ).logits.numpy()
            expected = hf.generate(
                torch.tensor(SEED_INPUT_IDS),
                attention_mask=torch.tensor(SEED_ATTENTION_MASK),
                max_new_tokens=20,
                do_sample=False,
                pad_token_id=50256,
            ).numpy()
        logits = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
        assert np.abs(logits - ref)[real].max() <= 1e-4
        got = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=20)
        np.testing.assert_array_equal(got, expected)


def test_real_float32_is_as_close_to_float64_as_transformers(real_gpt2, hf_model):
    """Real GPT-2 has residual dimensions in the hundreds: where a sloppy LayerNorm shows."""
    import torch

    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    real = mask.astype(bool)
    positions = np.cumsum(mask, axis=1) - 1
    positions[~real] = 0
    args = dict(attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
    with torch.no_grad():
        truth = hf_model(real_gpt2, "eager", "float64")(torch.tensor(ids), **args).logits.numpy()[real]
        theirs = (
            hf_model(real_gpt2, "eager", "float32")(torch.tensor(ids), **args).logits.numpy()[real].astype(np.float64)
        )
    ours = GPT2.from_pretrained(real_gpt2)(ids, attention_mask=mask).logits[real].astype(np.float64)

    def rms(d):
        return float(np.sqrt(np.mean(d**2)))

    print(f"real gpt2: rms ours {rms(ours - truth):.3g} vs transformers {rms(theirs - truth):.3g}")
    assert rms(ours - truth) <= rms(theirs - truth)
