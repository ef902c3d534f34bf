"""How far are float32 logits from the float64 truth: gpt2np's and transformers', side by side.

    python scripts/experiments/fidelity.py [--models tiny small-outliers odd gpt2-shaped] [--real]
    python scripts/experiments/fidelity.py --gemm      # how much this BLAS kernel's float32 matmul rounds

The truth is transformers run in float64 (gpt2np's own float64 mode agrees with it to ~1e-13).
For each model and a few random batches, prints the RMS and the max of |logits - truth| over
all logits, for gpt2np float32 and transformers float32, and their ratio (< 1: gpt2np is
closer). --real adds the real GPT-2 124M when it is on disk. Needs torch + transformers.

--gemm prints which OpenBLAS kernel NumPy runs (threadpoolctl) and the RMS error, relative to
float64, of a float32 matmul at GPT-2's shapes: [24, 768] @ [768, N] and 3072-long sums. Run it
once as the environment has OPENBLAS_CORETYPE and once with it unset (`env -u OPENBLAS_CORETYPE
-u OPENBLAS_L2_SIZE python scripts/experiments/fidelity.py --gemm`) to compare two kernels on one CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpt2np import GPT2  # noqa: E402
from gpt2np.tools.random_model import TEST_MODELS, build_test_model  # noqa: E402


def rms(d):
    return float(np.sqrt(np.mean(d**2)))


def gemm_errors() -> None:
    """Relative RMS error of float32 x @ W against float64, at GPT-2 124M's matmul shapes."""
    from threadpoolctl import threadpool_info

    kernels = [f"{i['internal_api']} {i.get('architecture')}" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"BLAS: {', '.join(kernels)}")
    rng = np.random.default_rng(0)
    for M, K, N in [(24, 768, 2304), (24, 768, 3072), (24, 3072, 768), (1, 768, 2304), (24, 768, 50257)]:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
        exact = x.astype(np.float64) @ W.astype(np.float64)
        print(f"  [{M}, {K}] @ [{K}, {N}]: relative RMS error {rms(x @ W - exact) / rms(exact):.3g}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(TEST_MODELS))
    parser.add_argument("--real", action="store_true", help="also the real GPT-2 124M, if on disk")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--gemm", action="store_true", help="the BLAS kernel's matmul rounding only (no torch)")
    args = parser.parse_args(argv)
    if args.gemm:
        return gemm_errors()
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)
    folders = {name: build_test_model(name, ROOT / "weights" / "test-models") for name in args.models}
    if args.real:
        from gpt2np.hub import resolve_model_files

        folders["gpt2 (real)"] = resolve_model_files("gpt2", local_files_only=True)["model.safetensors"].parent
    print(
        f"{'model':16s} {'rms gpt2np':>11s} {'rms transf.':>11s} {'ratio':>6s} {'max gpt2np':>11s} {'max transf.':>11s} {'ratio':>6s}"
    )
    for name, folder in folders.items():
        ours = GPT2.from_pretrained(folder)
        hf32 = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        hf64 = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float64).eval()
        rng = np.random.default_rng(0)
        errors = {"ours": [], "hf": []}
        for _ in range(args.batches):
            ids = rng.integers(0, ours.config.vocab_size, size=(4, min(32, ours.config.n_positions)))
            with torch.no_grad():
                truth = hf64(torch.tensor(ids)).logits.numpy()
                errors["hf"].append(hf32(torch.tensor(ids)).logits.numpy().astype(np.float64) - truth)
            errors["ours"].append(ours(ids).logits.astype(np.float64) - truth)
        e_ours, e_hf = np.concatenate(errors["ours"]), np.concatenate(errors["hf"])
        r_ours, r_hf, m_ours, m_hf = rms(e_ours), rms(e_hf), np.abs(e_ours).max(), np.abs(e_hf).max()
        print(
            f"{name:16s} {r_ours:11.3g} {r_hf:11.3g} {r_ours / r_hf:6.2f} {m_ours:11.3g} {m_hf:11.3g} {m_ours / m_hf:6.2f}"
        )


if __name__ == "__main__":
    main()
