"""Workers' raw results -> medians over repeats -> the table, with ratios, floors and the
issues' targets as PASS/MISS."""

from __future__ import annotations

from .limits import decode_floor, numpy_floors, prefill_floors
from .measure import median
from .tasks import (
    BEAM_NEW_TOKENS,
    DECODE_CONTEXTS,
    NEW_TOKENS,
    PREFILL_LENGTHS,
    TASKS,
    TRAIN_SHAPES,
    TRAINING_TASKS,
    beam_cache_bytes,
)

TF = "transformers"
ORT = "onnxruntime"
LLAMA = "llama.cpp"
OTHERS = (TF, ORT, LLAMA)  # the other runtimes: each gpt2np column is compared with each of them
SHORT = {TF: "tf", ORT: "ort", LLAMA: "llama"}


def task_metrics(r: dict) -> dict:
    """One worker's result -> its figures (one number each, medians within the worker)."""
    if "error" in r:
        return {}
    task, batch = r["task"], TASKS[r["task"]][0]
    if task == "load":
        return {
            "load_s": r["load_s"],
            "load_first_forward_s": r["load_s"] + r["first_forward_s"],
            "import_s": r["import_s"],
        }
    if task in ("prefill", "forward8", "prefill8_long"):
        return {"time_s": median(r["times"])}
    if task in ("decode1", "decode8", "family"):
        step = median(r["step_times"])
        out = {"step_s": step, "tokens_per_s": batch / step}
        return out | ({"load_s": r["load_s"], "peak_rss": r["rss"]["VmHWM"]} if task == "family" else {})
    if task.startswith("beam"):
        t = median(r["times"])
        return {"time_s": t, "ms_per_step": 1e3 * t / BEAM_NEW_TOKENS, "peak_rss": r["rss"]["VmHWM"]}
    if task.startswith("generate"):
        t = median(r["times"])
        return {
            "time_s": t,
            "tokens_per_s": batch * NEW_TOKENS / t,
            "ms_per_step": 1e3 * t / NEW_TOKENS,
            "peak_rss": r["rss"]["VmHWM"],
        }
    if task == "prefill_curve":
        return {f"time_s@{T}": median(ts) for T, ts in r["curve_times"].items()}
    if task.startswith("decode_curve"):
        return {f"step_s@{c}": median(ts) for c, ts in r["curve_step_times"].items()}
    if task in TRAINING_TASKS:
        t = median(r["times"])
        return {"time_s": t, "tokens_per_s": r["tokens"] / t, "peak_rss": r["rss"]["VmHWM"], "loss": r["loss"]}
    if task == "score8_long":
        return {"time_s": median(r["times"]), "peak_rss": r["rss"]["VmHWM"], "loss": r["loss"]}
    return {}


def aggregate(results: list[dict]) -> dict:
    """{impl: {key: {metric: {median, min, max, n, spread}}}}, key = task (or family:<model>)."""
    by_key: dict = {}
    for r in results:
        if r.get("impl") == "machine" or "error" in r:
            continue
        for name, value in task_metrics(r).items():
            by_key.setdefault((r["impl"], r["key"], name), []).append(value)
    agg: dict = {}
    for (impl, key, name), values in by_key.items():
        m = median(values)
        agg.setdefault(impl, {}).setdefault(key, {})[name] = {
            "median": m,
            "min": min(values),
            "max": max(values),
            "n": len(values),
            "spread": (max(values) - min(values)) / m if m else None,
        }
    return agg


def aggregate_machine(results: list[dict]) -> dict:
    ms = [r for r in results if r.get("impl") == "machine" and "error" not in r]
    if not ms:
        return {}
    bw = {k: median([m["bandwidth_gbps"][k] for m in ms]) for k in ms[0]["bandwidth_gbps"]}
    gemm = {
        M: {
            "blocks_s": median([m["gemm"][M]["blocks_s"] for m in ms]),
            "lm_head_s": median([m["gemm"][M]["lm_head_s"] for m in ms]),
            "gflops": {
                n: median([m["gemm"][M]["matmuls"][n]["gflops"] for m in ms]) for n in ms[0]["gemm"][M]["matmuls"]
            },
        }
        for M in ms[0]["gemm"]
    }
    extra = {}
    if all("exp_ns" in m for m in ms):  # the NumPy-floor measurements (limits.numpy_floors)
        extra["exp_ns"] = median([m["exp_ns"] for m in ms])
        extra["decode_gemm"] = {
            M: {k: median([m["decode_gemm"][M][k] for m in ms]) for k in ms[0]["decode_gemm"][M]}
            for M in ms[0]["decode_gemm"]
        }
    return extra | {
        "bandwidth_gbps": bw,
        "bandwidth_best_gbps": max(bw["gemv_rows"], bw["gemv_cols"], bw["sdot"]),
        "gemm": gemm,
        "gemm_peak_gflops": max(g for e in gemm.values() for g in e["gflops"].values()),
        "runs": len(ms),
        "bandwidth_range_gbps": [
            min(max(m["bandwidth_gbps"][k] for k in ("gemv_rows", "gemv_cols", "sdot")) for m in ms),
            max(max(m["bandwidth_gbps"][k] for k in ("gemv_rows", "gemv_cols", "sdot")) for m in ms),
        ],
    }


def fmt(v, digits=3):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits - 1}f}" if abs(v) >= 1 else f"{v:.{digits}f}"


class Report:
    """Looks figures up in the aggregate and lays out rows: one column per implementation,
    then each gpt2np variant's speedup over each other runtime ("gpt2np vs onnxruntime": the
    other's time / gpt2np's, >1 when gpt2np is faster)."""

    def __init__(self, agg, machine, models, impls):
        self.agg, self.machine, self.models, self.impls = agg, machine, models, impls
        self.np_impls = [i for i in impls if i not in OTHERS]
        self.others = [i for i in impls if i in OTHERS]
        self.pairs = [(i, o) for o in self.others for i in self.np_impls]  # one ratio column each
        self.rows, self.targets = [], []
        main = models["gpt2"]
        self.floors = prefill_floors(machine, main["config"]) if machine else {}
        self.numpy_floors = numpy_floors(machine, main["config"]) if machine else {}

    def get(self, impl, key, name, what="median"):
        return self.agg.get(impl, {}).get(key, {}).get(name, {}).get(what)

    def decode_floor(self, model, batch, context):
        m = self.models[model]
        return (
            decode_floor(self.machine, m["config"], m["decode_bytes"], m["matmul_params"], batch, context)
            if self.machine
            else None
        )

    def row(self, label, key, name, scale=1.0, unit="", higher=False, floor=None):
        values = {i: self.get(i, key, name) for i in self.impls}
        if all(v is None for v in values.values()):
            return
        cells = [label] + [fmt(None if values[i] is None else values[i] * scale) + unit for i in self.impls]
        for i, o in self.pairs:
            n, t = values[i], values[o]
            cells.append("-" if n is None or t is None else f"{(n / t if higher else t / n):.2f}x")
        n = values[self.np_impls[0]]
        cells.append(f"{n / floor:.2f}x floor ({fmt(floor * scale)}{unit})" if floor and n else "")
        spreads = [self.get(i, key, name, "spread") for i in self.impls]
        cells.append("/".join("-" if s is None else f"{100 * s:.0f}%" for s in spreads))
        self.rows.append(cells)

    def rss_row(self, label, key, ckpt_bytes, extra=""):
        values = {i: self.get(i, key, "peak_rss") for i in self.impls}
        if all(v is None for v in values.values()):
            return
        cells = [label] + [fmt(None if values[i] is None else values[i] / 1e6) for i in self.impls]
        for i, o in self.pairs:
            cells.append(
                "-" if values[i] is None or values[o] is None else f"{values[i] / values[o]:.2f}x (np/{SHORT[o]})"
            )
        n = values[self.np_impls[0]]
        cells.append(f"{n / ckpt_bytes:.2f}x checkpoint{extra}" if n else "")
        cells.append(
            "/".join(
                "-" if (s := self.get(i, key, "peak_rss", "spread")) is None else f"{100 * s:.0f}%" for i in self.impls
            )
        )
        self.rows.append(cells)

    def target(self, issue, label, value, goal, op, unit, shown=None):
        if value is None:
            verdict, text = "n/a", "-"
        else:
            ok = value >= goal if op == ">=" else value <= goal
            verdict, text = ("PASS" if ok else "MISS"), shown or f"{value:.2f}{unit}"
        self.targets.append(
            {"issue": issue, "target": label, "value": value, "goal": goal, "op": op, "result": verdict, "shown": text}
        )

    def speedup(self, impl, key, name, higher=False, other=TF):
        n, t = self.get(impl, key, name), self.get(other, key, name)
        return None if n is None or t is None else (n / t if higher else t / n)

    def lines(self) -> list[str]:
        header = (
            ["figure (median)"] + self.impls + [f"{i} vs {o}" for i, o in self.pairs] + ["vs machine limit", "spread"]
        )
        widths = [max(len(str(r[i])) for r in self.rows + [header]) for i in range(len(header))]
        left = {0, len(header) - 2}
        out = [
            "  ".join(
                str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
            for r in [header] + self.rows
        ]
        out.insert(1, "-" * len(out[0]))
        out += ["", "targets"]
        for t in self.targets:
            out.append(f"  [{t['issue']}] {t['target']:<64s} {t['shown']:>22s}   {t['result']}")
        return out + self.reach_lines()

    def reach_lines(self) -> list[str]:
        """For the speed targets, is the goal within a NumPy implementation's reach on this
        machine at all? The NumPy floor (limits.numpy_floors) against transformers' time / goal."""
        nf = self.numpy_floors
        if not nf:
            return []
        c = max(DECODE_CONTEXTS)
        cases = [
            ("prefill 1x1024 >= 1.3x", "prefill_curve", "time_s@1024", nf["prefill_last_1024"], 1.3, 1e3, "ms"),
            ("prefill 8x1024 >= 1.3x", "prefill8_long", "time_s", nf["prefill8_long"], 1.3, 1, "s"),
            (f"decode b1 at context {c} >= 1.8x", "decode_curve1", f"step_s@{c}", nf["decode1"], 1.8, 1e3, "ms"),
            (f"decode b8 at context {c} >= 2.5x", "decode_curve8", f"step_s@{c}", nf["decode8"], 2.5, 1e3, "ms"),
        ]
        out = [
            "",
            (
                f"within NumPy's reach? (NumPy floor: the GEMMs timed alone, plus exps at {self.machine['exp_ns']:.2f} ns "
                "each for prefill, or plus the attention products over the KV cache timed alone for decode)"
            ),
        ]
        for label, key, name, floor, goal, scale, unit in cases:
            tf, np_ = self.get(TF, key, name), self.get(self.np_impls[0], key, name)
            if tf is None:
                continue
            need = tf / goal
            if floor > need:
                verdict = "OUT OF REACH for NumPy on this machine"
            else:  # the share of the time budget that the floor leaves to everything else NumPy must do
                verdict = f"reachable in principle, leaving {1 - floor / need:.0%} of the budget to the rest"
            now = "" if np_ is None else f"; gpt2np {fmt(np_ * scale)} {unit} = {np_ / floor:.2f}x the floor"
            out.append(
                f"  {label}: needs <= {fmt(need * scale)} {unit}, NumPy floor {fmt(floor * scale)} {unit}{now}: {verdict}"
            )
        return out


def build_report(agg, machine, models, impls) -> Report:
    rep = Report(agg, machine, models, impls)
    f, main = rep.floors, models["gpt2"]
    ckpt = main["checkpoint_bytes"]
    np0 = rep.np_impls[0]  # "gpt2np": the environment as it is
    npd = "gpt2np-default-blas" if "gpt2np-default-blas" in impls else np0  # OpenBLAS's own kernel choice

    rep.row("load (s)", "load", "load_s")
    rep.row("load + first forward 1x128 (s)", "load", "load_first_forward_s")
    rep.row("prefill 1x128, all logits (ms)", "prefill", "time_s", 1e3, floor=f.get("prefill"))
    rep.row("forward 8x128, all logits (ms)", "forward8", "time_s", 1e3, floor=f.get("forward8"))
    for T in PREFILL_LENGTHS:
        rep.row(
            f"prefill 1x{T}, last logits (ms)", "prefill_curve", f"time_s@{T}", 1e3, floor=f.get(f"prefill_last_{T}")
        )
    rep.row("prefill 8x1024, last logits (s)", "prefill8_long", "time_s", floor=f.get("prefill8_long"))
    rep.row("decode b1 at context ~150 (ms/step)", "decode1", "step_s", 1e3, floor=rep.decode_floor("gpt2", 1, 150))
    rep.row("decode b8 at context ~150 (ms/step)", "decode8", "step_s", 1e3, floor=rep.decode_floor("gpt2", 8, 150))
    for b in (1, 8):
        for c in DECODE_CONTEXTS:
            rep.row(
                f"decode b{b} at context {c} (ms/step)",
                f"decode_curve{b}",
                f"step_s@{c}",
                1e3,
                floor=rep.decode_floor("gpt2", b, c),
            )
    for b in (1, 8):
        rep.row(f"generate b{b}, {NEW_TOKENS} new tokens (s)", f"generate{b}", "time_s")
    rep.row("score 8x1024, padded (s)", "score8_long", "time_s")
    for b in (1, 4):
        rep.row(f"beam search b{b}, 4 beams, {BEAM_NEW_TOKENS} new tokens (s)", f"beam{b}", "time_s")
    for task in TRAINING_TASKS:
        B, T = TRAIN_SHAPES[task[-1]]
        what = "forward + backward" if task.startswith("backward") else "training step (fwd, bwd, clip, AdamW)"
        rep.row(f"{what} {B}x{T} (s)", task, "time_s")
        rep.row(f"{what} {B}x{T} (tokens/s)", task, "tokens_per_s", higher=True)
    rep.rss_row("peak RSS, generate b1 (MB)", "generate1", ckpt)
    rep.rss_row("peak RSS, generate b8 (MB)", "generate8", ckpt)
    for b in (1, 4):
        cache = beam_cache_bytes(main["config"], b)
        rep.rss_row(f"peak RSS, beam search b{b} (MB)", f"beam{b}", ckpt, f"; beams' KV cache {cache / 1e6:.0f} MB")
    rep.rss_row(
        "peak RSS, score 8x1024 (MB)",
        "score8_long",
        ckpt,
        f", ckpt + {(rep.get(np0, 'score8_long', 'peak_rss') or 0) / 1e6 - ckpt / 1e6:.0f} MB",
    )
    for task in TRAINING_TASKS:
        B, T = TRAIN_SHAPES[task[-1]]
        what = "forward + backward" if task.startswith("backward") else "training step"
        rep.rss_row(f"peak RSS, {what} {B}x{T} (MB)", task, ckpt)
    for name, m in models.items():
        if name == "gpt2":
            continue
        key = f"family:{name}"
        rep.row(f"{name}: load (s)", key, "load_s")
        rep.row(
            f"{name}: decode b1 at context ~150 (ms/step)", key, "step_s", 1e3, floor=rep.decode_floor(name, 1, 150)
        )
        rep.rss_row(f"{name}: peak RSS decoding b1 (MB)", key, m["checkpoint_bytes"])

    # Issue 13's targets.
    forced = "gpt2np-default-blas" in impls
    tag = "" if forced else " (nothing forced: one kernel)"
    rep.target(
        13,
        f"prefill 1x1024 >= 1.3x transformers, forced kernel{tag}",
        rep.speedup(np0, "prefill_curve", "time_s@1024"),
        1.3,
        ">=",
        "x",
    )
    rep.target(
        13,
        f"prefill 1x1024 >= 1.5x transformers, default kernel{tag}",
        rep.speedup(npd, "prefill_curve", "time_s@1024"),
        1.5,
        ">=",
        "x",
    )
    rep.target(
        13,
        "prefill 8x1024 (last logits) >= 1.3x, forced kernel",
        rep.speedup(np0, "prefill8_long", "time_s"),
        1.3,
        ">=",
        "x",
    )
    rss = rep.get(np0, "score8_long", "peak_rss")
    rep.target(
        13,
        "score 8x1024: peak RSS <= checkpoint + 600 MB",
        None if rss is None else (rss - ckpt) / 1e6,
        600,
        "<=",
        " MB over",
    )
    rep.target(
        13, "score 8x1024 faster than transformers' loss", rep.speedup(np0, "score8_long", "time_s"), 1.0, ">=", "x"
    )
    c = max(DECODE_CONTEXTS)
    rep.target(
        13, f"decode b1 at context {c} >= 1.8x", rep.speedup(np0, "decode_curve1", f"step_s@{c}"), 1.8, ">=", "x"
    )
    rep.target(
        13, f"decode b8 at context {c} >= 2.5x", rep.speedup(np0, "decode_curve8", f"step_s@{c}"), 2.5, ">=", "x"
    )
    for name, m in models.items():
        key, step = ("decode1", "step_s") if name == "gpt2" else (f"family:{name}", "step_s")
        s, floor = rep.get(np0, key, step), rep.decode_floor(name, 1, 150)
        rep.target(
            13, f"{name}: decode b1 <= 1.2x bandwidth floor", s / floor if s and floor else None, 1.2, "<=", "x floor"
        )
        peak = rep.get(np0, "generate1" if name == "gpt2" else key, "peak_rss")
        rep.target(
            13,
            f"{name}: peak RSS generating b1 <= 1.15x checkpoint",
            peak / m["checkpoint_bytes"] if peak else None,
            1.15,
            "<=",
            "x ckpt",
        )
    # Issue 24's.
    for b in (1, 4):
        rep.target(24, f"beam search b{b} >= 1.5x transformers", rep.speedup(np0, f"beam{b}", "time_s"), 1.5, ">=", "x")
        peak, cache = rep.get(np0, f"beam{b}", "peak_rss"), beam_cache_bytes(main["config"], b)
        rep.target(
            24,
            f"beam search b{b}: peak RSS <= 1.2x (checkpoint + beams' KV cache)",
            peak / (ckpt + cache) if peak else None,
            1.2,
            "<=",
            "x",
        )
    # Issue 25's: against ONNX Runtime, under each kernel this run has (gpt2np's time / ORT's).
    if ORT in impls:
        kernels = [(np0, "forced kernel" if forced else "one kernel")] + ([(npd, "default kernel")] if forced else [])
        c = max(DECODE_CONTEXTS)
        for impl, kernel in kernels:
            for label, key, name, goal in (
                ("decode b1 at context ~150", "decode1", "step_s", 1.1),
                ("decode b8 at context ~150", "decode8", "step_s", 1.25),
                ("prefill 1x128, last logits", "prefill_curve", "time_s@128", 1.2),
                ("prefill 1x1024, last logits", "prefill_curve", "time_s@1024", 1.0),
                (f"decode b1 at context {c}", "decode_curve1", f"step_s@{c}", 1.0),
                (f"decode b8 at context {c}", "decode_curve8", f"step_s@{c}", 1.0),
            ):
                ratio = rep.speedup(impl, key, name, other=ORT)  # ORT's time / gpt2np's
                rep.target(
                    25,
                    f"{label}: <= {goal:g}x ORT's time, {kernel}",
                    None if ratio is None else 1 / ratio,
                    goal,
                    "<=",
                    "x ORT",
                )
    # Issues 31's and 32's: a forward + backward (31) and a training step (32) at most torch's
    # time and at most its peak memory.
    for task in TRAINING_TASKS:
        issue, (B, T) = (31 if task.startswith("backward") else 32), TRAIN_SHAPES[task[-1]]
        what = "forward + backward" if issue == 31 else "training step"
        ratio = rep.speedup(np0, task, "time_s")  # torch's time / gpt2np's
        rep.target(
            issue, f"{what} {B}x{T}: time <= transformers'", None if ratio is None else 1 / ratio, 1.0, "<=", "x tf"
        )
        n, t = rep.get(np0, task, "peak_rss"), rep.get(TF, task, "peak_rss")
        rep.target(issue, f"{what} {B}x{T}: peak RSS <= transformers'", n / t if n and t else None, 1.0, "<=", "x tf")
    # Issue 4's, still informative.
    rep.target(
        4, "decode b1 tokens/s >= 2.5x transformers", rep.speedup(np0, "decode1", "tokens_per_s", True), 2.5, ">=", "x"
    )
    rep.target(
        4, "decode b8 tokens/s >= 2.0x transformers", rep.speedup(np0, "decode8", "tokens_per_s", True), 2.0, ">=", "x"
    )
    rep.target(4, "prefill 1x128 >= 1.5x transformers", rep.speedup(np0, "prefill", "time_s"), 1.5, ">=", "x")
    rep.target(4, "load (local files) <= 0.3 s", rep.get(np0, "load", "load_s"), 0.3, "<=", " s")
    return rep
