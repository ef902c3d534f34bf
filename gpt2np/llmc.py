"""llm.c's files: the model file, the debug state, the tokenizer file and the token data file.

llm.c (github.com/karpathy/llm.c) trains GPT-2 in C; its train_gpt2.py writes these files from
torch and its C programs read them (test_gpt2.c compares its own logits, loss and every
gradient against the debug state's). The layouts, as train_gpt2.py writes them (all
little-endian, each file starting with a header of 256 int32):

    model file        magic 20240326, version 3 (float32; 5 is bfloat16), max_seq_len, vocab_size,
                      num_layers, num_heads, channels, padded_vocab_size (a multiple of 128);
                      then every parameter as float32 in PARAMETER_ORDER, wte padded to
                      padded_vocab_size rows with zeros
    debug state       magic 20240327, version 2, B, T; x, y int32 [B, T]; logits float32
                      [B, T, V]; the loss, one float32; every gradient in the model file's order,
                      wte's padded with zero rows
    tokenizer file    magic 20240328, version 2, vocab size, eot id; per token, 1 byte length + bytes
    token data file   magic 20240520, version 1, number of tokens; the tokens as uint16

llm.c's model is nanoGPT's, with torch nn.Linear layers: a linear weight is stored [out, in],
the transpose of GPT-2's own Conv1D [in, out] (weights.py); writing and reading transpose them.
llm.c's C code knows only GPT-2 itself: a tied output layer, an MLP of 4 x n_embd, GELU (tanh),
LayerNorm eps 1e-5, scores scaled by 1/sqrt(D); a model that differs is refused on export.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from .config import GPT2Config
from .errors import CheckpointError, InputError
from .weights import Weights, named_parameters, weights_from_tensors

MODEL_MAGIC, MODEL_VERSION, MODEL_VERSION_BF16 = 20240326, 3, 5
STATE_MAGIC, STATE_VERSION = 20240327, 2
TOKENIZER_MAGIC, TOKENIZER_VERSION = 20240328, 2
TOKENS_MAGIC, TOKENS_VERSION = 20240520, 1
HEADER_INTS = 256

# train_gpt2.py's write_tensors: the embeddings, then each kind of block tensor for every layer in
# turn (all the ln_1 weights, then all the ln_1 biases, ...), then ln_f.
BLOCK_ORDER = [
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
]  # fmt: skip
LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def parameter_order(n_layer: int) -> list[str]:
    """transformers' parameter names in llm.c's order (write_tensors)."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    names += [f"transformer.h.{i}.{kind}" for kind in BLOCK_ORDER for i in range(n_layer)]
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def padded_vocab(vocab_size: int, multiple: int = 128) -> int:
    return (vocab_size + multiple - 1) // multiple * multiple


def check_exportable(config: GPT2Config) -> None:
    """Refuse what llm.c's C code cannot run, saying which setting is the problem."""
    problems = []
    if not config.tie_word_embeddings:
        problems.append("an untied output layer (llm.c ties lm_head to wte)")
    if config.mlp_width != 4 * config.n_embd:
        problems.append(f"an MLP of {config.mlp_width} (llm.c's is 4 x n_embd = {4 * config.n_embd})")
    if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
        problems.append("attention scores not scaled by exactly 1/sqrt(head_dim)")
    if config.layer_norm_epsilon != 1e-5:
        problems.append(f"layer_norm_epsilon {config.layer_norm_epsilon} (llm.c's is 1e-5)")
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation {config.activation_function!r} (llm.c's is GELU's tanh form)")
    if config.vocab_size >= 1 << 16:
        problems.append(f"a vocabulary of {config.vocab_size} (llm.c's token files hold uint16)")
    if problems:
        raise InputError("llm.c cannot run this model: it has " + "; ".join(problems))


def _header(*values: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[: len(values)] = values
    return header.tobytes()


def _write_tensors(f: BinaryIO, tensors: dict[str, np.ndarray], config: GPT2Config) -> None:
    """Every tensor as float32 in llm.c's order: linear weights transposed to [out, in], wte
    padded with zero rows to a multiple of 128."""
    for name in parameter_order(config.n_layer):
        t = np.asarray(tensors[name], dtype="<f4")
        if name.endswith(LINEAR_WEIGHTS):
            t = t.T  # GPT-2's Conv1D [in, out] -> nn.Linear's [out, in]
        elif name == "transformer.wte.weight":
            t = np.concatenate([t, np.zeros((padded_vocab(config.vocab_size) - len(t), t.shape[1]), "<f4")])
        f.write(np.ascontiguousarray(t).tobytes())


def write_model(path: str | Path, weights: Weights, config: GPT2Config) -> None:
    """The model file (train_gpt2.py's write_model, float32: version 3)."""
    check_exportable(config)
    V, Vp = config.vocab_size, padded_vocab(config.vocab_size)
    with open(path, "wb") as f:
        f.write(
            _header(MODEL_MAGIC, MODEL_VERSION, config.n_positions, V, config.n_layer, config.n_head, config.n_embd, Vp)
        )
        _write_tensors(f, named_parameters(weights), config)


def write_debug_state(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    logits: np.ndarray,
    loss: float,
    grads: dict[str, np.ndarray],
    config: GPT2Config,
) -> None:
    """The debug state (train_gpt2.py's write_state): x, y [B, T] (position t of x predicts y[t]),
    logits [B, T, V], the loss, the gradients by transformers' names."""
    B, T = x.shape
    with open(path, "wb") as f:
        f.write(_header(STATE_MAGIC, STATE_VERSION, B, T))
        f.write(np.asarray(x, dtype="<i4").tobytes())
        f.write(np.asarray(y, dtype="<i4").tobytes())
        f.write(np.asarray(logits, dtype="<f4").tobytes())
        f.write(np.asarray(loss, dtype="<f4").tobytes())
        _write_tensors(f, grads, config)


def write_tokenizer(path: str | Path, token_bytes: list[bytes], eot: int) -> None:
    """The tokenizer file (write_tokenizer, version 2): each token's bytes, after its length in one byte."""
    with open(path, "wb") as f:
        f.write(_header(TOKENIZER_MAGIC, TOKENIZER_VERSION, len(token_bytes), eot))
        for b in token_bytes:
            if len(b) > 255:
                raise InputError(f"a token of {len(b)} bytes does not fit llm.c's tokenizer file (at most 255)")
            f.write(bytes([len(b)]) + b)


def write_tokens(path: str | Path, tokens: np.ndarray) -> None:
    """A token data file (llm.c's dev/data/data_common.py write_datafile, GPT-2: uint16)."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 1 << 16):
        raise InputError("llm.c's token files hold uint16: every token id must lie in 0 .. 65535")
    with open(path, "wb") as f:
        f.write(_header(TOKENS_MAGIC, TOKENS_VERSION, tokens.size))
        f.write(tokens.astype("<u2").tobytes())


# --- reading a model file ------------------------------------------------------------------------


def is_model_file(path: str | Path) -> bool:
    """Does the file start with llm.c's model magic?"""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and int(np.frombuffer(head, "<i4")[0]) == MODEL_MAGIC


def read_model(path: str | Path, dtype: str = "float32") -> tuple[GPT2Config, Weights]:
    """An llm.c model file (version 3, float32, or 5, bfloat16) -> (config, weights), checked:
    magic, version, header values and the file's size, each a CheckpointError naming what is wrong."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER_INTS * 4:
        raise CheckpointError(
            f"{path}: {len(data)} bytes, shorter than llm.c's 1024-byte header: not an llm.c model file"
        )
    header = np.frombuffer(data[: HEADER_INTS * 4], "<i4")
    if header[0] != MODEL_MAGIC:
        raise CheckpointError(
            f"{path}: magic number {header[0]}, not llm.c's model file magic {MODEL_MAGIC} (a debug state is "
            f"{STATE_MAGIC}, a tokenizer file {TOKENIZER_MAGIC}, a token file {TOKENS_MAGIC})"
        )
    version = int(header[1])
    if version not in (MODEL_VERSION, MODEL_VERSION_BF16):
        raise CheckpointError(
            f"{path}: llm.c model file version {version}; gpt2np reads version {MODEL_VERSION} (float32) and "
            f"{MODEL_VERSION_BF16} (bfloat16), with the padded vocabulary: re-export it with a current train_gpt2.py"
        )
    max_t, V, L, NH, C, Vp = (int(v) for v in header[2:8])
    if min(max_t, V, L, NH, C) <= 0 or C % NH or Vp < V or Vp % 128:
        raise CheckpointError(
            f"{path}: impossible header: max_seq_len {max_t}, vocab_size {V}, num_layers {L}, num_heads {NH}, "
            f"channels {C}, padded_vocab_size {Vp}; the file is damaged"
        )
    eos = 50256 if V > 50256 else V - 1  # the header has no eos: GPT-2's, or a small vocabulary's last id
    config = GPT2Config(
        n_positions=max_t, vocab_size=V, n_layer=L, n_head=NH, n_embd=C, bos_token_id=eos, eos_token_id=eos
    )
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (Vp, C), "transformer.wpe.weight": (max_t, C)}
    block: dict[str, tuple[int, ...]] = {
        "ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (C, 4 * C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip
    shapes |= {f"transformer.h.{i}.{k}": s for k, s in block.items() for i in range(L)}
    shapes |= {"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
    itemsize = 4 if version == MODEL_VERSION else 2
    n_values = sum(int(np.prod(s)) for s in shapes.values())
    if len(data) != HEADER_INTS * 4 + n_values * itemsize:
        raise CheckpointError(
            f"{path}: {len(data)} bytes, but its header ({L} layers, {C} channels, vocabulary {Vp} padded) implies "
            f"{HEADER_INTS * 4 + n_values * itemsize}: the file is truncated or damaged"
        )
    if version == MODEL_VERSION:
        values = np.frombuffer(data, "<f4", offset=HEADER_INTS * 4)
    else:  # bfloat16: the top half of a float32's bits
        values = (np.frombuffer(data, "<u2", offset=HEADER_INTS * 4).astype(np.uint32) << 16).view(np.float32)
    tensors, offset = {}, 0
    for name in parameter_order(L):
        shape = shapes[name]
        t = values[offset : offset + int(np.prod(shape))].reshape(shape)
        offset += t.size
        if name.endswith(LINEAR_WEIGHTS):
            t = np.ascontiguousarray(t.T)  # nn.Linear's [out, in] -> GPT-2's Conv1D [in, out], in memory too
        elif name == "transformer.wte.weight":
            t = t[:V]  # the padding rows are not tokens
        tensors[name] = t
    return config, weights_from_tensors(tensors, config, dtype=dtype, source=str(path))
