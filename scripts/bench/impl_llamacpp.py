"""llama.cpp (through llama-cpp-python's C API bindings) behind the benchmark's small interface.

The model is an f32 GGUF converted from the same safetensors file by llama.cpp's own
convert_hf_to_gguf.py (scripts/bench/export_gguf.py, cached once per model, its logits checked
against gpt2np's before the bench times anything). Settings, all stated:

- the KV cache in float32 (llama.cpp's default is float16, which moves logits by ~1e-3 on its
  own: 2.5e-3 on the tiny test model) and flash attention off (llama.cpp's default, "auto",
  turns it on, and on the CPU it moved the tiny model's logits by 4.0e-3 against 7.0e-4 with
  it off: python scripts/bench/export_gguf.py --model weights/test-models/tiny, both ways);
- each row of a batch is its own sequence (seq_id = row), each with room for as many tokens as
  the task puts in a row (tasks.row_tokens: n_ctx = rows x that; llama.cpp allocates and clears
  the whole KV cache up front, so a cache sized for GPT-2's whole context would add ~540 MB to
  the peak RSS of generating 8 rows), so a step of 8 rows is one llama_decode of 8 tokens;
- the same thread count as the other columns for both prompt and generation (n_threads,
  n_threads_batch); the weights memory-mapped (llama.cpp's default), as gpt2np's.

llama.cpp's CPU GELU reads a float16 table (ggml-cpu/vec.h: `#define GGML_GELU_FP16`), so its
logits differ from gpt2np's by more than ONNX Runtime's do: export_gguf.py states by how much.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .impl_onnxruntime import greedy_generate
from .measure import blas_info, limit_blas_threads
from .tasks import TRAINING_TASKS


class LlamaGGUF:
    """A GGUF model and one llama.cpp context, called with NumPy arrays."""

    def __init__(self, path: Path, threads: int, n_seq: int, row_tokens: int | None = None):
        import llama_cpp as ll

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load-time chatter
        self.ll = ll
        ll.llama_backend_init()
        self.model = ll.llama_model_load_from_file(str(path).encode(), ll.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        n_positions = ll.llama_model_n_ctx_train(self.model)
        params = ll.llama_context_default_params()
        row = min(row_tokens or n_positions, n_positions)
        params.n_ctx = params.n_batch = n_seq * row  # every row's tokens fit, all rows in one call
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = threads
        params.type_k = params.type_v = ll.GGML_TYPE_F32
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {params.n_ctx} positions for {path}")
        self.memory = ll.llama_get_memory(self.ctx)
        self.vocab_size = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(self.model))
        self.capacity = params.n_batch
        self.batch = ll.llama_batch_init(self.capacity, 0, 1)
        n = self.capacity  # NumPy views of the batch's arrays: filled in one assignment each
        self.tokens = np.ctypeslib.as_array(self.batch.token, shape=(n,))
        self.pos = np.ctypeslib.as_array(self.batch.pos, shape=(n,))
        self.n_seq_id = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(n,))
        self.wanted = np.ctypeslib.as_array(self.batch.logits, shape=(n,))
        self.n_seq_id[:] = 1
        self.seq_written = np.full(n, -1, dtype=np.int64)  # seq_id[i][0] as last written (a pointer each)

    def close(self) -> None:
        """Free the batch, the context and the model (C memory: Python's collector does not see it)."""
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)

    def clear(self) -> None:
        """Forget every sequence (a fresh KV cache)."""
        self.ll.llama_memory_clear(self.memory, True)

    def copy_sequence(self, src: int, dst: int) -> None:
        self.ll.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def decode(self, tokens, positions, seqs, wanted) -> np.ndarray:
        """One llama_decode of n tokens (1-D arrays: token ids, positions, sequence ids, which
        ones give logits) -> logits [n wanted, V], in the order of the tokens."""
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"{n} tokens in one call; this context takes {self.capacity}")
        self.tokens[:n], self.pos[:n], self.wanted[:n] = tokens, positions, wanted
        for i in np.flatnonzero(self.seq_written[:n] != seqs):  # usually none: the same layout as last call
            self.batch.seq_id[i][0] = int(seqs[i])
            self.seq_written[i] = seqs[i]
        self.batch.n_tokens = n
        status = self.ll.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        n_out = int(np.count_nonzero(wanted))
        logits = self.ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(logits, shape=(n_out, self.vocab_size)).copy()


class LlamaCpp:
    # As impl_onnxruntime.py: the loss of every token of 8x1024 would be logits of every
    # position pulled out and a log-softmax in NumPy, family would need more conversions, and
    # beam1/beam4 a beam search written around the context.
    # The training tasks (backward*, train*) need gradients, which an inference runtime has not.
    unsupported_tasks = frozenset({"score8_long", "family", "beam1", "beam4", *TRAINING_TASKS})

    def __init__(self, threads: int, gguf_path: str | Path, batch: int, row_tokens: int | None = None):
        from importlib import metadata

        self._limits = limit_blas_threads(threads)  # NumPy (argmax) next to it
        self.threads, self.gguf_path, self.rows, self.row_tokens = threads, Path(gguf_path), batch, row_tokens
        self.versions = {"llama_cpp_python": metadata.version("llama-cpp-python"), "numpy": np.__version__}
        self.info = {"blas": blas_info(), "gguf_model": str(self.gguf_path)}

    def load(self, folder) -> None:
        """The model (memory-mapped) and a context with room for `batch` rows of row_tokens tokens."""
        self.graph = LlamaGGUF(self.gguf_path, self.threads, self.rows, self.row_tokens)
        self.vocab_size = self.graph.vocab_size

    def _prompt(self, ids: np.ndarray, keep: int) -> np.ndarray:
        """Each row of ids [B, T] as sequence b from position 0 -> logits [B, keep, V] of its last `keep` tokens."""
        B, T = ids.shape
        self.graph.clear()
        positions = np.tile(np.arange(T), B)  # [B * T], row by row
        wanted = positions >= T - keep
        logits = self.graph.decode(ids.reshape(-1), positions, np.repeat(np.arange(B), T), wanted)
        return logits.reshape(B, keep, -1)

    def forward(self, ids: np.ndarray, logits_to_keep: int = 0) -> np.ndarray:
        return self._prompt(ids, logits_to_keep or ids.shape[1])

    def prefill(self, ids: np.ndarray, max_len: int) -> dict:
        return {"logits": self._prompt(ids, 1)[:, -1], "length": ids.shape[1]}

    def repeat_rows(self, state: dict, batch: int) -> dict:
        """A 1-row decoding state -> `batch` identical rows: sequence 0's cache copied to 1, 2, ..."""
        for row in range(1, batch):
            self.graph.copy_sequence(0, row)
        return {"logits": np.repeat(state["logits"][:1], batch, axis=0), "length": state["length"]}

    def step(self, state: dict) -> None:
        """One greedy decode step: argmax of the last logits in, next logits out."""
        B, length = state["logits"].shape[0], state["length"] + 1
        next_ids = state["logits"].argmax(axis=-1)  # [B]
        positions = np.full(B, length - 1)
        state["logits"] = self.graph.decode(next_ids, positions, np.arange(B), np.ones(B, dtype=bool))
        state["length"] = length

    def generate(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        return greedy_generate(self, ids, new_tokens)
