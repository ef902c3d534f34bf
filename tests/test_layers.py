"""The position-wise layers against float64 formulas, and their dtype discipline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpt2np.layers
from gpt2np.layers import gelu, layer_norm, linear, lm_head, softmax
from gpt2np.weights import LayerNorm, Linear

rng = np.random.default_rng(0)


def residual_stream(n=64, C=768):
    """Like GPT-2's: mostly small values, plus a few dimensions in the hundreds."""
    x = rng.standard_normal((n, C)) * 2
    x[:, [7, 138, 447]] += [310.0, -450.0, 220.0]
    return x.astype(np.float32)


def norm_params(C):
    return LayerNorm(
        (1 + 0.1 * rng.standard_normal(C)).astype(np.float32), (0.1 * rng.standard_normal(C)).astype(np.float32)
    )


def layer_norm_float64(x, norm, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * norm.weight.astype(np.float64) + norm.bias.astype(np.float64)


def test_layer_norm_is_float32_rounding_of_the_exact_value():
    """The claim in layer_norm's docstring: computed in float64 and rounded once. Then each
    output is the float32 nearest to the exact value: within half a float32 ulp of it,
    element by element. (Done in float32, on these outlier dimensions the error is thousands of
    ulps; a tolerance relative to the largest output would let that through.)"""
    x, norm = residual_stream(), norm_params(768)
    out = layer_norm(x, norm, 1e-5)
    assert out.dtype == np.float32
    exact = layer_norm_float64(x, norm, 1e-5)
    ulps = np.abs(out - exact) / np.spacing(np.abs(out))  # [64, 768] error in units of float32's last place
    assert ulps.max() <= 0.5 + 1e-3


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_layer_norm_in_chunks_of_rows_is_still_exact(monkeypatch, rows):
    """layer_norm normalises LAYER_NORM_ROWS tokens at a time. With chunks of 1, 7 and 64 over
    2 x 100 tokens (boundaries everywhere, a partial last chunk), every token still gets the
    float32 rounding of its own exact value: no chunk is skipped, mixed up or half written."""
    monkeypatch.setattr(gpt2np.layers, "LAYER_NORM_ROWS", rows)
    x, norm = residual_stream(n=200), norm_params(768)
    out = layer_norm(x.reshape(2, 100, 768), norm, 1e-5)
    assert out.shape == (2, 100, 768)
    exact = layer_norm_float64(x, norm, 1e-5).reshape(2, 100, 768)
    assert (np.abs(out - exact) / np.spacing(np.abs(out))).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm_float64_is_the_formula(eps):
    """Biased variance (ddof 0, as torch), eps inside the square root: to float64 rounding."""
    x = residual_stream().astype(np.float64)
    x[:4] *= 1e-3  # small vectors: here eps's place matters
    norm = norm_params(768)
    out = layer_norm(x, norm, eps)
    assert np.abs(out - layer_norm_float64(x, norm, eps)).max() <= 1e-12


def test_one_pass_variance_would_lose_precision_on_outlier_dimensions():
    """Why layer_norm does not use E[x^2] - E[x]^2 in float32 (a sloppy LayerNorm)."""
    x, norm = residual_stream(), norm_params(768)
    x = x + np.float32(1000.0)  # a common offset makes the cancellation visible
    exact = layer_norm_float64(x, norm, 1e-5)
    mean = x.mean(-1, keepdims=True)
    var = (x * x).mean(-1, keepdims=True) - mean * mean  # all float32
    sloppy = (x - mean) / np.sqrt(var + np.float32(1e-5)) * norm.weight + norm.bias
    assert np.abs(sloppy - exact).max() > 100 * np.abs(layer_norm(x, norm, 1e-5) - exact).max()


def test_layer_norm_keeps_float64():
    x = residual_stream().astype(np.float64)
    norm = norm_params(768)
    assert layer_norm(x, norm, 1e-5).dtype == np.float64


def gelu_reference(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_matches_gpt2_tanh_formula():
    x = np.concatenate([np.linspace(-12, 12, 20001), rng.standard_normal(10000) * 4]).astype(np.float32)
    ref = gelu_reference(x)
    out = gelu(x.copy())
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() <= 2e-6  # clean: 5e-7 (float32 steps)


def test_layer_norms_sum_over_c_is_np_mean_bit_for_bit():
    """layer_norm divides np.add.reduce by C instead of calling np.mean (whose Python wrapper
    costs more than the sum for one token) and claims the same bits: written with np.mean, over
    more rows than one LAYER_NORM_ROWS chunk, it must give the identical array."""
    x = residual_stream(n=3 * gpt2np.layers.LAYER_NORM_ROWS + 5).astype(np.float64)  # float64 out: every bit shows
    norm = norm_params(x.shape[-1])
    centred = x - x.mean(-1, keepdims=True)
    normalised = centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + 1e-5)
    with_np_mean = normalised * norm.weight + norm.bias
    np.testing.assert_array_equal(layer_norm(x, norm, 1e-5), with_np_mean)


@pytest.mark.parametrize("chunk", [1000, 4096])
def test_gelu_in_chunks_is_the_formula_and_the_same_bits(monkeypatch, chunk):
    """gelu works GELU_CHUNK elements at a time; with small chunks over [3, 10001] elements
    (boundaries inside rows, a partial last chunk) the result is still the formula, and the
    same bits as in one chunk."""
    x = (rng.standard_normal((3, 10001)) * 4).astype(np.float32)
    whole = gelu(x.copy())  # 30003 elements: one chunk of the default size
    monkeypatch.setattr(gpt2np.layers, "GELU_CHUNK", chunk)
    out = gelu(x.copy())
    assert np.abs(out - gelu_reference(x)).max() <= 2e-6
    np.testing.assert_array_equal(out, whole)


def test_gelu_float64_is_the_formula():
    """In float64 the rounding noise is gone (clean: 2e-15), so the formula itself is checked:
    a constant off in its 4th digit (0.0447) moves the result by ~1e-5."""
    x = np.concatenate([np.linspace(-12, 12, 20001), rng.standard_normal(10000) * 4])
    assert np.abs(gelu(x.copy()) - gelu_reference(x)).max() <= 1e-13


def test_gelu_extremes_are_clean():
    x = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning escapes
        out = gelu(x.copy())
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, gelu_reference(x), atol=1e-6)


def test_softmax_rows_sum_to_one_and_are_stable():
    x = (rng.standard_normal((5, 7)) * 50 + 1000).astype(np.float32)  # exp(1000) would overflow unshifted
    p = softmax(x.copy())
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-6)
    ref = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    np.testing.assert_allclose(p, ref / ref.sum(-1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_along_the_given_axis(axis):
    x = rng.standard_normal((6, 9)) * 5  # float64: exact to rounding
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    expected = e / e.sum(axis=axis, keepdims=True)
    assert np.abs(softmax(x.copy(), axis=axis) - expected).max() <= 1e-15


def test_softmax_of_an_all_minus_inf_row_is_nan():
    """The raw fact attention.py has to deal with: 0 / 0."""
    p = softmax(np.array([[0.0, -np.inf], [-np.inf, -np.inf]], dtype=np.float32))
    np.testing.assert_array_equal(p[0], [1, 0])
    assert np.isnan(p[1]).all()


def test_softmax_of_an_all_minus_1e9_row_is_uniform():
    p = softmax(np.array([[-1e9 + 0.5, -1e9, -1e9 - 1.0]], dtype=np.float32))
    np.testing.assert_allclose(p, [[1 / 3, 1 / 3, 1 / 3]])  # the scores drown in the fill


@pytest.mark.parametrize("rows", [1, 7, 128])
def test_lm_head_equals_the_matmul(rows):
    wte = (rng.standard_normal((5000, 768)) * 0.1).astype(np.float32)
    x = rng.standard_normal((rows, 768)).astype(np.float32)
    out = lm_head(x[None], wte)
    assert out.shape == (1, rows, 5000) and out.dtype == np.float32
    exact = x.astype(np.float64) @ wte.T.astype(np.float64)
    assert np.abs(out[0] - exact).max() <= 1e-4


def test_lm_head_chunked_sums_are_more_accurate_than_one_matmul():
    """The claim in lm_head's docstring, measured: shorter float32 running sums."""
    wte = (rng.standard_normal((8192, 768)) * 0.1).astype(np.float32)
    x = rng.standard_normal((64, 768)).astype(np.float32)
    exact = x.astype(np.float64) @ wte.T.astype(np.float64)

    def rms(d):
        return float(np.sqrt(np.mean(d**2)))

    assert rms(lm_head(x, wte) - exact) < rms(x @ wte.T - exact)


def test_linear_shapes_and_values():
    C, F = 16, 40
    fc = Linear(rng.standard_normal((C, F)).astype(np.float32), rng.standard_normal(F).astype(np.float32))
    x = rng.standard_normal((2, 3, C)).astype(np.float32)
    h = linear(x, fc)
    assert h.shape == (2, 3, F) and h.dtype == np.float32
    np.testing.assert_allclose(h, x.astype(np.float64) @ fc.weight + fc.bias, rtol=1e-5, atol=1e-5)
