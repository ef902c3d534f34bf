"""The parent's side of a worker: start it in a fresh process with the right environment,
watch how busy the rest of the machine was meanwhile, read its JSON line.

Implementations: "gpt2np", "transformers", "onnxruntime" and "llama.cpp" run in the environment as it is,
plus "gpt2np-default-blas" when the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE or
OPENBLAS_L2_SIZE set): the same gpt2np worker with both variables removed for that worker
only, so it gets the kernel OpenBLAS picks for this CPU by itself, as on a user's machine.
Every worker reports the kernel threadpoolctl sees.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .tasks import ROOT
from .workers import RESULT_MARK

FORCING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BUSY_CORES = 0.15  # other processes using more than this share of a core: the worker was disturbed


def blas_forced() -> dict:
    return {v: os.environ[v] for v in FORCING_VARS if v in os.environ}


def implementations(with_transformers: bool, with_onnxruntime: bool = False, with_llamacpp: bool = False) -> list[str]:
    impls = ["gpt2np"] + (["gpt2np-default-blas"] if blas_forced() else [])
    impls += ["transformers"] if with_transformers else []
    return impls + (["onnxruntime"] if with_onnxruntime else []) + (["llama.cpp"] if with_llamacpp else [])


def runs(impl: str, task: str) -> bool:
    """Does this implementation run this task? (ONNX Runtime and llama.cpp leave out score8_long,
    family and the beam tasks: impl_onnxruntime.py says why.)"""
    if impl == "onnxruntime":
        from .impl_onnxruntime import OnnxRuntime

        return task not in OnnxRuntime.unsupported_tasks
    if impl == "llama.cpp":
        from .impl_llamacpp import LlamaCpp

        return task not in LlamaCpp.unsupported_tasks
    return True


def worker_env(impl: str, threads: int) -> dict:
    env = dict(os.environ)
    # Set before the child's NumPy/torch load their BLAS and OpenMP runtimes: the clean way.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if impl == "gpt2np-default-blas":
        for var in FORCING_VARS:
            env.pop(var, None)
    env.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from a timed process
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / hz, steal / hz


def busy_cores(seconds: float) -> float:
    b0, _ = cpu_seconds()
    time.sleep(seconds)
    return (cpu_seconds()[0] - b0) / seconds


def wait_until_idle(max_wait: float) -> float:
    """Wait (up to max_wait s) until other processes use less than BUSY_CORES; the load seen last."""
    deadline = time.monotonic() + max_wait
    load = busy_cores(0.5)
    while load > BUSY_CORES and time.monotonic() < deadline:
        load = busy_cores(1.0)
    return load


def run_worker(impl: str, task: str | None, model_dir: Path, args) -> dict:
    """One worker process; its JSON result plus how busy the rest of the machine was."""
    cmd = [
        sys.executable,
        "-m",
        "scripts.bench",
        "--worker",
        impl,
        "--model",
        str(model_dir),
        "--threads",
        str(args.threads),
        "--iters",
        "quick" if args.quick else "full",
    ]
    if task:
        cmd += ["--task", task]
    if impl == "onnxruntime":
        cmd += ["--onnx", str(args.onnx)]  # the checked export (scripts/bench/export_onnx.py)
    if impl == "llama.cpp":
        cmd += ["--gguf", str(args.gguf)]  # the checked conversion (scripts/bench/export_gguf.py)
    idle_before = wait_until_idle(args.max_wait) if args.max_wait > 0 else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = cpu_seconds()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=worker_env(impl, args.threads), cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        returncode, stdout, stderr = "timeout", e.stdout or "", f"timed out after {args.timeout} s"
    wall = time.perf_counter() - start
    busy1, steal1 = cpu_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_MARK)), None)
    if returncode != 0 or line is None:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        print(f"  ! {impl} {task or ''} failed (exit {returncode}):\n{tail}", file=sys.stderr)
        result = {"impl": impl, "task": task, "error": tail or f"exit {returncode}"}
    else:
        result = json.loads(line[len(RESULT_MARK) :])
    result["monitor"] = {
        "wall_s": wall,
        "worker_cpu_s": child_cpu,
        "other_load_cores": max(0.0, (busy1 - busy0) - child_cpu) / wall,
        "steal_cores": (steal1 - steal0) / wall,
        "idle_before_cores": idle_before,
    }
    return result
