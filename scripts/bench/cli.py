"""The parent: find the models, run the workers in turns, aggregate, print, draw, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata, util
from pathlib import Path

from . import __doc__ as OVERVIEW
from .family import FAMILY, build_family_model, family_root, resolve_model
from .measure import median
from .report import TF, aggregate, aggregate_machine, build_report, task_metrics
from .runner import BUSY_CORES, blas_forced, implementations, run_worker, runs
from .tasks import FAMILY_TASK, ITERS, ROOT, TASKS, weight_bytes_and_flops

QUICK_TASKS = "load,prefill,decode1,decode8,prefill_curve,prefill8_long,decode_curve1,decode_curve8,score8_long"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        default=None,
        help="a model folder (config.json + model.safetensors) or name; default: real gpt2 if present, else the random 124M-shaped model",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="worker runs per (implementation, task) (default 3, --quick 1)"
    )
    p.add_argument("--quick", action="store_true", help="1 repeat, fewer iterations and tasks, no family: a fast check")
    p.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated subset of {','.join(TASKS)} (default: all; --quick: {QUICK_TASKS})",
    )
    p.add_argument(
        "--family",
        default=None,
        help=f"comma-separated subset of {','.join(FAMILY)} for the family task (default: all; --quick: none)",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for both implementations (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "bench-results.json", help="where to write all raw numbers")
    p.add_argument(
        "--pictures",
        type=Path,
        default=None,
        help="folder for decode.png and prefill.png (default: none; docs/performance.md's are in docs/img)",
    )
    p.add_argument("--no-transformers", action="store_true", help="leave out the transformers column")
    p.add_argument(
        "--no-onnxruntime",
        action="store_true",
        help="leave out the ONNX Runtime column (on by default when onnxruntime is installed: pip install -e '.[bench]')",
    )
    p.add_argument(
        "--no-llamacpp",
        action="store_true",
        help="leave out the llama.cpp column (on by default when llama-cpp-python is installed: pip install llama-cpp-python)",
    )
    p.add_argument("--no-machine", action="store_true", help="skip measuring bandwidth and GEMM rate")
    p.add_argument(
        "--max-wait", type=float, default=3.0, help="seconds to wait for an idle machine before each worker (0: don't)"
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a worker is abandoned")
    # internal: what the parent passes to a worker
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    p.add_argument("--iters", choices=list(ITERS), default="full", help=argparse.SUPPRESS)
    p.add_argument("--onnx", default=None, help=argparse.SUPPRESS)  # the onnxruntime worker's checked export
    p.add_argument("--gguf", default=None, help=argparse.SUPPRESS)  # the llama.cpp worker's checked conversion
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    tasks = args.tasks or (QUICK_TASKS if args.quick else ",".join(TASKS))
    args.task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in args.task_list if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    family = args.family if args.family is not None else ("" if args.quick else ",".join(FAMILY))
    args.family_list = [f.strip() for f in family.split(",") if f.strip()]
    if FAMILY_TASK not in args.task_list:
        args.family_list = []
    args.task_list = [t for t in args.task_list if t != FAMILY_TASK]
    bad = [f for f in args.family_list if f not in FAMILY]
    if bad:
        p.error(f"unknown family model(s) {', '.join(bad)}; choose from {', '.join(FAMILY)}")
    return args


def describe_model(folder: Path) -> dict:
    from gpt2np.config import GPT2Config

    config = GPT2Config.from_json_file(folder / "config.json")
    ckpt = folder / "model.safetensors"
    return {
        "folder": folder,
        "config": config,
        "checkpoint_bytes": ckpt.stat().st_size,
        **weight_bytes_and_flops(config),
    }


def machine_info() -> dict:
    def read(path, default=None):
        try:
            return Path(path).read_text()
        except OSError:
            return default

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in (read("/proc/cpuinfo") or "").splitlines()
            if ln.startswith("model name")
        ),
        None,
    )
    versions = {}
    for pkg in ("numpy", "torch", "transformers", "threadpoolctl", "onnxruntime", "onnx", "llama-cpp-python"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))},
    }


def kernels(results) -> dict:
    """impl -> the BLAS kernels threadpoolctl reported in its workers (e.g. {"openblas 0.3.31 Haswell"})."""
    out: dict = {}
    for r in results:
        for lib in r.get("blas_after", []):
            if lib.get("user_api") == "blas":
                out.setdefault(r["impl"], set()).add(
                    f"{lib.get('internal_api')} {lib.get('version')} {lib.get('architecture')} ({lib.get('num_threads')} threads)"
                )
    return {k: sorted(v) for k, v in out.items()}


# The optional columns: implementation -> (its name, the flag that leaves it out, the module that
# must be importable, its package, how to install it, the script that converts the model for it and
# that script's function returning (checked file, manifest)).
RUNTIMES = {
    "onnxruntime": (
        "ONNX Runtime", "no_onnxruntime", "onnxruntime", "onnxruntime", "pip install -e '.[bench]'",
        "scripts.bench.export_onnx", "ensure_onnx",
    ),
    "llama.cpp": (
        "llama.cpp", "no_llamacpp", "llama_cpp", "llama-cpp-python", "pip install llama-cpp-python: it compiles llama.cpp",
        "scripts.bench.export_gguf", "ensure_gguf",
    ),
}  # fmt: skip


def runtime_column(args, model_dir: Path, impl: str) -> tuple[Path | None, dict | None, str]:
    """Whether another runtime's column runs: (its checked model file, the manifest, a line
    saying what was decided). Skipped, with the reason, when left out, when its package is not
    installed, or when the model was never converted and the conversion's packages are missing.
    Converted on first use (cached); its logits are checked against gpt2np's before anything is
    timed, and a mismatch raises LogitsMismatch: no column is better than a column of wrong numbers."""
    import importlib

    from scripts.bench.export_onnx import ExportUnavailable

    name, flag, module, package, install, script, ensure = RUNTIMES[impl]
    if getattr(args, flag):
        return None, None, f"{name} column: left out (--{flag.replace('_', '-')})"
    if util.find_spec(module) is None:
        return None, None, f"{name} column skipped: {package} is not installed ({install})"
    converter = importlib.import_module(script)
    try:
        path, manifest = getattr(converter, ensure)(model_dir, args.threads)
    except ExportUnavailable as e:
        return None, None, f"{name} column skipped: {e}"
    return path, manifest, f"{name} ({package} {metadata.version(package)}) on {path}: {converter.describe(manifest)}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        from .workers import worker_main

        worker_main(args.worker, args.task, args.model, args.threads, args.iters, args.onnx, args.gguf)
        return 0

    model_dir, source = resolve_model(args.model)
    models = {"gpt2": describe_model(model_dir)}
    for name in args.family_list:
        print(f"family model {name}: {family_root() / name}", flush=True)
        models[name] = describe_model(build_family_model(name))
    with_tf = (
        util.find_spec("torch") is not None and util.find_spec("transformers") is not None and not args.no_transformers
    )
    from scripts.bench.export_onnx import LogitsMismatch

    try:
        args.onnx, onnx_manifest, onnx_line = runtime_column(args, model_dir, "onnxruntime")
        print(onnx_line, flush=True)
        args.gguf, gguf_manifest, gguf_line = runtime_column(args, model_dir, "llama.cpp")
        print(gguf_line, flush=True)
    except LogitsMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    impls = implementations(with_tf, args.onnx is not None, args.gguf is not None)
    files = [m["folder"] / "model.safetensors" for m in models.values()] + [p for p in (args.onnx, args.gguf) if p]
    for path in files:
        with open(path, "rb") as f:  # into the OS page cache: every load is a warm-cache load
            while f.read(1 << 26):
                pass
    print(
        f"model: {source} ({models['gpt2']['checkpoint_bytes'] / 1e6:.0f} MB); family: {', '.join(args.family_list) or 'none'}"
    )
    print(
        f"threads {args.threads}, repeats {args.repeats}{' (quick)' if args.quick else ''}, implementations {', '.join(impls)}; "
        f"kernel forced by the environment: {blas_forced() or 'no'}"
    )
    work = [(t, "gpt2") for t in args.task_list] + [(FAMILY_TASK, name) for name in args.family_list]
    results, started = [], time.time()
    for rep in range(args.repeats):
        if not args.no_machine:
            results.append({**run_worker("machine", None, model_dir, args), "repeat": rep})
            print(f"[repeat {rep + 1}/{args.repeats}] machine limits", flush=True)
        for task, name in work:
            order = impls if rep % 2 == 0 else impls[::-1]  # alternate who goes first
            for impl in order:
                if not runs(impl, task):
                    continue
                r = run_worker(impl, task, models[name]["folder"], args)
                r |= {"repeat": rep, "key": task if name == "gpt2" else f"family:{name}", "impl": impl}
                results.append(r)
                shown = ", ".join(f"{k} {v:.4g}" for k, v in task_metrics(r).items())
                load = r["monitor"]["other_load_cores"]
                print(
                    f"[repeat {rep + 1}/{args.repeats}] {impl:19s} {r['key']:18s} {shown}  (other load {load:.2f} cores)",
                    flush=True,
                )

    agg, machine = aggregate(results), aggregate_machine(results)
    report = build_report(agg, machine, models, impls)
    info = machine_info()
    loads = [r["monitor"]["other_load_cores"] for r in results]
    shared = median(loads) > BUSY_CORES
    out = [
        "",
        (
            f"{' vs '.join(impls)}: {source}, float32, {args.threads} threads; median of {args.repeats} worker runs each, "
            f"implementations taking turns"
        ),
    ]
    out.append(
        f"machine: {info['cpu']}, {info['cores']} cores; kernels (threadpoolctl): "
        + "; ".join(f"{i}: {', '.join(k)}" for i, k in kernels(results).items())
    )
    out.append(
        f"kernel forced by the environment: {blas_forced() or 'nothing (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset): gpt2np runs OpenBLAS own choice'}"
    )
    if machine:
        lo, hi = machine["bandwidth_range_gbps"]
        out.append(
            f"bandwidth {machine['bandwidth_best_gbps']:.1f} GB/s (median of {machine['runs']} runs, {lo:.1f} to {hi:.1f}); "
            f"peak GEMM {machine['gemm_peak_gflops']:.0f} GFLOP/s"
        )
    huge = [p["pmd"] / p["resident"] for r in results if (p := r.get("checkpoint_pages")) and p["resident"]]
    if huge:
        out.append(
            f"gpt2np's memory-mapped checkpoint: {min(huge):.0%} to {max(huge):.0%} of its resident pages in 2 MB pages "
            "(the rest 4 KB; it depends on how the file came into the page cache, and moves decode a few percent)"
        )
    out += [onnx_line, gguf_line]
    out.append("")
    out += report.lines()
    out.append("")
    out.append(
        "X vs Y = Y's time / X's time (>1: X faster; for peak RSS, X's / Y's); spread = (max-min)/median over repeats, "
        "per implementation"
    )
    losses = {i: report.get(i, "score8_long", "loss") for i in impls}
    if any(v is not None for v in losses.values()):
        out.append(
            "score 8x1024 loss (both must agree): "
            + ", ".join(f"{i} {v:.6f}" for i, v in losses.items() if v is not None)
        )
    for task in ("beam1", "beam4"):  # both searched the same random prompts: the same beams?
        chosen = {r["impl"]: r.get("new_tokens") for r in results if r.get("task") == task and "error" not in r}
        if "gpt2np" in chosen and TF in chosen:
            same = "yes" if chosen["gpt2np"] == chosen[TF] else "NO (a near tie went the other way, or a bug)"
            out.append(f"{task}: gpt2np and transformers chose the same best beams: {same}")
    out.append(
        f"other processes' CPU use during workers: median {median(loads):.2f}, max {max(loads):.2f} cores"
        + (" -- the machine was shared: timings are noisier and slower than on an idle machine" if shared else "")
    )
    errors = [r for r in results if "error" in r]
    if errors:
        out.append(
            f"WARNING: {len(errors)} worker(s) failed: " + "; ".join(f"{r['impl']} {r.get('key')}" for r in errors)
        )
    out.append(f"total time {time.time() - started:.0f} s; raw numbers in {args.json}")
    print("\n".join(out))
    if args.pictures:
        from .pictures import draw

        note = f"{args.threads} thread{'s' if args.threads > 1 else ''}, median of {args.repeats}" + (
            ", machine shared with other jobs" if shared else ""
        )
        for path in draw(report, args.pictures, note):
            print(f"wrote {path}")

    def plain(m):
        return {k: (v.to_dict() if k == "config" else str(v) if k == "folder" else v) for k, v in m.items()}

    args.json.write_text(
        json.dumps(
            {
                "source": source,
                "models": {n: plain(m) for n, m in models.items()},
                "implementations": impls,
                "onnxruntime": onnx_manifest,
                "llama.cpp": gguf_manifest,
                "settings": {
                    "threads": args.threads,
                    "repeats": args.repeats,
                    "quick": args.quick,
                    "tasks": args.task_list,
                    "family": args.family_list,
                },
                "machine": {**info, "limits": machine},
                "summary": agg,
                "targets": report.targets,
                "table": out,
                "workers": results,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    return 0
