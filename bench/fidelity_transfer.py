"""Transfer between GPUs: a profile fitted on one GPU's real points predicting another's.

    python -m bench.fidelity_transfer [--h100 DB ...] [--h200 DB ...] [--json PATH]

Defaults: the H100 study and its cold-start re-measurement (10 configs, 1024 in / 256 out) and
the H200 calibration campaign (7 configs x 5 shapes). Two fits (one per GPU, every constant
calibration may move), each predicting the other GPU's points, scored next to the shipped
profile on the same points: median / worst absolute % error per metric. The same predictors
appear in ``servetune fidelity`` given both GPUs' data; this runs only them (two fits instead
of a full report's dozens).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuner.calibration.calibrate import METRICS, load_points, predict
from tuner.calibration.holdout import transfer
from tuner.calibration.stats import ape, error_stats

H100 = ["studies/real/h100-llama8b-vllm.db", "studies/real/cold-start/h100-llama8b-vllm.db"]
H200 = ["studies/real/h200/campaign/h200-fidelity-campaign.db"]
OUT = Path("bench/results/fidelity-transfer-campaign.json")


def _summary(points, preds) -> dict[str, dict]:
    return {
        m: error_stats([ape(preds[p.label][m], p.measured[m]) for p in points if m in p.measured])
        for m in METRICS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h100", nargs="*", default=H100)
    parser.add_argument("--h200", nargs="*", default=H200)
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    points = load_points([*args.h100, *args.h200])
    by_gpu: dict[str, list] = {}
    for p in points:
        by_gpu.setdefault(p.ctx.hardware.gpu, []).append(p)
    result = {"studies": [*args.h100, *args.h200], "points": {g: len(v) for g, v in by_gpu.items()}}
    shipped = {p.label: predict(p) for p in points}
    for name, preds in transfer(points).items():
        targets = [p for p in points if p.label in preds]
        gpu = targets[0].ctx.hardware.gpu
        result[name] = {
            "predicts": gpu,
            "summary": _summary(targets, preds),
            "shipped_on_the_same_points": _summary(targets, shipped),
        }
        print(f"{name} -> {gpu} ({len(targets)} points): median / worst abs % error")
        for m in METRICS:
            t, s = result[name]["summary"][m], result[name]["shipped_on_the_same_points"][m]
            print(
                f"  {m:20s} transfer {t['median']:6.1f} / {t['worst']:6.1f}   "
                f"shipped {s['median']:6.1f} / {s['worst']:6.1f}"
            )
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
