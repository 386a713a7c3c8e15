"""The host's caps in the sim: fit on one H200 machine's real runs, predict another machine's.

    python -m bench.sim_host_limits [--study DB] [--shipped-check]

Issue 27's workload 3 (SmolLM2-135M, extraction prompts of ~406 tokens, 128 greedy tokens out,
closed loop at 256 clients) is limited by the host, not the GPU: a fourth API server doubled its
output tokens per second. The sim's built-in profile caps a step at the slower of the GPU, the
engine core (``host_per_seq_s`` per sequence) and the API servers (``api_per_token_s`` per
streamed token, shared by ``--api-server-count`` processes). This script fits the two constants
to stretch A's runs (one machine: the expert's median for ``api_per_token_s``, four API servers'
median for ``host_per_seq_s``) and scores them on stretch B's (another H200 machine, 5 servers of
each config, interleaved): per-run errors and the api4 / expert ratio, every ratio to the expert
of the same stretch. It also prints what the caps change where the GPU sets most of the pace (Llama-3.1-8B,
1024 in / 256 out at 256 clients), and the api4 / expert ratio they predict there.

``--shipped-check`` (3 min) also scores the built-in profile with and without the two constants
on the real points the fidelity reports use (the H100 study, the H200 grid, the H200 campaign):
median absolute % error per metric, set-aside metrics left out as the reports do.

Writes ``sim_host_limits.json`` (``bench/results/`` with ``BENCH_RECORD=1``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path

import optuna
import yaml

from bench.outputs import results_path
from engines import HardwareSpec, ModelSpec, RunContext, WorkloadSpec, get_engine
from engines.sim.profiles import load_profile
from engines.sim.simulate import simulate

STUDY = Path("studies/real/h200/session10-smollm2/h200-smollm2-extraction.db")
EXTRACTION = WorkloadSpec(
    input_tokens=406,  # the runs' input tokens / requests (60,760 / 149.8 per s)
    output_tokens=128,
    num_requests=1600,
    warmup_requests=64,
    arrival={"kind": "concurrency", "concurrency": 256},
)
THROUGHPUT = WorkloadSpec(
    input_tokens=1024,
    output_tokens=256,
    num_requests=800,
    warmup_requests=64,
    arrival={"kind": "concurrency", "concurrency": 256},
)
# issue 27's expert hand-tune of workload 1 (studies/real/h200-beyond-expert.yaml)
EXPERT_8B = {
    "dtype": "bfloat16",
    "quantization": "fp8",
    "kv_cache_dtype": "fp8",
    "gpu_memory_utilization": 0.92,
    "max_num_seqs": 512,
    "max_num_batched_tokens": 16384,
    "max_model_len": 8192,
}
KNOBS = {"expert": 1, "api_server_count_4": 4}
METRICS = ("output_tokens_per_s", "tpot_p50_ms", "ttft_p50_ms")
_names = count()


def measured_runs(study_db: Path) -> dict[str, dict[str, list[dict]]]:
    """Stretch -> knob -> the runs (tok/s, TPOT p50, config) of the expert and of api4."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{study_db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    runs: dict[str, dict[str, list[dict]]] = {}
    for trial in study.trials:
        attrs = trial.user_attrs
        knob = str(attrs.get("knob", "")).split("@")[0].removesuffix("_end")
        if trial.state != optuna.trial.TrialState.COMPLETE or knob not in KNOBS:
            continue
        metrics = attrs["metrics"]
        runs.setdefault(attrs["stretch"], {}).setdefault(knob, []).append(
            {
                "trial": trial.number,
                "output_tokens_per_s": metrics["output_tokens_per_s"],
                "tpot_p50_ms": metrics["tpot_p50_ms"],
                "ttft_p50_ms": metrics["ttft_p50_ms"],
                "config": attrs["config"],
            }
        )
    return runs


def _profile(constants: dict[str, float], folder: Path) -> str:
    """A profile file on the built-in vLLM one with ``constants`` set (a new name each time:
    profile files are read once per path)."""
    path = folder / f"host-{next(_names)}.yaml"
    path.write_text(yaml.safe_dump({"base": "vllm", "name": "host-fit", **constants}))
    return str(path)


def predict(config: dict, ctx: RunContext, profile: str | None) -> dict[str, float]:
    engine = get_engine("vllm", "sim", profile)
    measured = simulate("vllm", engine.plan(config, ctx), ctx, profile=profile)
    return {
        "output_tokens_per_s": measured.output_tokens_per_s,
        "tpot_p50_ms": measured.tpot_ms.p50,
        "ttft_p50_ms": measured.ttft_ms.p50,
    }


def _solve(rate: Callable[[float], float], target: float, high: float = 1e-3) -> float:
    """The constant (0..high s) at which the predicted tok/s ``rate`` meets ``target``: the rate
    falls as the constant grows, so bisect on it (log scale)."""
    low = 1e-7
    for _ in range(30):
        mid = (low * high) ** 0.5
        low, high = (mid, high) if rate(mid) > target else (low, mid)
    return (low * high) ** 0.5


def fit(runs: dict[str, list[dict]], ctx: RunContext, folder: Path) -> dict[str, float]:
    """api_per_token_s from the expert's median, host_per_seq_s from api4's, alternating (each
    binds one config, but each config feels both)."""
    expert = statistics.median(r["output_tokens_per_s"] for r in runs["expert"])
    api4 = statistics.median(r["output_tokens_per_s"] for r in runs["api_server_count_4"])
    cfg_expert, cfg_api4 = runs["expert"][0]["config"], runs["api_server_count_4"][0]["config"]
    constants = {"host_per_seq_s": 0.0, "api_per_token_s": 0.0}

    def rate(config: dict, name: str) -> Callable[[float], float]:
        def at(value: float) -> float:
            profile = _profile({**constants, name: value}, folder)
            return predict(config, ctx, profile)["output_tokens_per_s"]

        return at

    for _ in range(3):
        constants["api_per_token_s"] = _solve(rate(cfg_expert, "api_per_token_s"), expert)
        constants["host_per_seq_s"] = _solve(rate(cfg_api4, "host_per_seq_s"), api4)
    return constants


def _errors(runs: list[dict], predicted: dict[str, float]) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        apes = [abs(predicted[metric] / r[metric] - 1) * 100 for r in runs]
        out[f"{metric}_median_ape_pct"] = statistics.median(apes)
    return out


def score(stretch: dict[str, list[dict]], ctx: RunContext, profile: str | None) -> dict:
    """Predictions and errors on one stretch's runs, and the api4 / expert ratio both ways."""
    rows = {}
    for knob, knob_runs in stretch.items():
        predicted = predict(knob_runs[0]["config"], ctx, profile)
        rows[knob] = {
            "runs": len(knob_runs),
            "measured_tok_s": [round(r["output_tokens_per_s"]) for r in knob_runs],
            "measured_median_tok_s": statistics.median(r["output_tokens_per_s"] for r in knob_runs),
            "predicted_tok_s": predicted["output_tokens_per_s"],
            "measured_median_tpot_ms": statistics.median(r["tpot_p50_ms"] for r in knob_runs),
            "predicted_tpot_ms": predicted["tpot_p50_ms"],
            "measured_median_ttft_ms": statistics.median(r["ttft_p50_ms"] for r in knob_runs),
            "predicted_ttft_ms": predicted["ttft_p50_ms"],
            **_errors(knob_runs, predicted),
        }
    ratio = {
        "measured_median": rows["api_server_count_4"]["measured_median_tok_s"]
        / rows["expert"]["measured_median_tok_s"],
        "predicted": rows["api_server_count_4"]["predicted_tok_s"]
        / rows["expert"]["predicted_tok_s"],
    }
    return {"by_knob": rows, "api4_over_expert": ratio}


def gpu_bound_check(ctx: RunContext, profile: str, zero: str) -> dict[str, float]:
    """Llama-3.1-8B at 256 clients, where the GPU sets most of the pace: what the caps change
    for the expert, and the api4 / expert ratio they predict (measured: +6% to +16%)."""
    without = predict(EXPERT_8B, ctx, zero)["output_tokens_per_s"]
    with_caps = predict(EXPERT_8B, ctx, profile)["output_tokens_per_s"]
    api4 = predict({**EXPERT_8B, "api_server_count": 4}, ctx, profile)["output_tokens_per_s"]
    return {
        "expert_tok_s_zero_caps": without,
        "expert_tok_s_fitted_caps": with_caps,
        "change_pct": (with_caps / without - 1) * 100,
        "api4_over_expert_predicted": api4 / with_caps,
    }


SHIPPED_CHECK = {
    "H100 study (13 points)": [
        "studies/real/h100-llama8b-vllm.db",
        "studies/real/cold-start/h100-llama8b-vllm.db",
    ],
    "H200 grid (17 points)": ["studies/real/h200/h200-llama8b-vllm-grid.db"],
    "H200 campaign (52 points)": ["studies/real/h200/campaign/h200-fidelity-campaign.db"],
}


def shipped_check(with_caps: str | None, without: str) -> dict[str, dict[str, dict[str, float]]]:
    """Median absolute % error of the built-in profile on each data set, with and without."""
    from tuner.calibration.calibrate import METRICS as REPORTED
    from tuner.calibration.calibrate import load_points
    from tuner.calibration.calibrate import predict as predict_point

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, studies in SHIPPED_CHECK.items():
        points = load_points(studies)
        out[name] = {}
        for label, profile in (("without", without), ("with", with_caps)):
            errors: dict[str, list[float]] = {m: [] for m in REPORTED}
            for point in points:
                predicted = predict_point(point, profile)
                for metric, value in point.measured.items():
                    if metric in errors and metric not in point.set_aside:
                        errors[metric].append(abs(predicted[metric] / value - 1) * 100)
            out[name][label] = {m: statistics.median(e) for m, e in errors.items() if e}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=STUDY)
    parser.add_argument("--shipped-check", action="store_true")
    args = parser.parse_args()
    runs = measured_runs(args.study)
    small = RunContext(
        model=ModelSpec.model_validate("SmolLM2-135M"),
        hardware=HardwareSpec(gpu="H200"),
        workload=EXTRACTION,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        zero = _profile({"host_per_seq_s": 0.0, "api_per_token_s": 0.0}, folder)
        fitted = fit(runs["A"], small, folder)
        profile = _profile(fitted, folder)
        result = {
            "study": str(args.study),
            "workload": "SmolLM2-135M on H200, 406 in / 128 out, closed loop at 256 clients",
            "fitted_on": "stretch A (one H200 machine)",
            "scored_on": "stretch B (another H200 machine, 5 servers of each config)",
            "fitted": fitted,
            "built_in": {name: getattr(load_profile("vllm"), name) for name in fitted},
            "stretch_A_in_sample": score(runs["A"], small, profile),
            "stretch_B_held_out": score(runs["B"], small, profile),
            "stretch_B_without_caps": score(runs["B"], small, zero),
            "gpu_bound_llama8b": gpu_bound_check(
                RunContext(
                    model=ModelSpec.model_validate("Llama-3.1-8B"),
                    hardware=HardwareSpec(gpu="H200"),
                    workload=THROUGHPUT,
                ),
                profile,
                zero,
            ),
        }
        if args.shipped_check:
            result["shipped_check"] = shipped_check(None, zero)  # the built-in itself
    print(f"fitted on stretch A: {json.dumps({k: f'{v * 1e6:.1f} us' for k, v in fitted.items()})}")
    print("| stretch | predictor | expert tok/s (real / sim) | api4 tok/s (real / sim) | "
          "api4/expert (real / sim) | tok/s median APE expert, api4 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, key in (
        ("A", "stretch_A_in_sample"),
        ("B", "stretch_B_held_out"),
        ("B", "stretch_B_without_caps"),
    ):
        part = result[key]
        e, a = part["by_knob"]["expert"], part["by_knob"]["api_server_count_4"]
        r = part["api4_over_expert"]
        print(
            f"| {label} | {key.split('_', 2)[-1]} | {e['measured_median_tok_s']:,.0f} / "
            f"{e['predicted_tok_s']:,.0f} | {a['measured_median_tok_s']:,.0f} / "
            f"{a['predicted_tok_s']:,.0f} | {r['measured_median']:.2f}x / {r['predicted']:.2f}x | "
            f"{e['output_tokens_per_s_median_ape_pct']:.1f}%, "
            f"{a['output_tokens_per_s_median_ape_pct']:.1f}% |"
        )
    for label, key in (("A", "stretch_A_in_sample"), ("B", "stretch_B_held_out")):
        for knob, row in result[key]["by_knob"].items():
            print(
                f"stretch {label} {knob}: TPOT p50 {row['measured_median_tpot_ms']:.1f} real / "
                f"{row['predicted_tpot_ms']:.1f} sim ms, TTFT p50 "
                f"{row['measured_median_ttft_ms']:.0f} / {row['predicted_ttft_ms']:.0f} ms"
            )
    check = result["gpu_bound_llama8b"]
    print(
        f"Llama-3.1-8B, 1024/256 at 256 clients: the caps change the expert by "
        f"{check['change_pct']:+.2f}%; api4/expert predicted {check['api4_over_expert_predicted']:.3f}x"
    )
    for name, pair in result.get("shipped_check", {}).items():
        cells = ", ".join(
            f"{m} {pair['without'][m]:.1f} -> {pair['with'][m]:.1f}" for m in pair["with"]
        )
        print(f"built-in profile, median abs % error without -> with the host: {name}: {cells}")
    out = results_path("sim_host_limits.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
