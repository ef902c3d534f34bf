"""The package's architecture (pyproject.toml, [tool.importlinter]): the core never imports
the tools, and the modules form layers, so there is no import cycle. Checked with
import-linter, which reads every import statement, those inside functions included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpt2np"


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (it brings import-linter)")
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True)


def copy_tree(into: Path) -> None:
    """What lint-imports reads: the package, the scripts and pyproject.toml's contracts."""
    for name in ("gpt2np", "scripts"):
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", into)


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_core_module_is_under_contract():
    """A new module of the core must be placed in a layer and kept from importing the tools;
    one that is in neither contract would escape both checks. ray.py is the one top-level module
    that is not core: like the tools, it sits on top (it imports Ray, an optional extra)."""
    core = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "ray"}
    forbidden, layered, *_ = contracts()
    in_forbidden = {m.removeprefix("gpt2np.") for m in forbidden["source_modules"]}
    in_layers = {name.strip() for layer in layered["layers"] for name in layer.split("|")}
    assert core == in_forbidden, f"core modules vs the forbidden contract's list: {sorted(core ^ in_forbidden)}"
    assert core <= in_layers, f"not in any layer: {sorted(core - in_layers)}"
    assert {name.strip() for name in layered["layers"][0].split("|")} == {
        "tools",
        "ray",
        "hooked_transformer",
    }  # on top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {"tools"}


def test_a_cycle_through_the_tools_is_caught(tmp_path):
    """The cycle this layout removed (scoring -> cli -> model -> scoring) is reported again if
    it comes back: planted in a copy of the package."""
    copy_tree(tmp_path)
    scoring = tmp_path / "gpt2np" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\nfrom .tools.common import read_prompts  # planted\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "gpt2np.scoring -> gpt2np.tools.common" in result.stdout


def test_a_circle_between_trace_and_compare_is_caught(tmp_path):
    """trace and compare once imported each other (inside functions); what they share lives in
    tracefile and measure now, and the third contract reports the circle if it comes back."""
    copy_tree(tmp_path)
    trace = tmp_path / "gpt2np" / "tools" / "trace.py"
    trace.write_text(trace.read_text() + "\n\ndef _planted():\n    from .compare import measure  # planted\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "gpt2np.tools.trace -> gpt2np.tools.compare" in result.stdout


@pytest.mark.parametrize(
    ("page", "module"),
    [("plain", "hooks"), ("plain", "kv_cache"), ("plain", "layers"), ("plain_backward", "attention")],
)
def test_the_plain_page_importing_the_fast_path_is_caught(tmp_path, page, module):
    """gpt2np.plain (and plain_backward, the backward page) is the reference the fast path is
    tested against: if it borrowed a fast function (or the hooks, or the cache) the test would
    compare the fast path with itself."""
    copy_tree(tmp_path)
    plain = tmp_path / "gpt2np" / f"{page}.py"
    plain.write_text(plain.read_text() + f"\nfrom . import {module}  # planted\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and f"gpt2np.{page} -> gpt2np.{module}" in result.stdout


def test_a_circle_between_the_bench_and_its_export_is_caught(tmp_path):
    """scripts/bench/cli.py and the ONNX export once imported each other (issue 35); the export now
    takes the bench's model from bench/family.py, and the scripts' contract reports a circle."""
    copy_tree(tmp_path)
    export = tmp_path / "scripts" / "bench" / "export_onnx.py"
    export.write_text(export.read_text() + "\n\ndef _planted():\n    from scripts.bench.cli import main  # planted\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "- .export_onnx -> .cli" in result.stdout
