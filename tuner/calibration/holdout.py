"""Held-out predictors: which real points a profile is fitted on, and which points it predicts.

Each predictor fits the sim's constants (:func:`~.calibrate.fit_constants`) on some points and
predicts others it never saw:

* :func:`leave_one_out` (reported as leave-one-config-out): each config, at every load it was
  measured at, predicted by a fit on the other configs;
* :func:`leave_one_shape_out`: each workload shape predicted by a fit on the other shapes;
* :func:`transfer`: every point of one GPU predicted by a fit on all points of another.

A fitted profile is one engine on one GPU type (:func:`profile_groups`), so the first two run
within such a group; a shape is a GPU and a whole workload (:func:`shape_key`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from engines.sim.profiles import load_profile
from engines.workload import Arrival, LengthDist, WorkloadSpec
from tuner.calibration.calibrate import (
    RealPoint,
    _ProfileFiles,
    fit_constants,
    predict,
    with_constants,
)

log = logging.getLogger(__name__)

TRANSFER = "transfer (fitted on {})"  # .format(the GPU the profile was fitted on)

Predictions = dict[str, dict[str, float]]  # point label -> metric -> predicted value

# ------------------------------------------------------------------------------ identities


def profile_groups(points: Sequence[RealPoint]) -> dict[str, list[RealPoint]]:
    """Points by the profile that can be fitted to them (one engine on one GPU type), named by
    the GPU (with the engine, when there are several)."""
    engines = {p.engine for p in points}
    out: dict[str, list[RealPoint]] = {}
    for p in points:
        name = p.ctx.hardware.gpu if len(engines) == 1 else f"{p.engine} on {p.ctx.hardware.gpu}"
        out.setdefault(name, []).append(p)
    return out


def _workload_key(point: RealPoint) -> str:
    """Identity of a point's whole workload: lengths, arrival (load level included), shared
    prefix and dataset; not the request count or warmup, which a re-measurement may change."""
    w = point.ctx.workload
    ident = [w.input_tokens, w.output_tokens, w.arrival, w.shared_prefix_fraction, w.dataset]
    return json.dumps(ident, sort_keys=True, default=str)


def shape_key(point: RealPoint) -> str:
    """Identity of a point's workload shape: its GPU type and whole workload."""
    return json.dumps([point.ctx.hardware.gpu, _workload_key(point)])


def load_label(arrival: Arrival) -> str:
    """'concurrency 256', 'poisson 4/s'."""
    if arrival.kind == "concurrency":
        return f"concurrency {arrival.concurrency}"
    return f"{arrival.kind} {arrival.rate:g}/s"


def _length_label(dist: LengthDist) -> str:
    if dist.kind == "fixed":
        return str(dist.value)
    if dist.kind == "uniform":
        return f"{dist.low}-{dist.high}"
    return f"{dist.kind} mean {dist.mean:g}"


def workload_label(w: WorkloadSpec) -> str:
    """'1024 in / 256 out, concurrency 256' (with the shared prefix and dataset, if any)."""
    parts = [f"{_length_label(w.input_tokens)} in / {_length_label(w.output_tokens)} out"]
    parts.append(load_label(w.arrival))
    if w.shared_prefix_fraction:
        parts.append(f"{w.shared_prefix_fraction:.0%} shared prefix")
    if w.dataset:
        parts.append(f"dataset {Path(w.dataset).name}")
    return ", ".join(parts)


def shape_labels(points: Sequence[RealPoint]) -> dict[str, str]:
    """Point label -> the name of its shape, 'H200: 1024 in / 256 out, concurrency 256'; two
    shapes the name cannot tell apart (burstiness, length caps) are numbered."""
    names: dict[str, str] = {}
    out = {}
    for p in points:
        key = shape_key(p)
        if key not in names:
            name = base = f"{p.ctx.hardware.gpu}: {workload_label(p.ctx.workload)}"
            n = 2
            while name in names.values():
                name, n = f"{base} ({n})", n + 1
            names[key] = name
        out[p.label] = names[key]
    return out


# ------------------------------------------------------------------------------ predictors


def fit_and_predict(
    train: Sequence[RealPoint],
    targets: Sequence[RealPoint],
    prior_weight: float = 1.0,
    names: Sequence[str] | None = None,
) -> Predictions:
    """``targets`` predicted by a profile fitted on ``train`` (the shipped one if it is empty)."""
    engine = targets[0].engine
    base = load_profile(engine)
    log.info("fitting on %d point(s) to predict %d", len(train), len(targets))
    fitted, _ = fit_constants(train, base, names, prior_weight=prior_weight)
    files = _ProfileFiles(engine)  # held until the predictions are made: it owns the file
    path = files.write(with_constants(base, fitted))
    return {p.label: predict(p, path) for p in targets}


def leave_one_out(
    points: Sequence[RealPoint], prior_weight: float = 1.0, names: Sequence[str] | None = None
) -> Predictions:
    """Each point predicted by a profile fitted on the other configs (shipped when none); a
    config measured at several loads is left out at all of them (leave-one-config-out)."""
    out: Predictions = {}
    for key in sorted({p.config_key for p in points}):
        held = [p for p in points if p.config_key == key]
        rest = [p for p in points if p.config_key != key]
        out |= fit_and_predict(rest, held, prior_weight, names)
    return out


def leave_one_shape_out(
    points: Sequence[RealPoint], prior_weight: float = 1.0, names: Sequence[str] | None = None
) -> Predictions:
    """Each workload shape's points predicted by a profile fitted on the other shapes' points
    only; nothing (``{}``) with fewer than two shapes, where there is nothing else to fit on."""
    shapes = shape_labels(points)
    if len(set(shapes.values())) < 2:
        return {}
    out: Predictions = {}
    for shape in sorted(set(shapes.values())):
        held = [p for p in points if shapes[p.label] == shape]
        rest = [p for p in points if shapes[p.label] != shape]
        out |= fit_and_predict(rest, held, prior_weight, names)
    return out


def transfer(
    points: Sequence[RealPoint], prior_weight: float = 1.0, names: Sequence[str] | None = None
) -> dict[str, Predictions]:
    """Predictor name (:data:`TRANSFER`) -> predictions: for each GPU, a profile fitted on all
    of its points predicting every point of the same engine measured on another GPU."""
    out: dict[str, Predictions] = {}
    for name, train in profile_groups(points).items():
        engine, gpu = train[0].engine, train[0].ctx.hardware.gpu
        others = [p for p in points if p.engine == engine and p.ctx.hardware.gpu != gpu]
        if others:
            out[TRANSFER.format(name)] = fit_and_predict(train, others, prior_weight, names)
    return out
