"""Fit the sim engine's efficiency constants to real measurements, and write a fitted profile.

Real measurements are the data (:mod:`tuner.calibration.points` loads them, with the side files that say
what each number means): each point's config (through the engine's ``plan()``, exactly as the sim
costs it) and its measured throughput, TTFT p50/p99 and TPOT p50/p99. The fit is a regularised least squares in log space:

    minimise  sum_points,metrics  rho(sqrt(w_m) * log(pred / measured) / sigma_meas)
            + sum_constants       rho((log c - log c_shipped) / sigma_c)

with rho the soft-L1 loss (quadratic within one sigma, linear beyond), sigma_meas the run-to-run
spread of a measurement (5%) and sigma_c how far the shipped estimate may plausibly be off,
so with little data the constants stay near the shipped profile (the prior), and a constant no
training config exercises (fp8 compute with only bf16 trials, all-reduce on one GPU) is not fitted
at all: its column of the Jacobian is zero and it is left out, named in ``not_identified``.

What to watch: a fitted profile is one engine on one GPU (the profile file has no GPU key), so
calibration refuses a mix. The fit can only absorb level errors; structural errors of the
scheduler (e.g. how closed-loop waves bunch prefills, which drives TTFT p50) stay, and are what
the fidelity report exposes.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from engines import EngineError, get_engine
from engines.errors import SpecError
from engines.sim.profiles import FITTED_DIR, EngineProfile, load_profile
from tuner.calibration.points import METRICS, RealPoint, load_points

__all__ = ["METRICS", "RealPoint", "load_points", "calibrate", "fit_constants", "predict"]

log = logging.getLogger(__name__)

# TTFT carries less weight: in closed-loop runs it is mostly queueing, set by how the scheduler
# bunches arrivals, which no efficiency constant can fix; weighting it fully would drag the
# decode constants to paper over a structural error.
METRIC_WEIGHTS = {
    "output_tokens_per_s": 1.0,
    "tpot_p50_ms": 1.0,
    "tpot_p99_ms": 0.5,
    "ttft_p50_ms": 0.25,
    "ttft_p99_ms": 0.5,
}
# Constants the fit may move, with the prior's spread in log space (0.3 ~ "within +-35%").
PRIOR_SIGMA = {
    "prefill_mfu": 0.3,
    "decode_bw_efficiency": 0.2,
    "step_overhead_graph_s": 0.7,
    "step_overhead_eager_s": 0.7,
    "step_overhead_per_seq_s": 1.0,
    "eager_launch_s_per_layer": 0.7,
    "weight_only_compute_efficiency": 0.3,
    "allreduce_efficiency": 0.3,
    "allreduce_latency_s": 0.7,
    "compute_efficiency.fp8": 0.3,
    "compute_efficiency.int8": 0.3,
    "weight_bandwidth_efficiency.int4": 0.3,
    "kv_bandwidth_efficiency.fp8": 0.3,
    "admission_delay_s": 1.0,
    "admission_delay_per_stream_s": 1.0,
    "eager_per_seq_s": 1.0,
    "eager_step_s": 1.0,
    "kv_per_seq_s.fp8": 1.0,
    "prefix_reads_shared": 1.0,
}
# Where the prior of a constant shipped at 0 (off) is centred: a log-space fit needs a positive
# start. 50 ms: a busy Python API server's latency per request, before any data.
# Without CUDA graphs: 2 ms more a step (the uncompiled model's unfused kernels) and 0.1 ms per
# sequence (per-request attention metadata on the CPU); 5 us per sequence for a dequantising
# attention path's extra setup; half the shared prefix's reads saved, before any data.
# 0.1 ms more admission per open stream: 256 streams add ~25 ms, the H100 fit's order.
PRIOR_CENTER = {
    "admission_delay_s": 0.05,
    "admission_delay_per_stream_s": 1e-4,
    "eager_per_seq_s": 1e-4,
    "eager_step_s": 2e-3,
    "kv_per_seq_s.fp8": 5e-6,
    "prefix_reads_shared": 0.5,
}
UPPER = {
    "prefill_mfu": 0.95,
    "decode_bw_efficiency": 0.98,
    "allreduce_efficiency": 0.95,
    "prefix_reads_shared": 1.0,  # a share: reads saved cannot exceed the reads
}
# Run-to-run spread of a real measurement in log space: the warm and cold-start runs of the
# H100 baseline differ by 0.3% (throughput) to 4% (TTFT p50); 5% leaves room for other hosts.
MEASUREMENT_SIGMA = 0.05
IDENTIFIED_MIN = 1e-3  # |d log metric / d log constant| summed over the data, below: not fitted


# ------------------------------------------------------------------------------ predicting


def predict(point: RealPoint, profile: str | None = None) -> dict[str, float]:
    """The sim's metrics for a point's config and workload (NaN everywhere if it cannot fit)."""
    engine = get_engine(point.engine, "sim", profile)
    try:
        metrics = engine.run(point.config, point.ctx).metrics()
    except EngineError as exc:
        log.warning("sim cannot run %s: %s", point.label, exc)
        return dict.fromkeys(METRICS, math.nan)
    return {m: float(metrics.get(m, math.nan)) for m in METRICS}


def _get(profile: EngineProfile, name: str) -> float | None:
    head, _, sub = name.partition(".")
    value = getattr(profile, head)
    return value.get(sub) if sub else value


def with_constants(base: EngineProfile, values: Mapping[str, float]) -> dict[str, Any]:
    """The full constants of ``base`` with ``values`` (dotted names for per-dtype maps) set."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        head, _, sub = name.partition(".")
        if sub:
            out.setdefault(head, dict(getattr(base, head)))[sub] = float(value)
        else:
            out[head] = float(value)
    return out


class _ProfileFiles:
    """Candidate profiles as files, so the fit costs them through the same loader users do."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.dir = tempfile.TemporaryDirectory(prefix="servetune-calibrate-")
        self.count = itertools.count()

    def write(self, constants: Mapping[str, Any]) -> str:
        path = Path(self.dir.name) / f"candidate-{next(self.count)}.yaml"
        path.write_text(yaml.safe_dump({"base": self.engine, "name": "candidate", **constants}))
        return str(path)


# ------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class Calibration:
    """A fitted profile and how it was reached."""

    name: str
    engine: str
    gpu: str
    shipped: dict[str, float]  # prior values of the fitted constants
    fitted: dict[str, float]
    not_identified: list[str]
    train: list[RealPoint]
    test: list[RealPoint]
    constants: dict[str, Any]  # full constants to write (per-dtype maps complete)
    fit_errors: dict[str, dict[str, float]]  # split -> metric -> median APE (%)
    predictions: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> metrics


def split_points(
    points: Sequence[RealPoint], holdout: float, seed: int
) -> tuple[list[RealPoint], list[RealPoint]]:
    """Hold out ``holdout`` of the configs (measurements of one config, at every load, stay
    together).

    At least one config is kept for training, so one config gives an empty held-out set.
    """
    keys = sorted({p.config_key for p in points})
    rng = np.random.default_rng(seed)
    order = [keys[i] for i in rng.permutation(len(keys))]
    n_test = min(int(math.floor(holdout * len(keys) + 0.5)), len(keys) - 1)
    test_keys = set(order[:n_test])
    train = [p for p in points if p.config_key not in test_keys]
    return train, [p for p in points if p.config_key in test_keys]


def _residuals(points, files, base, names, z, sigma, x0, prior_weight) -> np.ndarray:
    values = {n: float(np.exp(x0[i] + sigma[i] * z[i])) for i, n in enumerate(names)}
    path = files.write(with_constants(base, values))
    out, cache = [], {}
    for p in points:
        replay = (p.key, p.ctx.workload.model_dump_json())  # repeat measurements: one sim run
        pred = cache[replay] = cache.get(replay) or predict(p, path)
        for m in METRICS:
            if m in p.measured and p.measured[m] > 0:
                r = math.log(max(pred[m], 1e-9) / p.measured[m]) if math.isfinite(pred[m]) else 5.0
                out.append(math.sqrt(METRIC_WEIGHTS[m]) * r / MEASUREMENT_SIGMA)
    return np.concatenate([np.array(out), prior_weight * np.asarray(z, float)])


def fit_constants(
    points: Sequence[RealPoint],
    base: EngineProfile,
    names: Sequence[str] | None = None,
    prior_weight: float = 1.0,
) -> tuple[dict[str, float], list[str]]:
    """Fitted values of the identifiable constants among ``names``; and those left out.

    With no points the prior is the answer: nothing is fitted.
    """
    from scipy.optimize import least_squares

    candidates = [
        n
        for n in (names or PRIOR_SIGMA)
        if _get(base, n) is not None and (_get(base, n) or n in PRIOR_CENTER)
    ]
    if not points:
        return {}, list(candidates)
    files = _ProfileFiles(points[0].engine)
    x0 = np.log([_get(base, n) or PRIOR_CENTER[n] for n in candidates])
    sigma = np.array([PRIOR_SIGMA.get(n, 0.3) for n in candidates])
    f = _residuals(points, files, base, candidates, np.zeros(len(candidates)), sigma, x0, 0.0)
    step = 0.05
    sens = []
    for i in range(len(candidates)):
        z = np.zeros(len(candidates))
        z[i] = step
        f_i = _residuals(points, files, base, candidates, z, sigma, x0, 0.0)
        sens.append(float(np.abs(f_i - f).sum() / (step * sigma[i])))
    keep = [i for i, s in enumerate(sens) if s > IDENTIFIED_MIN]
    dropped = [candidates[i] for i in range(len(candidates)) if i not in keep]
    if not keep:
        return {}, dropped
    names_kept = [candidates[i] for i in keep]
    x0k, sk = x0[keep], sigma[keep]
    caps = [UPPER.get(n, 1.0) if "efficiency" in n or n in UPPER else math.inf for n in names_kept]
    upper = np.maximum((np.log(caps) - x0k) / sk, 1e-6)  # efficiencies stay fractions
    log.info("fitting %s to %d measurements", ", ".join(names_kept), len(points))
    result = least_squares(
        lambda z: _residuals(points, files, base, names_kept, z, sk, x0k, prior_weight),
        np.zeros(len(keep)),
        bounds=(np.full(len(keep), -6.0), upper),
        diff_step=1e-2,
        loss="soft_l1",  # beyond one sigma errors count linearly: a structural miss cannot rule
        f_scale=1.0,
        max_nfev=60,
    )
    fitted = {n: float(np.exp(x0k[j] + sk[j] * result.x[j])) for j, n in enumerate(names_kept)}
    return fitted, dropped


def _ape(pred: float, measured: float) -> float:
    return abs(pred - measured) / abs(measured) * 100.0 if measured else math.nan


def _median_errors(points: Sequence[RealPoint], preds: Mapping[str, Mapping[str, float]]):
    out = {}
    for m in METRICS:
        errs = [_ape(preds[p.label][m], p.measured[m]) for p in points if m in p.measured]
        out[m] = float(np.nanmedian(errs)) if errs else math.nan
    return out


def calibrate(
    points: Sequence[RealPoint],
    name: str,
    holdout: float = 0.3,
    seed: int = 0,
    names: Sequence[str] | None = None,
    prior_weight: float = 1.0,
) -> Calibration:
    """Fit one engine's constants on a training split of ``points``; score both splits."""
    engines = {p.engine for p in points}
    gpus = {(p.ctx.hardware.gpu, p.ctx.hardware.count) for p in points}
    if len(engines) != 1 or len({g for g, _ in gpus}) != 1:
        raise SpecError(
            f"calibrate: one engine on one GPU type per profile; got engines {sorted(engines)}, "
            f"GPUs {sorted(g for g, _ in gpus)}"
        )
    engine = engines.pop()
    base = load_profile(engine)
    train, test = split_points(points, holdout, seed)
    fitted, dropped = fit_constants(train, base, names, prior_weight)
    constants = with_constants(base, fitted)
    files = _ProfileFiles(engine)
    path = files.write(constants)
    preds = {p.label: predict(p, path) for p in points}
    return Calibration(
        name=name,
        engine=engine,
        gpu=next(iter(gpus))[0],
        shipped={n: float(_get(base, n)) for n in fitted},
        fitted=fitted,
        not_identified=dropped,
        train=list(train),
        test=list(test),
        constants=constants,
        fit_errors={
            "train": _median_errors(train, preds),
            "holdout": _median_errors(test, preds) if test else {},
        },
        predictions=preds,
    )


# ------------------------------------------------------------------------------ writing


def profile_document(cal: Calibration) -> dict[str, Any]:
    """The fitted profile as the data file :mod:`engines.sim.profiles` loads.

    The calibration record lives under ``source`` (the loader ignores it): the studies, trials,
    which measurement each used, the fit errors, and the constants left at the shipped value.
    """

    def cite(n: str) -> str:
        return f"fitted to {len(cal.train)} real measurement(s); shipped {cal.shipped[n]:.6g}"

    doc: dict[str, Any] = {
        "name": cal.name,
        "base": cal.engine,
        "description": f"{cal.engine} on {cal.gpu}, calibrated by servetune calibrate",
    }
    for n, value in cal.fitted.items():
        head, _, sub = n.partition(".")
        if sub:
            doc.setdefault(head, dict(cal.constants[head]))[sub] = {
                "value": float(f"{value:.5g}"),
                "source": cite(n),
            }
        else:
            doc[head] = {"value": float(f"{value:.5g}"), "source": cite(n)}
    doc["source"] = {
        "method": "regularised log least squares toward the shipped profile (tuner/calibration/calibrate.py)",
        "gpu": cal.gpu,
        "studies": sorted({p.study for p in cal.train + cal.test}),
        "train": [_point_ref(p) for p in cal.train],
        "holdout": [_point_ref(p) for p in cal.test],
        "not_identified": cal.not_identified,
        "fit_errors_median_ape_pct": {
            split: {m: round(v, 2) for m, v in errs.items()}
            for split, errs in cal.fit_errors.items()
        },
    }
    return doc


def _point_ref(p: RealPoint) -> dict[str, Any]:
    ref = {"study": p.study, "trial": p.trial, "storage": p.storage, "measured_by": p.measured_by}
    if p.source:
        ref["source"] = p.source
    if p.set_aside:
        ref["set_aside"] = sorted(p.set_aside)
    return ref


def write_profile(cal: Calibration, out: Path | None = None) -> Path:
    """Write the fitted profile (default ``engines/data/profiles/NAME.yaml``); return its path."""
    path = out or FITTED_DIR / f"{cal.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Fitted sim profile written by `servetune calibrate`; see docs/calibration.md.\n"
        "# Load it with sim_profile: <name> (or the path); constants not listed come from base.\n"
    )
    path.write_text(header + yaml.safe_dump(profile_document(cal), sort_keys=False))
    return path
