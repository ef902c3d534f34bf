"""gpt2np behind the benchmark's small interface (the same one impl_transformers.py offers)."""

from __future__ import annotations

import numpy as np

from .measure import blas_info, limit_blas_threads


class Gpt2np:
    def __init__(self, threads: int):
        import gpt2np

        self._limits = limit_blas_threads(threads)  # kept alive for the whole run
        self.versions = {"gpt2np": gpt2np.__version__, "numpy": np.__version__}
        self.info = {"blas": blas_info()}
        self._opt = None  # the training tasks' AdamW, made at the first step

    def load(self, folder) -> None:
        from gpt2np import GPT2

        self.model = GPT2.from_pretrained(folder)
        self.vocab_size = self.model.config.vocab_size

    def forward(self, ids: np.ndarray, logits_to_keep: int = 0) -> np.ndarray:
        """[B, T] ids, no padding -> logits (every position, or the last logits_to_keep)."""
        return self.model(ids, attention_mask=np.ones_like(ids), logits_to_keep=logits_to_keep).logits

    def prefill(self, ids: np.ndarray, max_len: int) -> dict:
        """Prompt into a fresh KV cache with room for max_len tokens; the decoding state."""
        from gpt2np.kv_cache import KVCache

        cfg, (B, T) = self.model.config, ids.shape
        cache = KVCache(cfg.n_layer, B, cfg.n_head, max_len, cfg.head_dim, self.model.dtype)
        mask = np.ones((B, max_len), dtype=np.int64)
        positions = np.broadcast_to(np.arange(T), ids.shape)
        logits = self.model.forward(ids, mask[:, :T], positions, cache, logits_to_keep=1).logits[:, -1]  # [B, V]
        return {"cache": cache, "mask": mask, "logits": logits, "length": T}

    def repeat_rows(self, state: dict, batch: int) -> dict:
        """A 1-row decoding state -> `batch` identical rows: a long batched context without
        prefilling every row (the cost of a step does not depend on what the cache holds)."""
        from gpt2np.kv_cache import KVCache

        old, n = state["cache"], state["length"]
        L, _, H, max_len, D = old.keys.shape
        cache = KVCache(L, batch, H, max_len, D, old.keys.dtype)
        cache.keys[:, :, :, :n] = old.keys[:, :1, :, :n]  # broadcast row 0 to every row
        cache.values[:, :, :, :n] = old.values[:, :1, :, :n]
        cache.length = n
        return {
            "cache": cache,
            "mask": np.ones((batch, max_len), dtype=np.int64),
            "logits": np.repeat(state["logits"], batch, 0),
            "length": n,
        }

    def step(self, state: dict) -> None:
        """One greedy decode step: argmax of the last logits in, next logits out."""
        B, length = state["logits"].shape[0], state["length"] + 1
        next_ids = state["logits"].argmax(axis=-1)[:, None]  # [B, 1]
        positions = np.full((B, 1), length - 1, dtype=np.int64)
        state["logits"] = self.model.forward(
            next_ids, state["mask"][:, :length], positions, state["cache"], logits_to_keep=1
        ).logits[:, -1]
        state["length"] = length

    def generate(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        return self.model.generate(ids, attention_mask=np.ones_like(ids), max_new_tokens=new_tokens, eos_token_id=None)

    def beam_search(self, ids: np.ndarray, new_tokens: int, num_beams: int) -> np.ndarray:
        """Each row's best beam; no eos, so every step runs."""
        return self.model.generate(
            ids, attention_mask=np.ones_like(ids), max_new_tokens=new_tokens, num_beams=num_beams, eos_token_id=None
        )

    def loss(self, ids: np.ndarray, mask: np.ndarray) -> float:
        """The mean negative log-likelihood of a left-padded batch (model.score)."""
        return float(self.model.score(ids, attention_mask=mask).loss)

    def backward(self, ids: np.ndarray) -> float:
        """One forward + backward: the next-token loss of [B, T] ids and every parameter's gradient."""
        loss, grads = self.model.loss_and_grads(ids)
        del grads  # dropped at once, as torch's are freed by zero_grad(set_to_none=True)
        return float(loss)

    def train_step(self, ids: np.ndarray) -> float:
        """A full step: forward, backward, clip to TRAIN_CLIP, AdamW (decay on the 2-d parameters)."""
        from gpt2np.train import AdamW, clip_grad_norm

        from .tasks import TRAIN_CLIP, TRAIN_LR, TRAIN_WEIGHT_DECAY

        if self._opt is None:  # takes writable copies of the memory-mapped weights (one checkpoint)
            self._opt = AdamW(self.model, lr=TRAIN_LR, weight_decay=TRAIN_WEIGHT_DECAY, decay="2d")
        loss, grads = self.model.loss_and_grads(ids)
        clip_grad_norm(grads, TRAIN_CLIP)
        self._opt.step(grads)
        return float(loss)
