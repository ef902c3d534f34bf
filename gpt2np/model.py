"""GPT-2: embeddings, n_layer blocks of (attention, MLP) on a residual stream, a final
LayerNorm, and the tied output layer. The whole forward pass is `GPT2.forward`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .attention import self_attention
from .config import GPT2Config
from .errors import InputError
from .inputs import check_attention_mask, check_input_ids, check_length, check_position_ids
from .kv_cache import KVCache
from .layers import layer_norm, lm_head, mlp
from .masks import build_attention_mask, position_ids_from_mask, resolve_fill
from .weights import Weights, load_weights

DTYPES = ("float32", "float64")


def _check_dtype(dtype) -> None:
    try:
        ok = str(np.dtype(dtype)) in DTYPES
    except TypeError:
        ok = False
    if not ok:
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r} (float16 would lose too much precision)")


@dataclass
class GPT2Output:
    logits: np.ndarray  # [B, T, vocab]
    hidden_states: tuple[np.ndarray, ...] | None = None  # n_layer + 1 of [B, T, C], as transformers orders them
    attentions: tuple[np.ndarray, ...] | None = None  # n_layer of [B, H, T, T], the softmax weights

    def __getitem__(self, key):  # out["logits"], as with transformers' outputs
        return getattr(self, key)


class GPT2:
    """A GPT-2 language model in NumPy. Holds weights and settings only: no per-call state,
    so one model can serve several threads at once (each call gets its own cache)."""

    def __init__(self, config: GPT2Config, weights: Weights, dtype="float32", mask_fill="min"):
        _check_dtype(dtype)
        self.config = config
        self.weights = weights
        self.dtype = np.dtype(dtype)
        self.mask_fill = mask_fill
        self.fill = resolve_fill(mask_fill, self.dtype)  # the number forbidden cells get

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, dtype="float32", mask_fill="min", verify=True, local_files_only=False):
        """Load gpt2 / gpt2-medium / gpt2-large / gpt2-xl / distilgpt2, any hub repo id, or a
        local folder with config.json + model.safetensors (see hub.py for where we look)."""
        from .hub import resolve_model_files

        _check_dtype(dtype)
        resolve_fill(mask_fill, dtype)  # a bad fill fails before any file work
        files = resolve_model_files(name_or_path, verify=verify, local_files_only=local_files_only)
        config = GPT2Config.from_json_file(files["config.json"])
        return cls(config, load_weights(files["model.safetensors"], config, dtype=dtype), dtype=dtype, mask_fill=mask_fill)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=False, output_attentions=False) -> GPT2Output:
        """Logits for every position of a batch.

        input_ids [B, T] (or [T]: one sequence, and then the outputs drop the batch axis, as
        transformers does). position_ids default to `cumsum(attention_mask) - 1`, which is
        `arange(T)` when nothing is padded. NB: transformers' plain forward uses arange even
        for a left-padded batch (only its `generate` derives them from the mask); pass
        position_ids=np.arange(T) to reproduce it exactly.
        """
        ids, one_sequence = check_input_ids(input_ids, self.config.vocab_size)
        check_length(ids.shape[1], self.config.n_positions, "the input")
        mask = check_attention_mask(attention_mask, ids.shape)
        if position_ids is None:
            positions = position_ids_from_mask(mask)
        else:
            positions = check_position_ids(position_ids, ids.shape, self.config.n_positions)
        out = self.forward(ids, mask, positions, output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        if one_sequence:
            out.logits = out.logits[0]
            out.hidden_states = out.hidden_states and tuple(h[0] for h in out.hidden_states)
            out.attentions = out.attentions and tuple(a[0] for a in out.attentions)
        return out

    def forward(self, input_ids, attention_mask, position_ids, cache: KVCache | None = None, last_logits_only=False,
                output_hidden_states=False, output_attentions=False) -> GPT2Output:  # fmt: skip
        """The forward pass on checked inputs. input_ids, position_ids: [B, T] new tokens;
        attention_mask: [B, past + T] covering the cached tokens too."""
        w, cfg = self.weights, self.config
        eps, n_head = cfg.layer_norm_epsilon, cfg.n_head
        mask = build_attention_mask(attention_mask, input_ids.shape[1], self.fill, self.dtype)  # [B, 1, T, past + T]
        x = w.wte[input_ids] + w.wpe[position_ids]  # [B, T, C]: what each token is + where it stands
        hidden, attentions = [x.copy()] if output_hidden_states else None, [] if output_attentions else None
        for i, block in enumerate(w.h):
            a, probs = self_attention(layer_norm(x, block.ln_1, eps), block.attn, mask, n_head, self.scale(i), cache, i)
            x += a  # [B, T, C] residual: attention adds what it gathered from other tokens
            x += mlp(layer_norm(x, block.ln_2, eps), block.mlp)  # [B, T, C] then each token thinks alone
            if output_hidden_states and i < cfg.n_layer - 1:
                hidden.append(x.copy())
            if output_attentions:
                attentions.append(probs)
        x = layer_norm(x, w.ln_f, eps)  # [B, T, C]
        if output_hidden_states:
            hidden.append(x)  # transformers' last hidden state is after ln_f
        if last_logits_only:
            x = x[:, -1:, :]  # [B, 1, C]: generation only needs the next token's scores
        logits = lm_head(x, w.lm_head)  # [B, T, C] -> [B, T, vocab]: a score for every token of the vocabulary
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return GPT2Output(logits, hidden and tuple(hidden), attentions and tuple(attentions))

    def scale(self, layer: int) -> float:
        """What attention scores are multiplied by in block `layer`."""
        scale = 1.0 / math.sqrt(self.config.head_dim) if self.config.scale_attn_weights else 1.0
        if self.config.scale_attn_by_inverse_layer_idx:
            scale /= layer + 1
        return scale

    def generate(self, input_ids, attention_mask=None, **kwargs) -> np.ndarray:
        """Greedy or sampled continuation of a (left-padded) batch; see generation.generate."""
        from .generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def num_parameters(self) -> int:
        return sum(a.size for a in self.weights.arrays())

    def score(self, inputs, attention_mask=None, tokenizer=None, stride=None):
        """Per-token log-probs, log-likelihood and perplexity of ids (or texts, with tokenizer=); see
        scoring.score. stride=N scores texts longer than the context with sliding windows."""
        from .scoring import score

        return score(self, inputs, attention_mask=attention_mask, tokenizer=tokenizer, stride=stride)
