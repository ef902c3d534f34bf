"""Random GPT-2 checkpoints, for learning, cross-checking and testing on machines without the
real weights; `gpt2np random-model OUT --n-layer 2 --n-head 4 --n-embd 64 ...` writes one.

A checkpoint written here is an ordinary model folder (config.json + model.safetensors) that
gpt2np and transformers both load. The same (config, seed) always gives the same bytes, and
the scales are chosen so the model behaves like a trained one where it matters for testing:

- logits spread by a few units, so greedy decoding is never decided by a near tie;
- attention scores of order 1, so the softmax weights are neither one-hot nor uniform;
- optionally a few residual dimensions around +-hundreds (`outlier_dims`), as real GPT-2 has:
  that is where a careless LayerNorm loses float32 precision.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import save_checkpoint
from ..config import GPT2Config
from ..errors import ConfigError, InputError
from ..heap import available_memory, size
from ..hub import GPT2_VOCAB_SIZE
from ..weights import expected_shapes
from .common import add_debug
from .overwrite import add_overwrite_flag, check_out_folder, nonempty_path

INITIALIZER_RANGE = 0.02  # transformers' GPT2Config.initializer_range
INITS = {
    "inspect": "drawn so a random model's activations look like a trained one's (wpe std 1.5, LayerNorm gains near 1): "
    "to learn on and to cross-check a forward pass; not a starting point for training",
    "gpt2": "GPT-2's initialisation, where training from scratch starts: normal with std 0.02, the residual "
    "projections (c_proj) by 1/sqrt(2 n_layer), zero biases, LayerNorm 1 and 0 (transformers' _init_weights, nanoGPT)",
}


def gpt2_init_tensors(config: GPT2Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """GPT-2's initialisation (INITS["gpt2"]): what transformers' GPT2PreTrainedModel._init_weights
    and nanoGPT's _init_weights draw, with GPT2Config's initializer_range (0.02)."""
    std = INITIALIZER_RANGE
    tensors = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            t = np.ones(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            t = np.zeros(shape, dtype=np.float32)  # linear biases and LayerNorm shifts
        else:  # embeddings and matrices; the residual projections scaled by the depth they add up over
            s = std / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else std
            t = (rng.standard_normal(shape, dtype=np.float32) * np.float32(s)).astype(np.float32)
        tensors[name] = t
    return tensors


def random_tensors(
    config: GPT2Config, seed: int = 0, outlier_dims: int = 0, outlier_scale: float = 300.0, init: str = "inspect"
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = config.n_embd
    if init not in INITS:
        raise InputError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "gpt2":
        return gpt2_init_tensors(config, rng)

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    tensors = {}
    for name, shape in expected_shapes(config).items():
        if name in ("wte.weight", "lm_head.weight"):
            t = normal(shape, 2.5 / np.sqrt(C))  # logits = ln_f(x) @ wte.T have std ~2.5
        elif name == "wpe.weight":
            t = normal(shape, 1.5)  # large enough that position matters: random models then loop less
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            t = 1.0 + normal(shape, 0.1)  # gamma near 1
        elif name.endswith("c_attn.weight"):
            t = normal(shape, 1.2 / np.sqrt(C))  # q.k / sqrt(D) of order 1
        elif name.endswith(".weight"):
            t = normal(shape, 1.0 / np.sqrt(shape[0] * 2 * config.n_layer))  # residual growth stays tame
        else:
            t = normal(shape, 0.02)  # biases
        tensors[name] = t
    if outlier_dims:
        # Real GPT-2 keeps a few residual dimensions at large values (hundreds) and has learned
        # LayerNorm gains that mute them and amplify the other dimensions, which the outliers
        # squash. Put the outliers in the position embedding (every token then carries them
        # into every block), then set the gains the same way. Their signs make them sum to 0
        # (+300, -150, -150): LayerNorm's mean then stays the regular dimensions' own, instead
        # of shifting them all by sum / C, which the blocks would amplify layer after layer.
        dims = rng.choice(C, size=outlier_dims, replace=False)
        signs = np.full(outlier_dims, -1.0 / max(1, outlier_dims - 1))  # [k] (1 dim: +1 alone)
        signs[0] = 1.0
        tensors["wpe.weight"][:, dims] += (outlier_scale * signs).astype(np.float32)
        _calibrate_layer_norms(tensors, config, dims, rng)
    return tensors


def _calibrate_layer_norms(tensors: dict[str, np.ndarray], config: GPT2Config, dims: np.ndarray, rng) -> None:
    """Give outlier dimensions gain 0.05 and scale the other gains so that each LayerNorm's
    output has the spread it would have without the outliers (std / std of the others).

    The squash is measured on the embeddings (wte[token] + wpe[position], what enters block 0)
    with plain NumPy statistics, never with gpt2np's forward pass: the test models must not
    depend on the code they test (a forward-pass bug would otherwise change the models' bytes,
    and the references' failure would read "stale data"). The outliers come from wpe, they sum
    to 0, and the blocks add little to the residual stream (its regular part grows by ~8% over
    small-outliers' 4 blocks), so the embedding's squash holds for every LayerNorm.
    """
    regular = np.setdiff1d(np.arange(config.n_embd), dims)
    T = min(16, config.n_positions)
    ids = rng.integers(0, config.vocab_size, size=(2, T))
    x = tensors["wte.weight"][ids].astype(np.float64) + tensors["wpe.weight"][:T].astype(np.float64)  # [2, T, C]
    xc = x - x.mean(axis=-1, keepdims=True)  # [2, T, C] centred, as LayerNorm centres
    squash = float(xc.std(axis=-1).mean() / xc[..., regular].std(axis=-1).mean())
    squash = float(f"{squash:.3g}")  # rounded: the bytes must not depend on a last bit
    names = [f"h.{i}.{ln}" for i in range(config.n_layer) for ln in ("ln_1", "ln_2")] + ["ln_f"]
    for name in names:
        gain = tensors[name + ".weight"]
        gain[regular] *= np.float32(squash)
        gain[dims] = 0.05


def make_random_checkpoint(
    folder: str | Path,
    config: GPT2Config,
    seed: int = 0,
    outlier_dims: int = 0,
    outlier_scale: float = 300.0,
    init: str = "inspect",
) -> Path:
    """Write config.json + model.safetensors for a random GPT-2 into `folder` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = random_tensors(config, seed=seed, outlier_dims=outlier_dims, outlier_scale=outlier_scale, init=init)
    # Stored as transformers' GPT2LMHeadModel saves them (with the "transformer." prefix), so
    # the loader's prefix handling is exercised; the hub's gpt2 file has no prefix.
    # (No metadata beyond safetensors' "format": the package writes a metadata dict in hash
    # order, which would make the bytes, and so the sha256 the tests check, vary run to run.)
    save_checkpoint(
        folder / "model.safetensors",
        {("" if k == "lm_head.weight" else "transformer.") + k: v for k, v in tensors.items()},
    )
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return folder


# The random models the tests and references use: different depths, widths, head counts and
# context lengths, the real vocabulary (so the real tokenizer's ids fit) and one 124M-shaped.
# Bump when random_tensors/make_random_checkpoint change what a seed gives: test models built
# by an older recipe are then rebuilt instead of silently reused.
RECIPE_VERSION = 2

TEST_MODELS: dict[str, dict[str, Any]] = {
    "tiny": dict(config=GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64), seed=1),
    "small-outliers": dict(config=GPT2Config(n_layer=4, n_head=4, n_embd=64, n_positions=128), seed=2, outlier_dims=3),
    "odd": dict(
        config=GPT2Config(
            vocab_size=1000,
            n_layer=3,
            n_head=3,
            n_embd=48,
            n_inner=100,
            n_positions=40,
            scale_attn_by_inverse_layer_idx=True,
            tie_word_embeddings=False,
            bos_token_id=999,
            eos_token_id=999,
        ),
        seed=3,
    ),
    "gpt2-shaped": dict(config=GPT2Config(), seed=4, outlier_dims=3),  # 124M parameters, ~500 MB
}


def build_test_model(name: str, root: str | Path) -> Path:
    """Build TEST_MODELS[name] under root/<name>/ unless it is already there; return the folder."""
    folder = Path(root) / name
    stamp = f"{RECIPE_VERSION} {TEST_MODELS[name]}"  # what the bytes were made from
    if (folder / "model.safetensors").is_file() and _read(folder / "recipe.txt") != stamp:
        shutil.rmtree(folder)  # built by an older recipe (an older checkout): stale
    if not (folder / "model.safetensors").is_file():
        tmp = Path(root) / f".{name}.{os.getpid()}.partial"
        make_random_checkpoint(tmp, **TEST_MODELS[name])
        (tmp / "recipe.txt").write_text(stamp)
        tmp.rename(folder)  # atomic: a half-written model is never mistaken for a whole one
    return folder


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


# --- the command ---------------------------------------------------------------------------

SHAPE_FLAGS = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner")  # GPT2Config's names


def add_parser(sub) -> None:
    p = sub.add_parser(
        "random-model",
        help="write a random GPT-2 of any shape (config.json + model.safetensors), to learn on or cross-check offline",
        description="Write a GPT-2 with random weights into the folder OUT: gpt2np (--model OUT) and transformers "
        "(GPT2LMHeadModel.from_pretrained(OUT)) load it like a downloaded one. The flags are GPT2Config's fields; "
        "the defaults are GPT2Config's (GPT-2 124M's shape, ~500 MB). The same shape and seed give the same bytes.",
    )
    p.add_argument(
        "out",
        metavar="OUT",
        type=nonempty_path,
        help="the folder to write (created; refused if it holds anything, unless --overwrite)",
    )
    defaults = GPT2Config()
    for name in SHAPE_FLAGS:
        default = getattr(defaults, name)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=int,
            default=default,
            help=f"GPT2Config.{name} (default: {default if default is not None else '4 x n_embd'})",
        )
    p.add_argument("--seed", type=int, default=0, help="the random seed (default 0)")
    p.add_argument(
        "--init",
        choices=list(INITS),
        default="inspect",
        help="; ".join(f"{name}: {what}" for name, what in INITS.items()) + " (default: inspect)",
    )
    add_overwrite_flag(p, "OUT")
    add_debug(p)
    p.set_defaults(run=cmd_random_model)


def config_from_flags(args) -> GPT2Config:
    """GPT2Config from the flags; a vocabulary smaller than GPT-2's gets its last id as eos/bos
    (GPT-2's 50256 would lie outside it)."""
    shape = {name: getattr(args, name) for name in SHAPE_FLAGS}
    if shape["vocab_size"] is not None and 0 < shape["vocab_size"] <= 50256:
        shape.update(bos_token_id=shape["vocab_size"] - 1, eos_token_id=shape["vocab_size"] - 1)
    try:
        return GPT2Config(**shape)
    except ConfigError as e:  # named as the user gave them: --n-embd, not n_embd
        message = re.sub(r"config field '(\w+)'", r"\1", str(e))
        for name in SHAPE_FLAGS:
            message = re.sub(rf"\b{name}\b", f"--{name.replace('_', '-')}", message)
        raise InputError(message) from None


def check_size(config: GPT2Config) -> int:
    """The parameter count, once the model is known to fit: writing it holds every tensor and
    the file's bytes in memory (2 x 4 bytes a parameter), plus two temporaries of the largest
    tensor while it is drawn. Counted in Python integers: n_embd 2**62 does not wrap around."""
    shapes = expected_shapes(config).values()
    n = sum(math.prod(shape) for shape in shapes)
    largest = max(math.prod(shape) for shape in shapes)
    need, have = 4 * (2 * n + 2 * largest), available_memory()
    if need > have:
        raise InputError(
            f"a random GPT-2 of this shape has {n:,} parameters, {size(4 * n)} as float32, and writing it needs "
            f"about {size(need)} of memory; this machine has {size(have)} available: choose a smaller shape"
        )
    return n


def cmd_random_model(args) -> int:
    if args.seed < 0:
        raise InputError(f"--seed must be 0 or more, got {args.seed}")
    config = config_from_flags(args)
    n = check_size(config)  # before the folder is made: a refused size leaves nothing behind
    out = Path(args.out)
    if out.is_dir() and (out / "model.safetensors").exists() and not args.overwrite:
        raise InputError(
            f"{out} already holds a model (model.safetensors); choose another folder, or add --overwrite to replace it"
        )
    out = check_out_folder(args.out, overwrite=args.overwrite, is_ours=lambda path: False)  # empty or new only
    make_random_checkpoint(out, config, seed=args.seed, init=args.init)
    init = "" if args.init == "inspect" else ", GPT-2's initialisation"
    print(
        f"wrote {out}: a random GPT-2 (seed {args.seed}{init}) with n_layer {config.n_layer}, n_head {config.n_head}, "
        f"n_embd {config.n_embd}, n_positions {config.n_positions}, vocab_size {config.vocab_size}: "
        f"{n:,} parameters, {(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB"
    )
    if config.vocab_size == GPT2_VOCAB_SIZE:
        print(f'GPT-2\'s tokenizer fits its vocabulary: gpt2np generate --model {out} "My dog is"')
    else:
        print(
            f"no tokenizer fits its {config.vocab_size} tokens: trace it from token ids, "
            f'gpt2np trace --model {out} --ids "1,2,3" --out trace.safetensors'
        )
    return 0
