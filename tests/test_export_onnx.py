"""scripts/bench/export_onnx.py: the ONNX export of the bench's ONNX Runtime column and its logits check.

The comparison helpers are plain NumPy and run everywhere. The rest exports the tiny random
model for real (torch, transformers, onnx, onnxscript, onnxruntime: in the `test` and `bench`
extras) and skips, saying so, where those are not installed; in CI that is a failure.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.util import find_spec

import numpy as np
import pytest
from conftest import IN_CI, ROOT, build_model, changed_copy, decode_alike

if str(ROOT) not in sys.path:  # scripts/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from scripts.bench import export_onnx
from scripts.bench.export_onnx import TOLERANCE, LogitsMismatch, max_difference, require_equal

pytestmark = pytest.mark.usefixtures("blas_threads_restored")  # the bench impls limit BLAS threads process-wide

# --- the comparison (NumPy only) -------------------------------------------------------------


def test_max_difference_is_the_largest_absolute_difference():
    ours = np.zeros((2, 3), np.float32)
    theirs = ours.copy()
    theirs[1, 2] = -3e-5
    theirs[0, 0] = 1e-5
    assert max_difference(ours, theirs) == pytest.approx(3e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_value_that_is_not_finite_is_an_infinite_difference(bad):
    ours = np.zeros(4, np.float32)
    theirs = ours.copy()
    theirs[2] = bad
    assert max_difference(ours, theirs) == float("inf")
    with pytest.raises(LogitsMismatch, match="differ from gpt2np's by inf"):
        require_equal(max_difference(ours, theirs), TOLERANCE, "planted")


def test_a_shape_mismatch_is_an_infinite_difference():
    assert max_difference(np.zeros((2, 3)), np.zeros((3, 2))) == float("inf")


def test_require_equal_refuses_more_than_the_tolerance_and_says_how_to_fix_it():
    require_equal(TOLERANCE, TOLERANCE, "at the limit")  # the limit itself holds
    with pytest.raises(LogitsMismatch, match=r"by 0.00011 \(tolerance 0.0001\).*export_onnx.py --force"):
        require_equal(1.1e-4, TOLERANCE, "planted")
    with pytest.raises(LogitsMismatch):
        require_equal(float("nan"), TOLERANCE, "planted")  # a NaN compares False both ways: refused


def test_the_cache_folder_is_keyed_by_the_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"one")
    first = export_onnx.cache_dir(folder)
    assert first.name.startswith("m-") and len(first.name) == len("m-") + 16
    (folder / "model.safetensors").write_bytes(b"two")
    assert export_onnx.cache_dir(folder) != first
    (folder / "model.safetensors").write_bytes(b"one")
    (folder / "config.json").write_text('{"n_layer": 1}')  # the config counts too
    assert export_onnx.cache_dir(folder) != first


# --- the export itself (the `bench` extra) ---------------------------------------------------

MISSING = [name for name in export_onnx.NEEDED_TO_EXPORT if find_spec(name) is None]
if MISSING and IN_CI:  # the `test` extra has them: in CI, missing is a broken install, not a skip
    pytest.fail(f"GPT2NP_REQUIRE_TRANSFORMERS=1 (CI) but {', '.join(MISSING)} not installed", pytrace=False)
needs_export = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install -e '.[test]' (or '.[bench]')"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model exported once into a private GPT2NP_BENCH_MODELS: (model folder, model.onnx, manifest)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GPT2NP_BENCH_MODELS", str(tmp_path_factory.mktemp("bench-models")))
    folder = build_model("tiny")
    path, manifest = export_onnx.ensure_onnx(folder, threads=1, log=lambda *_: None)
    yield folder, path, manifest
    mp.undo()


@needs_export
def test_the_export_gives_gpt2np_s_logits_prefill_and_decode(exported):
    folder, path, manifest = exported
    assert path.is_file() and path.parent == export_onnx.cache_dir(folder)
    for check in (manifest["check_at_export"], manifest["check"]):
        assert check["max_abs_diff"] <= TOLERANCE
        assert check["positions_compared"] == 3 * 28 - (5 + 11)  # every real position, none of the pads
    written = json.loads((path.parent / export_onnx.MANIFEST).read_text())
    assert written["sha256"] == export_onnx.fingerprint(folder)
    assert set(written["fusions"]) <= set(written["op_counts"])  # what it says fused is in the graph


@needs_export
def test_the_check_refuses_a_graph_of_other_weights(exported, tmp_path):
    """The planted bug: the graph of the tiny model checked against slightly different weights."""
    folder, path, _ = exported
    other = changed_copy(folder, tmp_path / "tiny")
    with pytest.raises(LogitsMismatch, match="tiny, prefill: ONNX Runtime's logits differ"):
        export_onnx.check_logits(other, path, threads=1)


@needs_export
def test_the_bench_s_onnxruntime_worker_does_what_gpt2np_s_does(exported):
    """The ORT column's prefill, decode steps, repeated rows, forward and generate, against
    gpt2np's bench interface on the same prompt: same logits within the tolerance, same tokens."""
    from scripts.bench.impl_gpt2np import Gpt2np
    from scripts.bench.impl_onnxruntime import OnnxRuntime

    folder, path, _ = exported
    ours, theirs = decode_alike(Gpt2np(threads=1), OnnxRuntime(threads=1, onnx_path=path), folder, TOLERANCE)
    ids = np.random.default_rng(0).integers(0, ours.vocab_size, size=(2, 9), dtype=np.int64)
    np.testing.assert_array_equal(ours.generate(ids, 6), theirs.generate(ids, 6))


@needs_export
def test_changed_weights_are_exported_again_and_the_stale_export_removed(exported, tmp_path, monkeypatch):
    folder, path, _ = exported
    monkeypatch.setenv("GPT2NP_BENCH_MODELS", str(tmp_path / "bench-models"))  # a cache of this test's own
    cached = export_onnx.cache_dir(folder)
    shutil.copytree(path.parent, cached)
    said: list[str] = []
    again, _ = export_onnx.ensure_onnx(folder, threads=1, log=said.append)
    assert again == cached / export_onnx.MODEL_FILE and said == []  # cached: not exported twice
    other = changed_copy(folder, tmp_path / "tiny")  # the same folder name, other weights
    new, manifest = export_onnx.ensure_onnx(other, threads=1, log=said.append)
    assert new.parent == export_onnx.cache_dir(other) != cached and new.is_file()
    assert any("making the ONNX export" in s for s in said)
    assert not cached.exists()  # the export of the old weights is gone
    assert manifest["check"]["max_abs_diff"] <= TOLERANCE
