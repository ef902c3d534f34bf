"""Shared fixtures: the random test models, the genuine GPT-2 tokenizer files, transformers.

- Random models (gpt2np.tools.random_model.TEST_MODELS) are built on first use under
  weights/test-models/ (or $GPT2NP_TEST_MODELS) and reused; the same seed gives the same bytes.
- The genuine GPT-2 tokenizer files are the package's own (gpt2np/tokenizer_files/): a clone
  needs nothing from outside its tree.
- Tests that compare live against transformers use the `transformers` fixture. Without torch
  and transformers they skip, except when GPT2NP_REQUIRE_TRANSFORMERS=1 (set by .ci/run):
  then a missing transformers is a failure, never a silent skip.
- Tests that need the real GPT-2 weights use `real_gpt2`; they skip with the reason when the
  weights are not on this machine. The end of the run says how many skipped, and why.
- An optional package a test needs (matplotlib) is imported with `require_module`: a skip
  locally, a failure in CI.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MODELS_DIR = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("GPT2NP_REQUIRE_TRANSFORMERS") == "1"

# The seed's batch (the developers' guide).
SEED_SENTENCES = ["It will rain in the", "I want to eat a big bowl of", "My dog is"]
SEED_INPUT_IDS = np.array(
    [[50256, 50256, 50256, 1026, 481, 6290, 287, 262],
     [40, 765, 284, 4483, 257, 1263, 9396, 286],
     [50256, 50256, 50256, 50256, 50256, 3666, 3290, 318]]
)  # fmt: skip
SEED_ATTENTION_MASK = (SEED_INPUT_IDS != 50256).astype(np.int64)  # no real token of the seed is 50256


@pytest.fixture(autouse=True, scope="session")
def private_stamp_cache(tmp_path_factory):
    """The run's "verified"/"finite" stamps (checkpoint.py) go to a directory of this test run,
    not to the user's ~/.cache/gpt2np: tests never write outside their own tree and tmp (tests
    that check the stamps' location set GPT2NP_CACHE or XDG_CACHE_HOME themselves)."""
    mp = pytest.MonkeyPatch()
    if "GPT2NP_CACHE" not in os.environ:
        mp.setenv("GPT2NP_CACHE", str(tmp_path_factory.mktemp("gpt2np-cache")))
    yield
    mp.undo()


# The page's models, as its `gpt2np random-model` lines make them, and the test models that are them:
# weights/tiny is byte for byte the test model "tiny" (test_the_page_makes_its_model_as_the_tests_do);
# weights/gpt2-shaped only feeds the parameter count, which depends on the shape alone.
PAGE_MODELS = {"weights/tiny": "tiny", "weights/gpt2-shaped": "gpt2-shaped"}


def page_args(command: str, model_dir) -> list[str]:
    """The command's arguments (without "gpt2np"), the page's model folders replaced by the test models."""
    return [str(model_dir(PAGE_MODELS[a])) if a in PAGE_MODELS else a for a in shlex.split(command)[1:]]


def build_model(name: str) -> Path:
    from gpt2np.tools.random_model import build_test_model

    return build_test_model(name, TEST_MODELS_DIR)


def changed_copy(folder: Path, dest: Path) -> Path:
    """A copy of a model folder with ln_f.bias moved by 0.1: every logit moves."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(folder, dest)
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("ln_f.bias"))
    tensors[name] = tensors[name] + np.float32(0.1)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


@pytest.fixture(scope="module")
def blas_threads_restored():
    """The bench's implementations limit BLAS's threads for the whole process (threadpoolctl:
    right in a bench worker, which runs one task and exits). In the test process that limit would
    outlive the test and change every later test's float32 sums (a matrix product split over 1
    thread rounds differently from one split over 2): test_score_file_output compares a run in
    this process with one in a fresh process, byte for byte, and failed after the export tests.
    Module-scoped, so it is set up before the module's other fixtures (the ONNX export) run."""
    from threadpoolctl import threadpool_info, threadpool_limits

    before = {info["prefix"]: info["num_threads"] for info in threadpool_info()}
    yield
    threadpool_limits(limits=before)
    after = {info["prefix"]: info["num_threads"] for info in threadpool_info() if info["prefix"] in before}
    assert after == before, f"BLAS threads not restored: {before} -> {after}"


def decode_alike(ours, theirs, folder: Path, tolerance: float):
    """Two of the bench's implementations (scripts/bench/impl_*.py) loaded from one model: the
    same logits (within tolerance) from forward (all, the last, the last 3 positions), from a
    prefill repeated to 3 rows and from 4 decode steps after it. Returns them, loaded."""
    from scripts.bench.export_onnx import max_difference

    ours.load(folder)
    theirs.load(folder)
    ids = np.random.default_rng(0).integers(0, ours.vocab_size, size=(2, 9), dtype=np.int64)
    for keep in (0, 1, 3):
        assert max_difference(ours.forward(ids, keep), theirs.forward(ids, keep)) <= tolerance, f"forward, keep {keep}"
    states = [impl.prefill(ids[:1], 20) for impl in (ours, theirs)]
    states = [impl.repeat_rows(s, 3) for impl, s in zip((ours, theirs), states)]
    for step in range(4):
        for impl, state in zip((ours, theirs), states):
            impl.step(state)
        assert states[0]["length"] == states[1]["length"]
        assert max_difference(states[0]["logits"], states[1]["logits"]) <= tolerance, f"decode step {step}"
    return ours, theirs


# Made-up texts for the scoring tests are drawn from these words: each is one GPT-2 token
# (with its space), so a text of n words is n tokens.
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "it",
    "ran",
    "far",
    "away",
    "from",
    "home",
    "to",
    "see",
    "what",
    "was",
    "there",
]


@pytest.fixture(scope="session")
def short_context(tmp_path_factory) -> Path:
    """The folder of a random GPT-2 with a 32-token context: some texts are longer than it (stride)."""
    from gpt2np.config import GPT2Config
    from gpt2np.tools.random_model import make_random_checkpoint

    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32)
    return make_random_checkpoint(tmp_path_factory.mktemp("ctx32"), config, seed=11)


@pytest.fixture(scope="session")
def overflowing_model_dir(tmp_path_factory) -> Path:
    """The folder of `tiny` with ln_f's gain at 3e38: every weight finite (the load accepts it),
    but float32 overflows to inf in ln_f's output, as a checkpoint converted with a wrong scale
    would."""
    from safetensors.numpy import load_file

    from gpt2np.checkpoint import save_checkpoint

    tiny = build_model("tiny")
    tensors = load_file(str(tiny / "model.safetensors"))
    tensors["transformer.ln_f.weight"] = np.full_like(tensors["transformer.ln_f.weight"], 3e38)
    folder = tmp_path_factory.mktemp("overflowing")
    save_checkpoint(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text((tiny / "config.json").read_text())
    return folder


@pytest.fixture(scope="session")
def model_dir():
    """model_dir("tiny") -> folder of that random test model (built once)."""
    return build_model


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The folder of GPT-2's vocab.json + merges.txt that ships inside the package."""
    from gpt2np.hub import PACKAGED_TOKENIZER

    return PACKAGED_TOKENIZER


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from gpt2np import Tokenizer

    return Tokenizer.from_pretrained(tokenizer_dir)


def require_module(name: str, install: str = "pip install -e '.[test]'"):
    """Import an optional package, or skip the calling module (a failure under CI)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        message = f"{name} is not installed ({e}); {install}"
        if IN_CI:
            pytest.fail("GPT2NP_REQUIRE_TRANSFORMERS=1 (CI) but " + message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


def _import_transformers():
    try:
        import torch
        import transformers
    except ImportError as e:
        message = f"torch/transformers not installed ({e}); pip install -e '.[test]' (pins torch==2.13.0)"
        if IN_CI:
            pytest.fail("GPT2NP_REQUIRE_TRANSFORMERS=1 but " + message)
        pytest.skip(message)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return transformers


@pytest.fixture(scope="session")
def transformers():
    return _import_transformers()


@pytest.fixture(scope="session")
def hf_model(transformers):
    """hf_model(path, attn="eager", dtype="float32") -> a cached transformers GPT2LMHeadModel."""
    import torch

    cache = {}

    def load(path, attn="eager", dtype="float32"):
        key = (str(path), attn, dtype)
        if key not in cache:
            m = transformers.GPT2LMHeadModel.from_pretrained(
                str(path), attn_implementation=attn, dtype=getattr(torch, dtype)
            )
            cache[key] = m.eval()
        return cache[key]

    return load


def find_real_gpt2() -> Path | None:
    """The real GPT-2 124M folder, if this machine has it (weights/gpt2 or the HF cache)."""
    from gpt2np.errors import GPT2npError
    from gpt2np.hub import resolve_model_files

    try:
        return resolve_model_files("gpt2", local_files_only=True)["model.safetensors"].parent
    except GPT2npError:
        return None


@pytest.fixture(scope="session")
def real_gpt2() -> Path:
    folder = find_real_gpt2()
    if folder is None:
        pytest.skip(
            "the real GPT-2 weights are not on this machine (not in weights/gpt2/ nor in the Hugging Face cache); "
            "run `gpt2np download gpt2` where the hub is reachable to run this test"
        )
    return folder


def pytest_terminal_summary(terminalreporter):
    """Say how many tests did not run for want of the real GPT-2 weights, and why; and any
    other skip, so that a skip is never read as a pass."""
    skipped = terminalreporter.stats.get("skipped", [])
    real = [r for r in skipped if "real_weights" in getattr(r, "keywords", {})]  # a skipped module has no keywords
    other = [r for r in skipped if r not in real]
    if not skipped:
        return
    terminalreporter.section("skips")
    if real:
        reasons = sorted(
            {
                str(r.longrepr[2] if isinstance(r.longrepr, tuple) else r.longrepr).removeprefix("Skipped: ")
                for r in real
            }
        )
        terminalreporter.write_line(
            f"{len(real)} real-weight tests (tests/test_real_gpt2.py) did not run: {'; '.join(reasons)}"
        )
    if other:
        terminalreporter.write_line(f"{len(other)} other tests skipped (reasons in the short test summary below)")
