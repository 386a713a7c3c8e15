"""A config the campaign's fit never saw, on an H200 the campaign never ran on.

    python -m bench.fidelity_second_machine [--campaign DB] [--held DB] [--json PATH]

Session 16 measured the campaign's kv8 config (bf16 weights, fp8 KV cache) on all five shapes on
another H200 (``studies/real/h200/campaign-kv8/``). Here a profile is fitted on the campaign's
points of every *other* config (session 11's machine) and predicts those five points: held out
twice over, by config and by machine, next to the shipped profile on the same points. Chat and
long-prefill were measured with kv8 on both machines; their ratios say how far the machines
differ on one config and shape, the floor under any error here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuner.calibration.calibrate import METRICS, load_points, predict
from tuner.calibration.holdout import fit_and_predict
from tuner.calibration.points import RealPoint
from tuner.calibration.stats import ape, error_stats

CAMPAIGN = "studies/real/h200/campaign/h200-fidelity-campaign.db"
HELD = "studies/real/h200/campaign-kv8/h200-fidelity-campaign-kv8.db"
OUT = Path("bench/results/fidelity-kv8-second-machine.json")


def errors(points: list[RealPoint], preds: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Median / worst absolute % error per metric, and each point's own."""
    return {
        m: {
            **error_stats([ape(preds[p.label][m], p.measured[m]) for p in points]),
            "points": {p.study: ape(preds[p.label][m], p.measured[m]) for p in points},
        }
        for m in METRICS
        if all(m in p.measured for p in points)
    }


def machine_ratios(held: list[RealPoint], campaign: list[RealPoint]) -> dict[str, dict]:
    """This machine's measurement over the campaign machine's, per shape measured on both."""
    first = {p.key: p for p in campaign}
    return {
        p.study: {m: p.measured[m] / first[p.key].measured[m] for m in METRICS if m in p.measured}
        for p in held
        if p.key in first
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", default=CAMPAIGN)
    parser.add_argument("--held", default=HELD)
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    held = load_points([args.held])
    campaign = load_points([args.campaign])
    held_configs = {p.config_key for p in held}
    train = [p for p in campaign if p.config_key not in held_configs]
    fitted = fit_and_predict(train, held)
    shipped = {p.label: predict(p) for p in held}
    result = {
        "held_out": args.held,
        "fitted_on": args.campaign,
        "train_points": len(train),
        "held_points": len(held),
        "fitted": errors(held, fitted),
        "shipped": errors(held, shipped),
        "machine_ratios": machine_ratios(
            held, [p for p in campaign if p.config_key in held_configs]
        ),
        "note": "fitted on the campaign's other configs (one H200), predicting the held config "
        "measured on another H200: config and machine both held out",
    }
    print(f"{len(held)} held points, fit on {len(train)}: median / worst abs % error")
    for m in result["fitted"]:
        f, s = result["fitted"][m], result["shipped"][m]
        print(
            f"  {m:20s} fitted {f['median']:6.1f} / {f['worst']:6.1f}   "
            f"shipped {s['median']:6.1f} / {s['worst']:6.1f}"
        )
    for shape, ratios in result["machine_ratios"].items():
        print(
            f"  {shape}: this machine / campaign machine",
            {m: round(v, 3) for m, v in ratios.items()},
        )
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
