"""What the campaign's sim mechanisms buy, held out: the fidelity report with and without them.

    python -m bench.fidelity_ablation [DB ...] [--without NAME ...] [--json PATH]

Fits the same predictors twice on the same real points (default: the H200 calibration campaign,
``studies/real/h200/campaign/h200-fidelity-campaign.db``): once with every constant calibration
may move, once without the ones named by ``--without`` (default: the mechanisms added from the
campaign: the eager cost per step and per sequence, the fp8 KV path's per-sequence cost, the
per-stream admission delay and the shared prefix read together). Prints median / worst absolute
% error per predictor and metric, side by side, and writes both reports' summaries and judged
targets as JSON. Each report runs about a dozen fits of ~1 minute on two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tuner.calibration.calibrate import METRICS, PRIOR_SIGMA, load_points
from tuner.calibration.fidelity import fidelity_report

CAMPAIGN = "studies/real/h200/campaign/h200-fidelity-campaign.db"
MECHANISMS = (
    "eager_per_seq_s",
    "eager_step_s",
    "kv_per_seq_s.fp8",
    "admission_delay_per_stream_s",
    "prefix_reads_shared",
)
OUT = Path("bench/results/fidelity-ablation-campaign.json")


def _cell(stats: dict) -> str:
    return f"{stats['median']:.1f} / {stats['worst']:.1f}" if stats["n"] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=[CAMPAIGN])
    parser.add_argument("--without", nargs="*", default=list(MECHANISMS))
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument(
        "--with-report",
        type=Path,
        default=None,
        help="`servetune fidelity --json` of the same points: its numbers stand for the fit "
        "with the mechanisms, which is then not run again",
    )
    args = parser.parse_args()
    unknown = set(args.without) - set(PRIOR_SIGMA)
    if unknown:
        raise SystemExit(f"--without: not a fitted constant: {', '.join(sorted(unknown))}")
    points = load_points(args.studies)
    # a part already in --json for the same points and constants is reused (a rerun after a
    # failure, or after only --with-report changed, costs no fits)
    earlier = json.loads(args.json.read_text()) if args.json.is_file() else {}
    results = {}
    for label, names in (  # without first: a --with-report still being written has time
        ("without them", [n for n in PRIOR_SIGMA if n not in args.without]),
        ("with the mechanisms", list(PRIOR_SIGMA)),
    ):
        began = time.monotonic()
        done = earlier.get(label) or {}
        if done.get("fitted_names") == names and earlier.get("studies") == args.studies:
            results[label] = done
            continue
        if args.with_report and label == "with the mechanisms":
            report = json.loads(args.with_report.read_text())
            if {r["point"] for r in report["rows"]} != {p.label for p in points}:
                raise SystemExit(f"--with-report: {args.with_report} scores other points")
        else:
            report = fidelity_report(points, names=names).to_dict()
        results[label] = {
            "fitted_names": names,
            "seconds": round(time.monotonic() - began, 1),
            "summary": report["summary"],
            "judged_targets": report.get("judged_targets"),
        }
        _write(args, len(points), results)
    print("| predictor | fit | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    first = results["with the mechanisms"]["summary"]
    for predictor in first:
        for label in ("with the mechanisms", "without them"):
            result = results[label]
            stats = result["summary"].get(predictor)
            if stats:
                cells = " | ".join(_cell(stats[m]) for m in METRICS)
                print(f"| {predictor} | {label} | {cells} |")
    _write(args, len(points), results)
    print(f"wrote {args.json}")


def _write(args: argparse.Namespace, points: int, results: dict) -> None:
    document = {"studies": args.studies, "points": points, "without": args.without, **results}
    args.json.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
