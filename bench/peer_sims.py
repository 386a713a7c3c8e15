"""servetune's sim vs NVIDIA AIConfigurator on the real runs committed under studies/.

For every completed real trial (H100, vLLM) and its re-measurements, predict throughput, TTFT
p50/p99 and TPOT p50/p99 with servetune's sim (shipped profile; calibrated, held out by
leave-one-config-out) and with AIConfigurator 0.12.0
(``aiconfigurator.cli.api.cli_estimate``, agg mode, its packaged h100_sxm / vLLM 0.24.0 per-op
database, offline), and report each tool's median and worst absolute percentage error side by
side, plus the config knobs AIConfigurator has no input for. Without aiconfigurator installed the
bench says so and still reports servetune's errors.

    /work/venv/bin/python -m bench.peer_sims          # writes bench/results/peer_sims.{json,md}

The config mapping is documented in docs/calibration.md.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

try:
    from bench.outputs import results_dir
except ModuleNotFoundError:  # run as a script (python bench/peer_sims.py): bench/ is on the path
    from outputs import results_dir  # type: ignore[no-redef]

from tuner.calibration.calibrate import METRICS, RealPoint, load_points, predict
from tuner.calibration.fidelity import LOO as FIDELITY_LOO
from tuner.calibration.fidelity import ape, config_ranking, error_stats, leave_one_out

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REAL_STUDIES = ["studies/real/h100-llama8b-vllm.db", "studies/real/cold-start/h100-llama8b-vllm.db"]
AIC_VERSION = "0.12.0"
AIC_MODELS = {"Llama-3.1-8B": "meta-llama/Meta-Llama-3.1-8B"}  # packaged model configs
AIC_SYSTEMS = {"H100-SXM": "h100_sxm", "H200": "h200_sxm"}
# Another GPU, predicted with no data from it: the H200 replay of the H100 configs, against the
# profile calibrated on the H100 (the constants are meant to be the engine's, not the card's).
TRANSFER_STUDIES = ["studies/real/h200/h200-llama8b-vllm-grid.db"]
TRANSFER_PROFILE = "h100-llama8b-vllm"
AIC_GEMM = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8", "int4": "int4_wo"}
AIC_KV = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8", "int8": "int8"}
SIM_CANNOT_EXPRESS = [
    "measured per-op kernel tables (AIConfigurator's strength): kernels are a roofline with "
    "efficiency constants, so kernel-specific effects are only as good as the fitted constants",
    "fp8 KV-cache attention cost beyond one bandwidth factor per KV dtype "
    "(kv_bandwidth_efficiency, shipped 1.0, fitted per GPU)",
    "the exact shape of a real closed loop's waves: one fitted admission delay (the API "
    "server's latency per request) makes prefills gather into full-budget steps as they do, but "
    "median TTFT is still 44% off held out, and the real median moved 3x between five clean "
    "runs of one config on the H200",
    "tokenising and the API server's queue before the engine sees a request, beyond that one "
    "admission delay (the API servers' streaming of every token and the engine core's work "
    "per sequence are modelled, with constants measured on one H200 host: docs/simulator.md)",
]
SHIPPED, AIC = "servetune sim (shipped)", "AIConfigurator"
LOO = "servetune sim (calibrated, held-out: leave-one-config-out)"
TRANSFERRED = f"servetune sim (calibrated on the H100: {TRANSFER_PROFILE})"


def aic_inputs(point: RealPoint) -> tuple[dict[str, Any], list[str]]:
    """AIConfigurator ``cli_estimate`` arguments for a point, and the knobs it cannot express."""
    from engines import get_engine

    plan = get_engine(point.engine, "sim").plan(point.config, point.ctx)
    w = point.ctx.workload
    isl, osl = w.input_tokens.upper_bound, w.output_tokens.upper_bound
    concurrency = w.arrival.concurrency or plan.max_seqs
    lost = [
        "enable_chunked_prefill (always modelled as chunked IFB)",
        f"enable_prefix_caching={plan.prefix_caching} (only a cached-prefix length: "
        f"{int(w.shared_prefix_fraction * isl)} tokens here)",
        f"gpu_memory_utilization={plan.memory_fraction} (no input; KV capacity is only checked)",
        f"max_num_seqs={plan.max_seqs} beyond the batch size (batch = min(concurrency, max_num_seqs))",
        f"block_size={plan.block_size}",
        f"CUDA graphs (enforce_eager={not plan.cuda_graphs})",
        "request count, warmup and ramp-up (steady state only)",
        "percentiles (one TTFT and one TPOT, compared against p50 and p99 alike)",
    ]
    if w.input_tokens.kind != "fixed" or w.output_tokens.kind != "fixed":
        lost.append("length distributions (upper bounds used)")
    args = {
        "model_path": AIC_MODELS.get(point.ctx.model.name),
        "system_name": AIC_SYSTEMS.get(point.ctx.hardware.gpu),
        "mode": "agg",
        "backend_name": point.engine,
        "isl": isl,
        "osl": osl,
        "batch_size": min(concurrency, plan.max_seqs),
        "ctx_tokens": plan.max_batched_tokens,
        "tp_size": plan.tp,
        "pp_size": plan.pp,
        "gemm_quant_mode": AIC_GEMM.get(plan.weight_dtype),
        "kvcache_quant_mode": AIC_KV.get(plan.kv_dtype),
        "prefix": int(w.shared_prefix_fraction * isl) if plan.prefix_caching else 0,
    }
    return args, lost


def aic_predict(args: dict[str, Any]) -> dict[str, float] | str:
    """AIConfigurator's metrics for one mapped config, or why it could not give them."""
    missing = [k for k in ("model_path", "system_name", "gemm_quant_mode") if args[k] is None]
    if missing:
        return f"no AIConfigurator input for {', '.join(missing)}"
    from aiconfigurator.cli.api import cli_estimate

    try:
        result = cli_estimate(**args)
    except Exception as exc:  # a peer's failure is a result to report, not a crash
        return f"{type(exc).__name__}: {exc}"
    tokens = float(result.raw["tokens/s"]) if "tokens/s" in result.raw else math.nan
    return {
        "output_tokens_per_s": tokens,
        "ttft_p50_ms": float(result.ttft),
        "ttft_p99_ms": float(result.ttft),
        "tpot_p50_ms": float(result.tpot),
        "tpot_p99_ms": float(result.tpot),
    }


def aic_available() -> str | None:
    """The installed aiconfigurator version, or None."""
    try:
        from importlib.metadata import version

        return version("aiconfigurator")
    except Exception:
        return None


def held_out_predictions(points: list[RealPoint], report: Path) -> dict[str, dict[str, float]]:
    """Leave-one-config-out predictions: those of the fidelity report when it covers exactly
    these points (one fit per config is the slow part, ~1 min each), else computed here."""
    if report.is_file():
        rows = json.loads(report.read_text())["rows"]
        rows = [r for r in rows if r["predictor"] == FIDELITY_LOO]
        got: dict[str, dict[str, float]] = {}
        for r in rows:
            got.setdefault(r["point"], {})[r["metric"]] = r["predicted"]
        if set(got) == {p.label for p in points}:
            log.info("held-out predictions from %s", report)
            return got
    return leave_one_out(points)


def _aic_predictions(points: list[RealPoint]) -> tuple[dict, dict, dict, dict]:
    """AIConfigurator's predictions, its inputs, what it could not express and its failures."""
    preds, inputs, cannot, failures = {}, {}, {}, {}
    for p in points:
        args, lost = aic_inputs(p)
        inputs[p.label], cannot[p.label] = args, lost
        started = time.monotonic()
        got = aic_predict(args)
        log.info("AIConfigurator %s: %.1fs", p.label, time.monotonic() - started)
        if isinstance(got, str):
            failures[p.label] = got
        else:
            preds[p.label] = got
    return preds, inputs, cannot, failures


def _scored(points: list[RealPoint], preds: dict[str, dict[str, dict[str, float]]]) -> dict:
    """Per-point rows, each tool's median / worst APE per metric, and its ranking quality."""
    rows = [
        {
            "point": p.label,
            "measured_by": p.measured_by,
            "tool": tool,
            "metric": m,
            "predicted": by_point[p.label][m],
            "measured": p.measured[m],
            "ape_pct": ape(by_point[p.label][m], p.measured[m]),
        }
        for tool, by_point in preds.items()
        for p in points
        if p.label in by_point
        for m in METRICS
        if m in p.measured
    ]
    summary = {
        tool: {
            m: error_stats([r["ape_pct"] for r in rows if r["tool"] == tool and r["metric"] == m])
            for m in METRICS
        }
        for tool in preds
    }
    ranking = {tool: config_ranking(points, by_point) for tool, by_point in preds.items()}
    return {"rows": rows, "summary": summary, "ranking": ranking}


def _load(studies: list[str]) -> list[RealPoint]:
    return load_points([str(ROOT / s) if not Path(s).is_absolute() else s for s in studies])


def transfer(studies: list[str] = TRANSFER_STUDIES, with_aic: bool = True) -> dict[str, Any]:
    """The H200 points predicted by the shipped sim, by the profile fitted on the H100 only,
    and by AIConfigurator's h200_sxm tables."""
    points = _load(studies)
    preds = {
        SHIPPED: {p.label: predict(p) for p in points},
        TRANSFERRED: {p.label: predict(p, TRANSFER_PROFILE) for p in points},
    }
    failures: dict[str, str] = {}
    if with_aic:
        preds[AIC], _, _, failures = _aic_predictions(points)
    return {**_scored(points, preds), "aic_failures": failures, "points": len(points)}


def run(studies: list[str] = REAL_STUDIES) -> dict[str, Any]:
    """Predict every real point with each tool; return rows, per-tool summaries and notes."""
    points = _load(studies)
    version = aic_available()
    preds: dict[str, dict[str, dict[str, float]]] = {
        SHIPPED: {p.label: predict(p) for p in points},
        LOO: held_out_predictions(points, RESULTS / "fidelity.json"),
    }
    inputs, cannot, failures = {}, {}, {}
    if version:
        preds[AIC], inputs, cannot, failures = _aic_predictions(points)
    scored = _scored(points, preds)
    configs = len({p.key for p in points})
    by = sorted({p.measured_by for p in points})
    aside = sorted({f"{m}: {why}" for p in points for m, (_, why) in p.set_aside.items()})
    notes = [
        f"{len(points)} real measurement(s) of {configs} distinct config(s), measured by: "
        + "; ".join(by)
        + ".",
        "Calibrated (held-out): each config predicted by a profile fitted on the other configs "
        "only (every measurement of that config left out).",
    ]
    if aside:
        notes.append(
            f"Set aside on {sum(1 for p in points if p.set_aside)} point(s), for every tool alike "
            "(studies/real/protocols.yaml): " + "; ".join(aside)
        )
    if version:
        notes.append(
            f"AIConfigurator {version}: agg mode, SILICON database, h100_sxm (h200_sxm for the "
            "H200 table), vLLM 0.24.0 tables; its TTFT/TPOT are single steady-state values "
            "compared against both p50 and p99."
        )
    else:
        notes.append(
            f"AIConfigurator is not installed (pip install 'servetune[peers]' for "
            f"aiconfigurator=={AIC_VERSION}); only servetune's errors are reported."
        )
    return {
        "aiconfigurator_version": version,
        **scored,
        "transfer": transfer(with_aic=bool(version)),
        "aic_inputs": inputs,
        "aic_cannot_express": cannot,
        "aic_failures": failures,
        "notes": notes,
    }


def _summary_table(result: dict[str, Any]) -> list[str]:
    head = "| tool | " + " | ".join(METRICS) + " | Spearman (tok/s) | real best in top-3 |"
    lines = [head, "|---" * (len(METRICS) + 3) + "|"]
    for tool, stats in result["summary"].items():
        cells = [
            f"{s['median']:.1f} / {s['worst']:.1f}" if s["n"] else "n/a" for s in stats.values()
        ]
        rank = result.get("ranking", {}).get(tool, {})
        rho = rank.get("spearman")
        best = rank.get("best_in_top3")
        cells += ["n/a" if rho is None else f"{rho:.2f}", "n/a" if best is None else str(best)]
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    """Side-by-side median / worst APE table, per-point predictions and the knobs each lacks."""
    lines = ["# servetune sim vs AIConfigurator on real H100 vLLM runs", ""]
    lines += _summary_table(result)
    if not result["aiconfigurator_version"]:
        lines.append("| AIConfigurator | " + " | ".join(["not installed"] * len(METRICS)) + " |")
    lines += ["", "Cells: median / worst absolute percentage error (%).", ""]
    moved = result.get("transfer")
    if moved:
        lines += [
            f"## Another GPU with no data from it: {moved['points']} H200 measurements",
            "",
            "The H100 configs replayed on an H200 (studies/real/h200/); the calibrated profile "
            "was fitted on H100 runs only. Configs are ranked within each load level (Spearman: "
            "the mean over loads; top-3: at every load).",
            "",
            *_summary_table(moved),
            "",
            *_ranking_by_load(moved),
        ]
    lines += ["## Per point", ""]
    lines += [
        "| point | tool | metric | predicted | measured | APE % |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"] + (moved or {}).get("rows", []):
        lines.append(
            f"| {r['point']} | {r['tool']} | {r['metric']} | {r['predicted']:.1f} | "
            f"{r['measured']:.1f} | {r['ape_pct']:.1f} |"
        )
    lines += ["", "## What AIConfigurator could not express", ""]
    knobs = sorted({k for lost in result["aic_cannot_express"].values() for k in lost})
    lines += [f"- {k}" for k in knobs] or ["- (not run)"]
    lines += ["", "## What servetune's sim cannot express", ""]
    lines += [f"- {k}" for k in SIM_CANNOT_EXPRESS]
    lines += [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]]
    for point, why in result["aic_failures"].items():
        lines.append(f"- AIConfigurator failed on {point}: {why}")
    return "\n".join(lines) + "\n"


def _ranking_by_load(result: dict[str, Any]) -> list[str]:
    """Spearman per load level, where the points span several (a sweep)."""
    lines = []
    for tool, rank in result["ranking"].items():
        per = rank.get("by_workload")
        if per:
            rhos = ", ".join(
                f"{r['load']}: "
                + ("n/a" if r["spearman"] is None else f"{r['spearman']:.2f}")
                + f" ({r['configs']} configs)"
                for r in per
            )
            lines.append(f"- {tool}: Spearman by load, {rhos}")
    return [*lines, ""] if lines else []


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    from rich.console import Console
    from rich.table import Table

    result = run(sys.argv[1:] or REAL_STUDIES)
    (results_dir() / "peer_sims.json").write_text(json.dumps(result, indent=1, default=str))
    (results_dir() / "peer_sims.md").write_text(to_markdown(result))
    table = Table(title="Median / worst abs % error vs real H100 runs")
    table.add_column("tool")
    for m in METRICS:
        table.add_column(m, justify="right")
    for tool, stats in result["summary"].items():
        table.add_row(tool, *[f"{s['median']:.1f} / {s['worst']:.1f}" for s in stats.values()])
    console = Console(width=160)
    console.print(table)
    for note in result["notes"]:
        console.print(f"[dim]{note}[/]")


if __name__ == "__main__":
    main()
