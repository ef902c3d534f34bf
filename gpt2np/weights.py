"""GPT-2's parameters, named as in the checkpoint, checked against the config.

The tree mirrors the checkpoint's names, so `h.3.attn.c_attn.weight` in the file is
`weights.h[3].attn.c_attn.weight` here:

    wte [vocab, n_embd]        token embedding, also the output layer (tied)
    wpe [n_positions, n_embd]  position embedding
    h[i]  ln_1 -> attn.c_attn [n_embd, 3*n_embd] -> attn.c_proj [n_embd, n_embd]
          ln_2 -> mlp.c_fc    [n_embd, n_inner]  -> mlp.c_proj  [n_inner, n_embd]
    ln_f                       final LayerNorm

GPT-2's linear layers are OpenAI's "Conv1D": the weight is stored [in, out], so a layer is
`x @ W + b` with no transpose (a torch nn.Linear would store [out, in]).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from .checkpoint import is_remembered, map_tensors, remember
from .config import GPT2Config
from .errors import CheckpointError


@dataclass(frozen=True)
class Linear:
    weight: np.ndarray  # [n_in, n_out]
    bias: np.ndarray  # [n_out]


@dataclass(frozen=True)
class LayerNorm:
    weight: np.ndarray  # [n_embd] (gamma)
    bias: np.ndarray  # [n_embd] (beta)


@dataclass(frozen=True)
class Attention:
    c_attn: Linear  # [n_embd, 3*n_embd]: queries, keys and values in one matmul
    c_proj: Linear  # [n_embd, n_embd]: mixes the heads back together


@dataclass(frozen=True)
class MLP:
    c_fc: Linear  # [n_embd, n_inner]
    c_proj: Linear  # [n_inner, n_embd]


@dataclass(frozen=True)
class Block:
    ln_1: LayerNorm
    attn: Attention
    ln_2: LayerNorm
    mlp: MLP


@dataclass(frozen=True)
class Weights:
    wte: np.ndarray  # [vocab, n_embd]
    wpe: np.ndarray  # [n_positions, n_embd]
    h: list[Block]
    ln_f: LayerNorm
    lm_head: np.ndarray  # [vocab, n_embd]; the same array as wte when the embeddings are tied

    def arrays(self) -> list[np.ndarray]:
        """Every parameter array once (the tied lm_head is not counted twice)."""
        out = [self.wte, self.wpe, self.ln_f.weight, self.ln_f.bias]
        if self.lm_head is not self.wte:
            out.append(self.lm_head)
        for b in self.h:
            for layer in (b.ln_1, b.attn.c_attn, b.attn.c_proj, b.ln_2, b.mlp.c_fc, b.mlp.c_proj):
                out += [layer.weight, layer.bias]
        return out


# Buffers that some checkpoints carry but that are not parameters: old transformers saved the
# causal mask (`attn.bias`, a [1, 1, 1024, 1024] lower triangle) and `attn.masked_bias`.
# We build masks ourselves, so we skip them.
IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor GPT-2 needs, with the shape the config implies."""
    C, F, V = config.n_embd, config.mlp_width, config.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (config.n_positions, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes |= {
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (C, F), p + "mlp.c_fc.bias": (F,),
            p + "mlp.c_proj.weight": (F, C), p + "mlp.c_proj.bias": (C,),
        }  # fmt: skip
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def _strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel saves `transformer.h.0...`; the original conversion saves `h.0...`."""
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}


def _check_against_config(tensors: dict[str, np.ndarray], config: GPT2Config, source: str) -> None:
    """Turn "tensor X has the wrong shape" into the likelier story: config and weights disagree."""
    wte = tensors.get("wte.weight")
    if wte is not None and wte.ndim == 2 and wte.shape != (config.vocab_size, config.n_embd):
        raise CheckpointError(
            f"{source}: wte.weight is {list(wte.shape)} (vocab {wte.shape[0]}, n_embd {wte.shape[1]}) but config.json "
            f"says vocab_size={config.vocab_size}, n_embd={config.n_embd}: config.json does not belong to these weights"
        )
    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"^h\.(\d+)\.", k))}
    if layers and max(layers) + 1 != config.n_layer:
        raise CheckpointError(
            f"{source} holds {max(layers) + 1} blocks (h.0 .. h.{max(layers)}) but config.json says "
            f"n_layer={config.n_layer}: config.json does not belong to these weights"
        )


def first_non_finite(t: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """None if every value of `t` is finite, else (how many are not, the index of the first).

    The fast path reads the tensor once with max and min, which propagate NaN and show +-inf,
    and allocate nothing (np.isfinite(t).all() would allocate a bool per weight). Only a tensor
    that fails it is searched value by value."""
    if t.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        if np.isfinite(t.max()) and np.isfinite(t.min()):
            return None
    bad = ~np.isfinite(t)  # [same shape] True at NaN, inf, -inf
    return int(bad.sum()), tuple(int(i) for i in np.unravel_index(int(bad.argmax()), t.shape))


def check_finite(params: dict[str, np.ndarray], source: str) -> None:
    """Refuse a NaN or an infinity in any weight, naming the tensor.

    One such value poisons every output: it reaches the residual stream, LayerNorm spreads it
    over the whole vector, and softmax/argmax then pick garbage (a NaN logit wins argmax, and
    generation emits token 0 forever). It means a damaged file or a bad conversion, never a
    trained model, so it is refused at load, with the way out."""
    for name, t in params.items():
        found = first_non_finite(t)
        if found is not None:
            count, index = found
            raise CheckpointError(
                f"{source}: tensor {name!r} holds {count} non-finite value{'s' if count > 1 else ''} (NaN or inf; the first "
                f"is {t[index]} at index {list(index)}), which would make every output NaN. The file is corrupted or was "
                "converted badly: download it again (or redo the conversion)"
            )


def weights_from_tensors(
    tensors: dict[str, np.ndarray],
    config: GPT2Config,
    dtype: DTypeLike = "float32",
    source: str = "checkpoint",
    check_values: bool = True,
) -> Weights:
    """Check names, shapes, dtypes and values, then arrange the tensors as a `Weights` tree.

    Arrays already in `dtype` are used as they are (for a memory-mapped float32 checkpoint:
    no copy at all). Anything else is converted once here, which copies it; that is what
    dtype="float64" costs (twice the checkpoint's memory) and what a float16 file costs.
    """
    dtype = np.dtype(dtype)
    tensors = {k: v for k, v in _strip_prefix(tensors).items() if not IGNORED.match(k)}
    _check_against_config(tensors, config, source)
    params = {}
    for name, shape in expected_shapes(config).items():
        if name == "lm_head.weight" and name not in tensors:
            raise CheckpointError(
                f"{source} has no tensor 'lm_head.weight', which config.json asks for with \"tie_word_embeddings\": false "
                '(a separate output layer). This checkpoint ties it to wte, as GPT-2 does: set "tie_word_embeddings" to '
                "true in config.json (or remove the line: true is the default)"
            )
        if name not in tensors:
            raise CheckpointError(
                f"{source} has no tensor {name!r} (expected shape {list(shape)}); the file is incomplete or is not "
                "a GPT-2 checkpoint"
            )
        t = tensors[name]
        if t.shape != shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {list(t.shape)} but the config implies {list(shape)}; "
                "config.json and the weights do not match"
            )
        if t.dtype.kind != "f":
            raise CheckpointError(
                f"{source}: tensor {name!r} is {t.dtype}, not a floating-point type; the file is not usable"
            )
        with np.errstate(over="ignore"):  # a float64 value beyond float32's range becomes inf: check_finite says so
            params[name] = np.asarray(t, dtype=dtype)  # no copy when it already has the dtype
    if check_values:  # after the conversion: a float64 value too large for float32 became inf there
        check_finite(params, source)

    def linear(p: str) -> Linear:
        return Linear(params[p + ".weight"], params[p + ".bias"])

    def norm(p: str) -> LayerNorm:
        return LayerNorm(params[p + ".weight"], params[p + ".bias"])

    blocks = [
        Block(
            ln_1=norm(f"h.{i}.ln_1"),
            attn=Attention(c_attn=linear(f"h.{i}.attn.c_attn"), c_proj=linear(f"h.{i}.attn.c_proj")),
            ln_2=norm(f"h.{i}.ln_2"),
            mlp=MLP(c_fc=linear(f"h.{i}.mlp.c_fc"), c_proj=linear(f"h.{i}.mlp.c_proj")),
        )
        for i in range(config.n_layer)
    ]
    wte = params["wte.weight"]
    lm_head = wte if config.tie_word_embeddings else params["lm_head.weight"]
    return Weights(wte=wte, wpe=params["wpe.weight"], h=blocks, ln_f=norm("ln_f"), lm_head=lm_head)


def load_weights(path: str | Path, config: GPT2Config, dtype: DTypeLike = "float32") -> Weights:
    """Memory-map `model.safetensors` and check it against the config.

    The check that every value is finite reads the whole file (GPT-2 124M: 500 MB); it runs
    on the first load of each version of the file and is remembered (checkpoint.remember)."""
    path = Path(path)
    fact = f"finite as {np.dtype(dtype)}"  # float64 -> float32 can overflow to inf: one stamp per dtype
    known = is_remembered(path, "finite", fact)
    weights = weights_from_tensors(map_tensors(path), config, dtype=dtype, source=str(path), check_values=not known)
    if not known:
        remember(path, "finite", fact)
    return weights


def named_parameters(weights: Weights) -> dict[str, np.ndarray]:
    """Every parameter under transformers' GPT2LMHeadModel.named_parameters() name, in its order
    (the tied output layer is wte, named once; an untied one is lm_head.weight). The arrays are
    the model's own, not copies."""
    out = {"transformer.wte.weight": weights.wte, "transformer.wpe.weight": weights.wpe}
    for i, b in enumerate(weights.h):
        layers: list[tuple[str, LayerNorm | Linear]] = [("ln_1", b.ln_1), ("attn.c_attn", b.attn.c_attn)]
        layers += [
            ("attn.c_proj", b.attn.c_proj),
            ("ln_2", b.ln_2),
            ("mlp.c_fc", b.mlp.c_fc),
            ("mlp.c_proj", b.mlp.c_proj),
        ]
        for kind, layer in layers:
            out[f"transformer.h.{i}.{kind}.weight"] = layer.weight
            out[f"transformer.h.{i}.{kind}.bias"] = layer.bias
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = weights.ln_f.weight, weights.ln_f.bias
    if weights.lm_head is not weights.wte:
        out["lm_head.weight"] = weights.lm_head
    return out
