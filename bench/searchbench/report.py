"""Tables from the benchmark's JSON, the target check, and records for convergence plots."""

from __future__ import annotations

from typing import Any

TARGET_SHARE = 0.97
TARGET_GRID_FRACTION = 0.20


def target_check(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scenario and objective: does the default reach 97% (median) within 20% of the valid
    grid's trials, and is its median at least random's at every budget?"""
    out = []
    rows = {(r["scenario"], r["objective"], r["strategy"]): r for r in result["efficiency"]}
    for (name, kind, strategy), row in rows.items():
        if strategy != "default":
            continue
        limit = int(TARGET_GRID_FRACTION * result["scenarios"][name]["valid"])
        budgets = [b for b in row["share"] if int(b) <= limit]
        reached = [b for b in budgets if row["share"][b]["median"] >= TARGET_SHARE]
        rnd = rows.get((name, kind, "random"))
        ahead = rnd is None or all(
            row["share"][b]["median"] >= rnd["share"][b]["median"] - 1e-9 for b in row["share"]
        )
        strictly = rnd is not None and all(
            row["share"][b]["median"] > rnd["share"][b]["median"]
            or row["share"][b]["median"] >= 0.999
            for b in row["share"]
        )
        out.append(
            {
                "scenario": name,
                "objective": kind,
                "trial_limit": limit,
                "first_budget_at_97%": int(reached[0]) if reached else None,
                "met_97%": bool(reached),
                "not_behind_random": ahead,
                "ahead_of_random_or_at_optimum": strictly,
            }
        )
    return out


def _cell(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} ({s['p10']:.2f}–{s['p90']:.2f})"


def _needed(n: dict[str, Any], top: int) -> str:
    med = n["median"]
    return f">{top}" if med > top else f"{med:g}"


def markdown(result: dict[str, Any]) -> str:
    """The whole report as markdown."""
    lines = [
        "# Search efficiency",
        "",
        f"Produced by `{result['command']}` in {result['elapsed_s']:.0f} s "
        f"(Python {result['python']}, {result['machine']}). Seeds: {result['seeds']} "
        f"(GP: {result['gp_seeds']}, single objective, budgets 10/20 only: slow on CPU).",
        "",
        "Share of the grid optimum (single: best feasible output tokens/s; multi: feasible "
        "hypervolume of throughput vs p99 TTFT), median (p10–p90) over seeds, and counted "
        "trials the median run needs to reach 95% / 97%. Invalid configs are rejected "
        "before they run and do not count, as in the study loop.",
        "",
    ]
    for name, facts in result["scenarios"].items():
        lines += [
            f"## {name}",
            "",
            f"{facts['grid_points']} grid points, {facts['valid']} valid, {facts['feasible']} "
            f"within SLOs {facts['slos']}; optimum {facts['optimum_output_tokens_per_s']} "
            f"tok/s; HV reference {facts['hv_reference']}.",
            "",
        ]
        for kind in ("single", "multi"):
            rows = [
                r for r in result["efficiency"] if r["scenario"] == name and r["objective"] == kind
            ]
            if not rows:
                continue
            budgets = sorted({int(b) for r in rows for b in r["share"]})
            lines += [
                f"**{kind}**",
                "",
                "| strategy | "
                + " | ".join(f"{b} trials" for b in budgets)
                + " | to 95% | to 97% |",
                "|---" * (len(budgets) + 3) + "|",
            ]
            for r in rows:
                cells = [
                    _cell(r["share"][b]) if b in r["share"] else ""
                    for b in [str(b) if str(b) in r["share"] else b for b in budgets]
                ]
                lines.append(
                    f"| {r['strategy']} | "
                    + " | ".join(cells)
                    + " | "
                    + _needed(r["trials_to"]["95%"], r["max_budget"])
                    + " | "
                    + _needed(r["trials_to"]["97%"], r["max_budget"])
                    + " |"
                )
            lines.append("")
    lines += [
        "## Target: default strategy",
        "",
        "| scenario | objective | 20% of valid grid | first budget at 97% (median) | "
        "not behind random at every budget |",
        "|---|---|---|---|---|",
    ]
    for t in target_check(result):
        lines.append(
            f"| {t['scenario']} | {t['objective']} | {t['trial_limit']} | "
            f"{t['first_budget_at_97%'] or 'not reached'} | {t['not_behind_random']} |"
        )
    f, w = result["failures"], result["warm_start"]
    lines += [
        "",
        "## Learned failures",
        "",
        f"{f['scenario']} with a hidden rule: {f['rule']} ({f['failing_share_of_valid_grid']:.0%} "
        f"of valid configs). Default strategy, {f['budget']} counted trials.",
        "",
        "| | failed share of budget | share of optimum | free vetoes |",
        "|---|---|---|---|",
    ]
    for key in ("without_learning", "with_learning"):
        r = f[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {_cell(r['failed_share_of_budget'])} | "
            f"{_cell(r['share_of_optimum'])} | {r['vetoed_free']['median']:g} |"
        )
    lines += [
        "",
        "## Sim first, real second",
        "",
        f"'Reality' = {w['sim']} costed with {w['reality_profile']} (optimum "
        f"{w['reality_optimum']} tok/s). Warm start: top {w['top_k']} of a {w['sim_trials']}-"
        f"trial sim study enqueued first. The sim winner alone reaches "
        f"{_cell(w['sim_winner_share_of_reality_optimum'])} of reality's optimum.",
        "",
        "| | real trials to 97% (median, p10–p90) | runs that got there |",
        "|---|---|---|",
    ]
    for key in ("cold", "warm"):
        n = w[f"trials_to_97%_{key}"]
        lines.append(
            f"| {key} | {n['median']:g} ({n['p10']:g}–{n['p90']:g}) | {n['reached']}/{n['runs']} |"
        )
    return "\n".join(lines) + "\n"


def summary_lines(result: dict[str, Any]) -> list[str]:
    out = []
    for t in target_check(result):
        out.append(
            f"default on {t['scenario']} ({t['objective']}): 97% at "
            f"{t['first_budget_at_97%'] or 'not reached'} (limit {t['trial_limit']}), "
            f"not behind random: {t['not_behind_random']}"
        )
    return out


def convergence_records(result: dict[str, Any], scenario: str, objective: str = "single"):
    """``{strategy: [TrialRecord]}`` of the median convergence curves, for
    :func:`tuner.plots.plot_convergence` (metric ``output_tokens_per_s`` holds the share of the
    optimum (single) or of the true hypervolume (multi), trial numbers are counted trials)."""
    from tuner.analysis.results import TrialRecord

    out = {}
    for row in result["efficiency"]:
        if row["scenario"] != scenario or row["objective"] != objective:
            continue
        out[row["strategy"]] = [
            TrialRecord(
                number=i + 1,
                state="COMPLETE",
                engine=row["strategy"],
                config={},
                metrics={"output_tokens_per_s": v},
                feasible=True,
                estimated=True,
                precision=None,
                gpus=None,
                reason=None,
                detail=None,
                baseline=False,
            )
            for i, v in enumerate(row["median_curve"])
        ]
    return out
