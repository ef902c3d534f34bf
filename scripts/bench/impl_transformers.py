"""transformers (torch, sdpa attention) behind the benchmark's small interface (see impl_gpt2np.py)."""

from __future__ import annotations

import numpy as np


class Transformers:
    def __init__(self, threads: int, training: bool = False):
        import torch
        import transformers

        from .measure import blas_info, limit_blas_threads

        torch.set_num_threads(threads)
        self._limits = limit_blas_threads(threads)  # NumPy's OpenBLAS is loaded here too
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.torch = torch
        self.versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
        self.info = {"torch": torch_info(), "blas": blas_info()}
        self.training, self._opt = training, None
        if not training:  # no autograd bookkeeping for the whole worker: the fair setting for inference
            self._no_grad = torch.inference_mode()
            self._no_grad.__enter__()

    def load(self, folder) -> None:
        from transformers import GPT2LMHeadModel

        self.model = GPT2LMHeadModel.from_pretrained(folder, dtype=self.torch.float32)
        self.model.eval()  # no dropout, in training tasks too: the same work as gpt2np's
        self.vocab_size = self.model.config.vocab_size
        self.info["attn_implementation"] = self.model.config._attn_implementation

    def forward(self, ids: np.ndarray, logits_to_keep: int = 0):
        ids = self.torch.from_numpy(ids)
        return self.model(input_ids=ids, attention_mask=self.torch.ones_like(ids), logits_to_keep=logits_to_keep).logits

    def prefill(self, ids: np.ndarray, max_len: int) -> dict:
        torch = self.torch
        ids = torch.from_numpy(ids)
        B, T = ids.shape
        mask = torch.ones((B, max_len), dtype=torch.int64)
        out = self.model(
            input_ids=ids,
            attention_mask=mask[:, :T],
            position_ids=torch.arange(T).expand(B, -1),
            use_cache=True,
            logits_to_keep=1,
        )
        return {"past": out.past_key_values, "mask": mask, "logits": out.logits[:, -1], "length": T}

    def repeat_rows(self, state: dict, batch: int) -> dict:
        state["past"].batch_repeat_interleave(batch)  # transformers' own (beam search uses it)
        mask = self.torch.ones((batch, state["mask"].shape[1]), dtype=self.torch.int64)
        return {
            "past": state["past"],
            "mask": mask,
            "logits": state["logits"].repeat(batch, 1),
            "length": state["length"],
        }

    def step(self, state: dict) -> None:
        torch = self.torch
        B, length = state["logits"].shape[0], state["length"] + 1
        next_ids = state["logits"].argmax(dim=-1)[:, None]
        positions = torch.full((B, 1), length - 1, dtype=torch.int64)
        out = self.model(
            input_ids=next_ids,
            attention_mask=state["mask"][:, :length],
            position_ids=positions,
            past_key_values=state["past"],
            use_cache=True,
        )
        state["past"], state["logits"], state["length"] = out.past_key_values, out.logits[:, -1], length

    def generate(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        return self._generate(ids, new_tokens)

    def beam_search(self, ids: np.ndarray, new_tokens: int, num_beams: int) -> np.ndarray:
        return self._generate(ids, new_tokens, num_beams=num_beams)

    def _generate(self, ids: np.ndarray, new_tokens: int, **settings) -> np.ndarray:
        ids = self.torch.from_numpy(ids)
        self.model.generation_config.eos_token_id = None  # exactly new_tokens tokens, as gpt2np's eos_token_id=None
        out = self.model.generate(
            ids,
            attention_mask=self.torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=self.model.config.eos_token_id,
            use_cache=True,
            **settings,
        )
        return out.numpy()

    def loss(self, ids: np.ndarray, mask: np.ndarray) -> float:
        """The same loss as gpt2np's score: labels -100 on pads and on each row's first real
        token (nothing predicts it), positions from the mask."""
        torch = self.torch
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
        first_real = torch.arange(ids.shape[1])[None, :] == (mask_t == 0).sum(-1, keepdim=True)
        labels = ids_t.masked_fill((mask_t == 0) | first_real, -100)
        return float(self.model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions, labels=labels).loss)

    def backward(self, ids: np.ndarray) -> float:
        """One forward + backward: the next-token loss of [B, T] ids (labels = ids, shifted inside)."""
        ids_t = self.torch.from_numpy(ids)
        self.model.zero_grad(set_to_none=True)
        loss = self.model(input_ids=ids_t, labels=ids_t).loss
        loss.backward()
        return loss.item()

    def train_step(self, ids: np.ndarray) -> float:
        """A full step: forward, backward, clip_grad_norm_, torch.optim.AdamW (its default
        implementation; weight decay on the 2-d parameters, nanoGPT's groups)."""
        from .tasks import TRAIN_CLIP, TRAIN_LR, TRAIN_WEIGHT_DECAY

        torch = self.torch
        if self._opt is None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": TRAIN_WEIGHT_DECAY},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            self._opt = torch.optim.AdamW(groups, lr=TRAIN_LR, betas=(0.9, 0.999), eps=1e-8)
        loss = self.backward(ids)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), TRAIN_CLIP)
        self._opt.step()
        return loss


def torch_info() -> dict:
    import torch

    parallel = torch.__config__.parallel_info()
    backend = next(
        (line.split(":", 1)[1].strip() for line in parallel.splitlines() if "parallel backend" in line), None
    )
    return {
        "num_threads": torch.get_num_threads(),
        "parallel_backend": backend,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": next(
            (
                p.split("=", 1)[1]
                for p in torch.__config__.show().replace(",", " ").split()
                if p.startswith("BLAS_INFO=")
            ),
            None,
        ),
    }
