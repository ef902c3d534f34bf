"""Build the random GPT-2 test models (gpt2np.tools.random_model.TEST_MODELS) and print their sha256.

    python scripts/data/make_test_models.py [--out weights/test-models] [names...]

The tests build them on demand too (tests/conftest.py); this script is for doing it up front
and for seeing that the bytes are reproducible: the sha256 printed here must equal the one
stored in tests/data/references.json, which scripts/data/make_references.py recorded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpt2np.hub import sha256_of  # noqa: E402
from gpt2np.tools.random_model import TEST_MODELS, build_test_model  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(TEST_MODELS), help=f"default: all of {', '.join(TEST_MODELS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "weights" / "test-models")
    args = parser.parse_args(argv)
    for name in args.names:
        start = time.perf_counter()
        folder = build_test_model(name, args.out)
        digest = sha256_of(folder / "model.safetensors")
        print(f"{name:15s} {folder}  sha256 {digest}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
