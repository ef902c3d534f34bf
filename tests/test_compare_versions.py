"""scripts/experiments/compare_versions.py: a git revision's gpt2np runs as a renamed package beside ours."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "experiments"))
import compare_versions  # noqa: E402


@pytest.mark.skipif(
    shutil.which("git") is None
    or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode,
    reason="not a git checkout (compare_versions exports revisions with git archive)",
)
def test_an_exported_revision_imports_as_its_own_package_and_computes_what_ours_does(tmp_path, model_dir):
    compare_versions.export("HEAD", "gpt2np_exported", tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        exported = importlib.import_module("gpt2np_exported")
        assert Path(exported.__file__).parent == tmp_path / "gpt2np_exported"  # not our own gpt2np
        ids = np.array([[1, 2, 3, 4]])
        from gpt2np import GPT2

        theirs = exported.GPT2.from_pretrained(model_dir("tiny"))(ids).logits
        ours = GPT2.from_pretrained(model_dir("tiny"))(ids).logits
        # HEAD's committed gpt2np against the working tree's: equal unless gpt2np/ has uncommitted changes
        np.testing.assert_array_equal(theirs, ours, err_msg="HEAD's gpt2np differs from the working tree's?")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("gpt2np_exported")]:
            del sys.modules[name]
