"""Benchmark gpt2np against transformers (torch, sdpa), ONNX Runtime and llama.cpp on the same weights, in one run.

    /work/venv/bin/python -m scripts.bench                    # full run: 3 repeats (estimated ~20 min idle; not yet timed)
    /work/venv/bin/python -m scripts.bench --quick            # 1 repeat, fewer tasks (31 min on a shared machine, 1 thread)
    /work/venv/bin/python -m scripts.bench --tasks decode1,decode8 --repeats 5
    /work/venv/bin/python -m scripts.bench --pictures docs/img   # also draw decode.png, prefill.png

(from the repository root). The weights: the real GPT-2 124M when it is on this machine,
else a random 124M-shaped model (same shapes, so the same speed) built under
weights/test-models/gpt2-shaped/; the family task adds random gpt2-medium, -large and -xl
shaped models built once under weights/bench-models/ (family.py).

What is measured (random token ids, float32, greedy; see tasks.py for the sizes):
  load              from_pretrained, file already in the OS page cache; and load + first forward
                    (gpt2np memory-maps the checkpoint: pages come in on first use)
  prefill, forward8 every position's logits of 1x128 and 8x128 tokens
  decode1, decode8  single-token steps with a KV cache at context ~150 (ms per step)
  generate1, 8      100 new tokens from a 128-token prompt; the process's peak RSS
  prefill_curve     1xT, T = 128 ... 1024, only the last position's logits (logits_to_keep=1)
  prefill8_long     8x1024, last position's logits
  decode_curve1, 8  steps at context 128 ... 900 (one row prefilled, repeated to 8 rows)
  score8_long       the loss of every token of a left-padded 8x1024 batch: gpt2np's
                    model.score, transformers' labels= loss with -100 on pads (and on each
                    row's first real token, which nothing predicts); time and peak RSS
  family            load, decode b1, peak RSS of the larger models
  beam1, beam4      beam search, 4 beams, a 32-token prompt, 64 new tokens (no end-of-text stop),
                    batch 1 and 4; time and peak RSS; whether both chose the same beams

ONNX Runtime (the `bench` extra: pip install -e '.[bench]'): transformers' GPT-2 exported from
the same safetensors file with its past keys/values as explicit inputs and optimised for GPT-2
by scripts/bench/export_onnx.py, once per model (cached under weights/bench-models/onnx, re-exported
when the weights change); its logits are checked against gpt2np's before anything is timed (a
mismatch stops the bench). It runs every task but score8_long and family. The column is left
out, with a line saying why, when onnxruntime is not installed (or --no-onnxruntime).
llama.cpp (`pip install llama-cpp-python`, which compiles it): the same weights converted to an
f32 GGUF by llama.cpp's own converter (scripts/bench/export_gguf.py, cached under
weights/bench-models/gguf), checked the same way within 1e-2 (its CPU GELU reads a float16
table; export_gguf.py says why and how close it comes otherwise); the same tasks as ONNX
Runtime; left out when llama-cpp-python is not installed (or --no-llamacpp).

How: each (implementation, task) runs in a fresh worker process (workers.py, through the
small interface of impl_gpt2np.py / impl_transformers.py / impl_onnxruntime.py / impl_llamacpp.py), taking turns,
alternating who goes first, repeat after repeat; the table shows the median over repeats of
each worker's median, and the spread. All get the same thread count (environment and
threadpoolctl / torch.set_num_threads / ONNX Runtime's intra_op_num_threads / llama.cpp's n_threads). A third worker measures this machine's limits in the same run
(limits.py): memory bandwidth (decode floors) and GEMM rate (prefill floors). When the
environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE), gpt2np also
runs with both unset for its worker only (runner.py). The CPU time other processes took
during each worker is recorded and reported: on a shared machine the numbers are noisier.

Pieces: tasks.py (what), workers.py + impl_*.py (how, in a worker), limits.py (the machine),
runner.py (processes and environments), report.py (medians, table, targets), pictures.py
(PNGs), family.py (the larger random models), cli.py (the run).
"""
