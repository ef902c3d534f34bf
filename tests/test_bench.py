"""scripts/bench: the logic around the timings (which columns run, which ratios the table shows),
never a timing itself. Plain NumPy: no torch, no onnxruntime needed (they are faked where the
logic asks whether they are installed)."""

from __future__ import annotations

import argparse
import sys

import pytest
from conftest import ROOT, build_model

if str(ROOT) not in sys.path:  # scripts/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from scripts.bench import cli, export_onnx, runner
from scripts.bench.report import build_report

pytestmark = pytest.mark.usefixtures("blas_threads_restored")  # the bench impls limit BLAS threads process-wide


def args(**kw):
    return argparse.Namespace(**({"no_onnxruntime": False, "no_llamacpp": False, "threads": 1} | kw))


def test_the_onnxruntime_column_is_skipped_with_the_reason_when_onnxruntime_is_missing(monkeypatch):
    monkeypatch.setattr(cli.util, "find_spec", lambda name: None)
    path, manifest, line = cli.runtime_column(args(), build_model("tiny"), "onnxruntime")
    assert path is None and manifest is None
    assert line == "ONNX Runtime column skipped: onnxruntime is not installed (pip install -e '.[bench]')"


def test_the_onnxruntime_column_can_be_left_out(monkeypatch):
    monkeypatch.setattr(cli.util, "find_spec", lambda name: pytest.fail("not asked when left out"))
    line = cli.runtime_column(args(no_onnxruntime=True), build_model("tiny"), "onnxruntime")[2]
    assert line == "ONNX Runtime column: left out (--no-onnxruntime)"


def test_the_llamacpp_column_is_skipped_with_the_reason_when_llama_cpp_is_missing(monkeypatch):
    monkeypatch.setattr(cli.util, "find_spec", lambda name: None)
    path, manifest, line = cli.runtime_column(args(), build_model("tiny"), "llama.cpp")
    assert path is None and manifest is None
    assert (
        line
        == "llama.cpp column skipped: llama-cpp-python is not installed (pip install llama-cpp-python: it compiles llama.cpp)"
    )
    line = cli.runtime_column(args(no_llamacpp=True), build_model("tiny"), "llama.cpp")[2]
    assert line == "llama.cpp column: left out (--no-llamacpp)"


def test_without_an_export_and_without_torch_the_column_is_skipped_saying_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(cli.util, "find_spec", lambda name: object())  # onnxruntime "installed"
    monkeypatch.setattr(export_onnx, "missing_for_export", lambda: ["torch", "onnxscript"])
    monkeypatch.setenv("GPT2NP_BENCH_MODELS", str(tmp_path))  # no cached export there
    path, _, line = cli.runtime_column(args(), build_model("tiny"), "onnxruntime")
    assert path is None
    assert line.startswith("ONNX Runtime column skipped: no ONNX export of ")
    assert "needs torch, onnxscript: pip install -e '.[bench]'" in line
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())  # nothing half-made


def test_the_columns_and_the_tasks_onnxruntime_runs(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert runner.implementations(True, True) == ["gpt2np", "transformers", "onnxruntime"]
    assert runner.implementations(False, False) == ["gpt2np"]
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert runner.implementations(True, True) == ["gpt2np", "gpt2np-default-blas", "transformers", "onnxruntime"]
    assert runner.implementations(False, True, True) == ["gpt2np", "gpt2np-default-blas", "onnxruntime", "llama.cpp"]
    for other in ("onnxruntime", "llama.cpp"):
        assert not runner.runs(other, "score8_long") and not runner.runs(other, "family")
        assert not runner.runs(other, "beam1") and not runner.runs(other, "beam4")
        assert runner.runs(other, "decode8") and runner.runs(other, "prefill_curve")
    assert runner.runs("transformers", "score8_long") and runner.runs("gpt2np", "family")
    assert runner.runs("transformers", "beam4") and runner.runs("gpt2np", "beam1")


def fake_report(impls, figures):
    """A report from made-up medians: {impl: {(task, metric): value}}."""
    from gpt2np.config import GPT2Config

    agg: dict = {}
    for impl, f in figures.items():
        for (task, name), v in f.items():
            agg.setdefault(impl, {}).setdefault(task, {})[name] = {
                "median": v,
                "min": v,
                "max": v,
                "n": 1,
                "spread": 0.0,
            }
    models = {"gpt2": {"config": GPT2Config(), "checkpoint_bytes": 500e6, "decode_bytes": 1, "matmul_params": 1}}
    return build_report(agg, {}, models, impls)


def test_the_ratios_are_the_other_runtime_s_time_over_gpt2np_s():
    impls = ["gpt2np", "transformers", "onnxruntime", "llama.cpp"]
    rep = fake_report(
        impls,
        {
            "gpt2np": {("decode1", "step_s"): 0.030, ("generate1", "peak_rss"): 600e6},
            "transformers": {("decode1", "step_s"): 0.060, ("generate1", "peak_rss"): 900e6},
            "onnxruntime": {("decode1", "step_s"): 0.024, ("generate1", "peak_rss"): 800e6},
            "llama.cpp": {("decode1", "step_s"): 0.040},
        },
    )
    lines = rep.lines()
    header = lines[0].split("  ")
    assert [h.strip() for h in header if h.startswith("gpt2np vs")] == [
        "gpt2np vs transformers",
        "gpt2np vs onnxruntime",
        "gpt2np vs llama.cpp",
    ]
    decode = next(r for r in rep.rows if r[0].startswith("decode b1 at context ~150"))
    assert decode[1:8] == ["30.0", "60.0", "24.0", "40.0", "2.00x", "0.80x", "1.33x"]  # ORT faster here: below 1
    rss = next(r for r in rep.rows if r[0].startswith("peak RSS, generate b1"))
    assert rss[5:8] == ["0.67x (np/tf)", "0.75x (np/ort)", "-"]  # no llama.cpp figure: no ratio
    target = next(t for t in rep.targets if t["issue"] == 25 and t["target"].startswith("decode b1 at context ~150"))
    assert target["value"] == pytest.approx(1.25) and target["result"] == "MISS"  # 30 ms > 1.1 x 24 ms
    missing = [t for t in rep.targets if t["issue"] == 25 and t["value"] is None]
    assert missing and all(t["result"] == "n/a" for t in missing)  # no figure: no verdict


def test_without_onnxruntime_the_table_and_targets_are_as_before():
    rep = fake_report(
        ["gpt2np", "transformers"],
        {"gpt2np": {("decode1", "step_s"): 0.030}, "transformers": {("decode1", "step_s"): 0.060}},
    )
    assert "gpt2np vs onnxruntime" not in rep.lines()[0]
    assert not [t for t in rep.targets if t["issue"] == 25]


def test_the_training_rows_and_targets_compare_time_and_peak_memory_with_transformers():
    rep = fake_report(
        ["gpt2np", "transformers"],
        {
            "gpt2np": {("train4", "time_s"): 2.0, ("train4", "peak_rss"): 1.5e9, ("backward8", "time_s"): 9.0},
            "transformers": {("train4", "time_s"): 2.5, ("train4", "peak_rss"): 1.2e9, ("backward8", "time_s"): 8.0},
        },
    )
    row = next(r for r in rep.rows if r[0] == "training step (fwd, bwd, clip, AdamW) 4x64 (s)")
    assert row[1:4] == ["2.00", "2.50", "1.25x"]
    verdicts = {t["target"]: (t["value"], t["result"]) for t in rep.targets if t["issue"] in (31, 32)}
    assert verdicts["training step 4x64: time <= transformers'"] == (pytest.approx(0.8), "PASS")
    assert verdicts["training step 4x64: peak RSS <= transformers'"] == (pytest.approx(1.25), "MISS")
    assert verdicts["forward + backward 8x256: time <= transformers'"] == (pytest.approx(9 / 8), "MISS")
    assert verdicts["forward + backward 4x64: time <= transformers'"] == (None, "n/a")  # not measured: no verdict
    for other in ("onnxruntime", "llama.cpp"):  # inference runtimes: no gradients
        assert not runner.runs(other, "train4") and not runner.runs(other, "backward8")


@pytest.mark.parametrize("task", ["backward4", "train4"])
def test_the_training_tasks_run_gpt2np_and_report_a_finite_loss(task):
    """The worker's task code on the tiny model (context 64: the 4x64 shape fits), one quick round."""
    import math

    from scripts.bench import workers
    from scripts.bench.impl_gpt2np import Gpt2np
    from scripts.bench.tasks import ITERS

    impl = Gpt2np(threads=1)
    impl.load(build_model("tiny"))
    out = workers.RUN[task](impl, 4, ITERS["quick"])
    assert out["tokens"] == 4 * 64 and len(out["times"]) == 1 and math.isfinite(out["loss"])
    if task == "train4":  # two steps ran (warm-up + timed): the weights moved
        assert impl._opt is not None and impl._opt.t == 2


@pytest.mark.parametrize("task", ["backward4", "train4"])
def test_both_columns_do_the_same_training_work(task, transformers):
    """gpt2np and transformers, from the same weights and ids, report the same losses step after
    step (train4: the first step's loss before any update, then the second's after clip and
    AdamW): the timed work is the same computation."""
    from scripts.bench import workers
    from scripts.bench.impl_gpt2np import Gpt2np
    from scripts.bench.impl_transformers import Transformers

    losses = {}
    for impl in (Gpt2np(threads=1), Transformers(threads=1, training=True)):
        impl.load(build_model("tiny"))
        ids = workers.prompt_ids(4, 64, impl.vocab_size)
        run = impl.train_step if task == "train4" else impl.backward
        losses[type(impl).__name__] = [run(ids) for _ in range(3)]
        if task == "train4":
            settings = optimizer_settings(impl)
            assert settings == losses.setdefault("settings", settings)  # the same lr, betas, eps, decayed set
    ours, theirs = losses["Gpt2np"], losses["Transformers"]
    assert ours == pytest.approx(theirs, rel=1e-5)  # float32 both; updates agree to ~lr x noise
    if task == "train4":
        assert ours[2] < ours[0]  # the steps did train


def optimizer_settings(impl) -> dict:
    """The optimizer a bench column built: {hyperparameters, the names it decays}."""
    if hasattr(impl, "torch"):
        names = {id(p): n for n, p in impl.model.named_parameters()}
        groups = impl._opt.param_groups
        decayed = {names[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}
        g = groups[0]
        return {
            "lr": g["lr"],
            "betas": tuple(g["betas"]),
            "eps": g["eps"],
            "decayed": decayed,
            "weight_decay": {g["weight_decay"] for g in groups} - {0.0},
        }
    from gpt2np.train import decays
    from gpt2np.weights import named_parameters

    opt = impl._opt
    decayed = {n for n, p in named_parameters(impl.model.weights).items() if decays(n, p, opt.decay)}
    return {
        "lr": opt.lr,
        "betas": tuple(opt.betas),
        "eps": opt.eps,
        "decayed": decayed,
        "weight_decay": {opt.weight_decay},
    }
