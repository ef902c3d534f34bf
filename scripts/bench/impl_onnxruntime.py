"""ONNX Runtime behind the benchmark's small interface (the same one impl_gpt2np.py offers).

The graph is transformers' GPT-2 exported by scripts/bench/export_onnx.py (cached once per model,
its logits checked against gpt2np's before the bench times anything). Its inputs and outputs,
all NumPy arrays on the way in and out:

    input_ids       [B, T]          int64   the new tokens
    attention_mask  [B, P + T]      int64   1 = real token, 0 = pad, over the past and the new tokens
    position_ids    [B, T]          int64
    keep            [K]             int64   which of the T positions get logits (arange(T): all)
    past_key_i      [B, H, P, D]    float32 for each layer i (and past_value_i); P = 0 to start
 -> logits          [B, K, V]       float32
    present_key_i   [B, H, P + T, D]  the past with the new tokens' keys appended (and present_value_i)

A plain export: each step concatenates the cache into new arrays (what the graph's Concat
does), where gpt2np writes into a preallocated one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .measure import blas_info, limit_blas_threads
from .tasks import TRAINING_TASKS


class OnnxGPT2:
    """An exported graph in an onnxruntime session, called with NumPy arrays."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # the same thread count as the other columns
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_")]  # past_key_0, past_value_0, past_key_1, ...
        _, self.n_head, _, self.head_dim = inputs[self.past_names[0]].shape  # [batch, H, past, D]
        self.vocab_size = self.session.get_outputs()[0].shape[-1]  # logits [batch, keep, V]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.n_head, 0, self.head_dim), np.float32) for _ in self.past_names]

    def run(self, ids, mask, positions, keep, past) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call of the graph: (logits [B, K, V], the presents that are the next call's past)."""
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "keep": keep}
        feeds |= dict(zip(self.past_names, past))
        logits, *presents = self.session.run(None, feeds)
        return logits, presents


class OnnxRuntime:
    # score8_long would need every position's logits out of the graph ([8, 1024, 50257] float32,
    # 1.6 GB) and a log-softmax in NumPy: not ONNX Runtime's speed any more. family would need
    # an export of each larger model. beam1/beam4 (issue 24) would need a beam search written
    # around the session. None of these is run for this column.
    # The training tasks (backward*, train*) need gradients, which an inference runtime has not.
    unsupported_tasks = frozenset({"score8_long", "family", "beam1", "beam4", *TRAINING_TASKS})

    def __init__(self, threads: int, onnx_path: str | Path):
        import onnxruntime

        self._limits = limit_blas_threads(threads)  # NumPy (argmax, repeat) next to it
        self.threads, self.onnx_path = threads, Path(onnx_path)
        self.versions = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
        self.info = {"blas": blas_info(), "onnx_model": str(self.onnx_path)}

    def load(self, folder) -> None:
        """The session: reads the exported graph and runs ONNX Runtime's graph optimisations."""
        self.graph = OnnxGPT2(self.onnx_path, self.threads)
        self.vocab_size = self.graph.vocab_size

    def forward(self, ids: np.ndarray, logits_to_keep: int = 0) -> np.ndarray:
        """[B, T] ids, no padding -> logits (every position, or the last logits_to_keep)."""
        B, T = ids.shape
        keep = np.arange(T - logits_to_keep if logits_to_keep else 0, T)
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(T), (B, T)))
        return self.graph.run(ids, np.ones_like(ids), positions, keep, self.graph.empty_past(B))[0]

    def prefill(self, ids: np.ndarray, max_len: int) -> dict:
        B, T = ids.shape
        mask = np.ones((B, max_len), dtype=np.int64)
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(T), (B, T)))
        logits, past = self.graph.run(ids, mask[:, :T], positions, np.array([T - 1]), self.graph.empty_past(B))
        return {"past": past, "mask": mask, "logits": logits[:, -1], "length": T}

    def repeat_rows(self, state: dict, batch: int) -> dict:
        """A 1-row decoding state -> `batch` identical rows (as impl_gpt2np.py)."""
        return {
            "past": [np.repeat(p[:1], batch, axis=0) for p in state["past"]],
            "mask": np.ones((batch, state["mask"].shape[1]), dtype=np.int64),
            "logits": np.repeat(state["logits"][:1], batch, axis=0),
            "length": state["length"],
        }

    def step(self, state: dict) -> None:
        """One greedy decode step: argmax of the last logits in, next logits out."""
        B, length = state["logits"].shape[0], state["length"] + 1
        next_ids = state["logits"].argmax(axis=-1)[:, None]  # [B, 1]
        positions = np.full((B, 1), length - 1, dtype=np.int64)
        logits, state["past"] = self.graph.run(
            next_ids, state["mask"][:, :length], positions, np.array([0]), state["past"]
        )
        state["logits"], state["length"] = logits[:, -1], length

    def generate(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        return greedy_generate(self, ids, new_tokens)


def greedy_generate(impl, ids: np.ndarray, new_tokens: int) -> np.ndarray:
    """Generation by an implementation's own prefill and steps, for runtimes without a generate
    of their own: greedy, exactly new_tokens tokens (no end-of-text stop), as the other columns."""
    state = impl.prefill(ids, ids.shape[1] + new_tokens)
    tokens = [state["logits"].argmax(axis=-1)]  # [B] each
    for _ in range(new_tokens - 1):
        impl.step(state)
        tokens.append(state["logits"].argmax(axis=-1))
    return np.concatenate([ids, np.stack(tokens, axis=1)], axis=1)  # [B, T + new_tokens]
