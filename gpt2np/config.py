"""GPT-2's hyper-parameters, read from a Hugging Face `config.json`.

The field names are the checkpoint's own (`n_embd`, `n_layer`, ...), so a reader can hold this
file, the paper and the config side by side. Defaults are transformers' `GPT2Config` defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError

# Activations we implement. Both names mean the tanh approximation GPT-2 was trained with.
TANH_GELU_NAMES = ("gelu_new", "gelu_pytorch_tanh")


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257  # tokens: 50,000 BPE merges + 256 bytes + <|endoftext|>
    n_positions: int = 1024  # longest sequence (rows of the position embedding wpe)
    n_embd: int = 768  # width of the residual stream
    n_layer: int = 12  # transformer blocks
    # Attention heads per block; head size = n_embd // n_head. No weight's shape depends on it
    # (c_attn is [C, 3C] for any head count), so a wrong n_head cannot be detected from the
    # checkpoint: it loads and runs, and computes something else. Only n_embd % n_head is checked.
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True  # divide scores by sqrt(head size)
    scale_attn_by_inverse_layer_idx: bool = False  # also divide by (layer index + 1)
    tie_word_embeddings: bool = True  # the output layer is wte itself
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.n_inner is not None and (
            isinstance(self.n_inner, bool) or not isinstance(self.n_inner, int) or self.n_inner < 1
        ):
            raise ConfigError(f"config field 'n_inner' must be null or a positive integer, got {self.n_inner!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): each head takes an "
                "equal slice of the embedding"
            )
        eps = self.layer_norm_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"config field 'layer_norm_epsilon' must be a positive number, got {eps!r}")
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings"):
            # A string such as "false" is truthy: taken as it is, it would silently mean true.
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {getattr(self, name)!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"config field {name!r} must be null or a token id (an integer >= 0), got {value!r}")
            # eos is what generation stops at: caught here, at load, not at the first generate. (gpt2np
            # never uses bos_token_id, and configs of small models often keep GPT-2's 50256 for it.)
            if name == "eos_token_id" and value is not None and value >= self.vocab_size:
                raise ConfigError(
                    f"config field {name!r} is {value}, outside the vocabulary (vocab_size={self.vocab_size}, ids 0 .. "
                    f"{self.vocab_size - 1}); set it to the model's end-of-text id (GPT-2: 50256) or null"
                )
        if self.activation_function not in TANH_GELU_NAMES:
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not supported: gpt2np implements "
                f"GPT-2's tanh GELU ({' or '.join(TANH_GELU_NAMES)}), which every GPT-2 checkpoint uses"
            )

    @classmethod
    def from_json_file(cls, path: str | Path) -> GPT2Config:
        return cls.from_dict(read_config_json(path), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> GPT2Config:
        model_type = raw.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"{source} describes a {model_type!r} model; gpt2np runs GPT-2 checkpoints only")
        if raw.get("add_cross_attention"):
            raise ConfigError(
                f"{source} asks for cross-attention (an encoder-decoder GPT-2); gpt2np runs the decoder-only model"
            )
        if "n_positions" not in raw and "n_ctx" in raw:  # very old configs name it n_ctx
            raw = {**raw, "n_positions": raw["n_ctx"]}
        missing = [name for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if name not in raw]
        if missing:
            raise ConfigError(f"{source} lacks the field(s) {', '.join(missing)}; every GPT-2 config.json has them")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict:
        return {"model_type": "gpt2", **asdict(self)}


def read_config_json(path: str | Path) -> dict:
    """config.json -> its JSON object; a missing, empty or malformed file, or one holding
    something else than an object, is a ConfigError saying which."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist: a model folder needs config.json next to model.safetensors"
        ) from None
    if not data.strip():
        raise ConfigError(f"{path} is empty; restore it from the model's repository")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: [[[[... nested too deep
        raise ConfigError(f"{path} is not valid JSON ({e}); restore it from the model's repository") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must hold a JSON object, found {type(raw).__name__}; restore it from the model's repository"
        )
    return raw
