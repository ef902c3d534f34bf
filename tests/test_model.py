"""The model's own promises: padding changes nothing for real tokens, every fill agrees, no
NaN ever (an overflow is an error naming where it began), dtypes are kept, weights are mapped
not copied, torch is never needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, SEED_ATTENTION_MASK, SEED_INPUT_IDS

import gpt2np.layers
import gpt2np.model
from gpt2np import GPT2, InputError, ModelError

FILLS = ["-inf", "-1e9", "min"]


@pytest.fixture(scope="module")
def tiny(model_dir):
    return model_dir("tiny")


@pytest.mark.parametrize("name", ["tiny", "small-outliers", "gpt2-shaped"])
@pytest.mark.parametrize("fill", FILLS)
def test_padded_real_tokens_equal_the_sequence_alone(model_dir, name, fill):
    model = GPT2.from_pretrained(model_dir(name), mask_fill=fill)
    batch = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
    for row, mask in zip(range(3), SEED_ATTENTION_MASK.astype(bool)):
        alone = model(SEED_INPUT_IDS[row][mask][None]).logits[0]
        # not bit for bit: BLAS blocks a [3, 8] batch differently from a [1, 5] one; 1e-5
        # relative to the logits' size (the outlier model's logits reach tens)
        assert np.abs(batch[row][mask] - alone).max() <= 1e-5 * max(1.0, np.abs(alone).max())


def test_real_token_outputs_are_identical_for_every_fill(tiny):
    outs = [
        GPT2.from_pretrained(tiny, mask_fill=f)(
            SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_hidden_states=True
        )
        for f in FILLS + [-5e4]
    ]
    real = SEED_ATTENTION_MASK.astype(bool)
    for out in outs:
        assert np.isfinite(out.logits).all()
        np.testing.assert_array_equal(out.logits[real], outs[0].logits[real])
        for h, h0 in zip(out.hidden_states, outs[0].hidden_states):
            assert np.isfinite(h).all()
            np.testing.assert_array_equal(h[real], h0[real])


def test_outputs_shapes_and_attention_rows(tiny):
    model = GPT2.from_pretrained(tiny)
    cfg = model.config
    out = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (3, 8, cfg.vocab_size)
    assert len(out.hidden_states) == cfg.n_layer + 1 and all(h.shape == (3, 8, cfg.n_embd) for h in out.hidden_states)
    assert len(out.attentions) == cfg.n_layer and all(a.shape == (3, cfg.n_head, 8, 8) for a in out.attentions)
    for a in out.attentions:
        sums = a.sum(-1)  # [B, H, T]
        real = np.broadcast_to(SEED_ATTENTION_MASK[:, None, :] == 1, sums.shape)
        np.testing.assert_allclose(sums[real], 1, atol=1e-5)  # real queries: a distribution
        assert (sums[~real] == 0).all()  # pad queries attend to nothing
        assert (np.triu(a, k=1) == 0).all()  # nobody sees the future
    assert out["logits"] is out.logits


def test_one_dimensional_input_is_one_sequence(tiny):
    model = GPT2.from_pretrained(tiny)
    ids = SEED_INPUT_IDS[1]
    out = model(ids, output_hidden_states=True)
    assert out.logits.shape == (8, model.config.vocab_size)
    np.testing.assert_array_equal(out.logits, model(ids[None]).logits[0])
    assert out.hidden_states[0].shape == (8, model.config.n_embd)


def test_default_positions_come_from_the_mask(tiny):
    model = GPT2.from_pretrained(tiny)
    positions = np.cumsum(SEED_ATTENTION_MASK, axis=1) - 1
    positions[SEED_ATTENTION_MASK == 0] = 0
    a = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits
    b = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, position_ids=positions).logits
    np.testing.assert_array_equal(a, b)
    c = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, position_ids=np.arange(8)).logits
    assert not np.allclose(a[0, 3:], c[0, 3:])  # arange shifts "It will rain in the" by its 3 pads


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_everywhere(tiny, dtype):
    model = GPT2.from_pretrained(tiny, dtype=dtype)
    out = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_hidden_states=True, output_attentions=True)
    assert out.logits.dtype == dtype
    assert all(h.dtype == dtype for h in out.hidden_states)
    assert all(a.dtype == dtype for a in out.attentions)
    assert all(a.dtype == dtype for a in model.weights.arrays())


def test_weights_are_memory_mapped_not_copied(tiny):
    import mmap

    model = GPT2.from_pretrained(tiny)
    for array in model.weights.arrays():
        assert not array.flags.writeable and not array.flags.owndata
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)  # a view of the mapped file
    assert model.weights.lm_head is model.weights.wte  # tied, one array
    assert model.num_parameters == sum(a.size for a in model.weights.arrays())


def test_cached_steps_equal_the_full_forward(tiny):
    """Prompt in one pass, then token by token through the KV cache: same logits."""
    from gpt2np.kv_cache import KVCache
    from gpt2np.masks import position_ids_from_mask

    model = GPT2.from_pretrained(tiny)
    cfg = model.config
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    full = model.forward(ids, mask, position_ids_from_mask(mask)).logits
    cache = KVCache(cfg.n_layer, 3, cfg.n_head, 8, cfg.head_dim, np.float32)
    positions = position_ids_from_mask(mask)
    first = model.forward(ids[:, :5], mask[:, :5], positions[:, :5], cache).logits
    steps = [
        model.forward(ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], cache).logits for t in range(5, 8)
    ]
    stepped = np.concatenate([first] + steps, axis=1)
    real = mask.astype(bool)
    assert np.abs(stepped - full)[real].max() <= 1e-5
    assert cache.length == 8


def test_library_runs_without_torch_or_transformers(tiny, tokenizer_dir):
    """Block the imports in a fresh interpreter: load, tokenize, run, generate."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from gpt2np import GPT2, Tokenizer
        tok = Tokenizer.from_pretrained({str(tokenizer_dir)!r})
        tok.padding_side = "left"; tok.pad_token = tok.eos_token
        batch = tok(["It will rain in the", "My dog is"], padding=True)
        model = GPT2.from_pretrained({str(tiny)!r})
        model(batch["input_ids"], attention_mask=batch["attention_mask"])
        out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3)
        import gpt2np.hub, gpt2np.sampling, gpt2np.tools.cli
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print("ok", out.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok (2, 8)")


def test_logits_to_keep_gives_the_last_positions(tiny):
    """transformers' semantics: 0 keeps every position, N the last N (all of them when N >= T);
    hidden states and attentions still cover every position."""
    model = GPT2.from_pretrained(tiny)
    full = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, output_hidden_states=True).logits  # [3, 8, V]
    for n in (1, 3, 8, 20):
        out = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, logits_to_keep=n, output_hidden_states=True)
        assert out.logits.shape == (3, min(n, 8), full.shape[-1])
        np.testing.assert_allclose(out.logits, full[:, -n:], rtol=1e-5, atol=1e-5)
        assert all(h.shape[1] == 8 for h in out.hidden_states)
    np.testing.assert_array_equal(
        model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, logits_to_keep=0).logits, full
    )
    one = model(SEED_INPUT_IDS[1], logits_to_keep=np.int64(2)).logits  # one sequence: the batch axis dropped
    np.testing.assert_allclose(one, full[1, -2:], rtol=1e-5, atol=1e-5)


def test_logits_to_keep_runs_the_last_block_on_the_kept_positions_only(tiny, monkeypatch):
    """Nothing reads the last block's other positions, so its MLP sees only the kept ones; the
    logits are those of the full pass (to float32 noise: the matrix shapes differ)."""
    model = GPT2.from_pretrained(tiny)  # 2 layers
    full = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK).logits  # [3, 8, V]
    shapes, real = [], gpt2np.layers.linear

    def spy(x, layer):  # layers.mlp's linear: the MLP's c_fc and c_proj
        shapes.append(x.shape[:-1])
        return real(x, layer)

    monkeypatch.setattr(gpt2np.layers, "linear", spy)
    out = model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, logits_to_keep=2)
    assert shapes == [(3, 8), (3, 8), (3, 2), (3, 2)]
    np.testing.assert_allclose(out.logits, full[:, -2:], rtol=1e-5, atol=1e-5)
    shapes.clear()  # hidden states asked for: every position of every block, as before
    model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, logits_to_keep=2, output_hidden_states=True)
    assert shapes == [(3, 8)] * 4


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_a_bad_logits_to_keep_is_refused(tiny, bad):
    with pytest.raises(InputError, match="logits_to_keep must be an integer >= 0"):
        GPT2.from_pretrained(tiny)(SEED_INPUT_IDS, logits_to_keep=bad)


# --- never NaN: an overflow is an error naming where it began -------------------------------


def test_an_overflow_is_an_error_naming_where_it_began(overflowing_model_dir):
    """Finite weights too large for float32: the logits would be inf and NaN. Instead, our error
    names the first point that went non-finite, and NumPy prints no warnings on the way."""
    import warnings

    model = GPT2.from_pretrained(overflowing_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered" noise before our error
        with pytest.raises(
            ModelError,
            match=r"non-finite at ln_final\.hook_normalized \(row 0, token 0 \(a pad\)\).*inf. .*outgrew float32.*dtype='float64'",
        ):
            model(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
        with pytest.raises(ModelError, match=r"non-finite at ln_final\.hook_normalized \(row 0, token 0\)"):
            model(SEED_INPUT_IDS[1], logits_to_keep=1)  # the last position's logits are all it computes
    # float64 holds these values: the same weights run there
    assert np.isfinite(GPT2.from_pretrained(overflowing_model_dir, dtype="float64")(SEED_INPUT_IDS[1]).logits).all()


def test_a_hook_that_writes_nan_is_named_even_under_a_minus_inf_fill(tiny):
    """With mask_fill='-inf' the masked scores hold -inf on purpose: that is no error, so the point
    named is the one the hook broke."""
    model = GPT2.from_pretrained(tiny, mask_fill="-inf")

    def break_it(a, name):
        a[0, 5] = np.nan

    with pytest.raises(
        ModelError, match=r"non-finite at blocks\.1\.hook_mlp_out \(row 0, token 5\): 32 values are NaN, after a hook"
    ):
        model.run_with_hooks(
            SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, fwd_hooks=[("blocks.1.hook_mlp_out", break_it)]
        )


def test_a_decode_step_that_goes_non_finite_names_its_token(tiny):
    """The search for where it began runs the failed step again from the same cache: it must
    first take the step's keys and values back out (or the step would see them twice)."""
    from gpt2np.hooks import Hooks
    from gpt2np.kv_cache import KVCache
    from gpt2np.masks import position_ids_from_mask

    model = GPT2.from_pretrained(tiny)
    cfg = model.config
    ids, mask = SEED_INPUT_IDS, SEED_ATTENTION_MASK
    cache = KVCache(cfg.n_layer, 3, cfg.n_head, 10, cfg.head_dim, model.dtype)
    logits = model.forward(ids, mask, position_ids_from_mask(mask), cache, logits_to_keep=1).logits  # [3, 1, V]
    step = logits[:, -1].argmax(axis=-1)[:, None]  # [3, 1]
    full = np.concatenate([mask, np.ones((3, 1), dtype=mask.dtype)], axis=1)  # [3, 9]

    def break_row_2(a, name):
        a[2] = np.inf

    hooks = Hooks(model.activation_names(), fwd_hooks=[("blocks.0.hook_attn_out", break_row_2)], dtype=model.dtype)
    with pytest.raises(
        ModelError, match=r"non-finite at blocks\.0\.hook_attn_out \(row 2, token 8\): 32 values are inf"
    ):
        model.forward(step, full, position_ids_from_mask(full)[:, -1:], cache, hook=hooks)
