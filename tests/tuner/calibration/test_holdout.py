"""Leave-one-shape-out, transfer and the whole fidelity report on real H200 and H100 points.

A fit runs the sim many times (a few seconds per fit on 2 cores with one constant), so the fits
here move ``prefill_mfu`` only, on few points; the report test stands a counting fake in for the
fit, as its subject is which points each predictor is fitted on and which it predicts.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from engines.sim.profiles import load_profile
from tuner.calibration import holdout
from tuner.calibration.calibrate import _ProfileFiles, fit_constants, predict, with_constants
from tuner.calibration.fidelity import (
    HELD_OUT,
    IN_SAMPLE,
    LOO,
    LOSO,
    SHIPPED,
    TRANSFER,
    fidelity_report,
)
from tuner.calibration.points import load_points
from tuner.calibration.report import report_markdown

REAL = Path(__file__).resolve().parents[3] / "studies" / "real"
NAMES = ["prefill_mfu"]  # one constant: fast, and it moves differently per shape


@pytest.fixture(scope="module")
def h200():
    """The H200 grid's trials 0-3 (two configs, each at concurrency 256 and 64) and the
    re-measurements of trials 0 and 2: two shapes, the 256 one with repeated configs."""
    points = load_points([str(REAL / "h200" / "h200-llama8b-vllm-grid.db")])
    return [p for p in points if p.trial in (0, 1, 2, 3)]


@pytest.fixture(scope="module")
def h100():
    """Session 1's cold-start defaults on an H100 (measured by vllm bench serve)."""
    return load_points([str(REAL / "cold-start" / "h100-llama8b-vllm.db")])


@pytest.fixture
def fits(monkeypatch):
    """Each held-out fit's training points and result, in call order (the real fit runs)."""
    calls = []

    def spy(points, *args, **kwargs):
        fitted, dropped = fit_constants(points, *args, **kwargs)
        calls.append(({p.label for p in points}, fitted))
        return fitted, dropped

    monkeypatch.setattr(holdout, "fit_constants", spy)
    return calls


def _predict_with(point, fitted):
    files = _ProfileFiles(point.engine)
    return predict(point, files.write(with_constants(load_profile(point.engine), fitted)))


def _with_workload(point, **changes):
    ctx = dataclasses.replace(point.ctx, workload=point.ctx.workload.model_copy(update=changes))
    return dataclasses.replace(point, ctx=ctx)


def test_a_shape_is_the_whole_workload_on_one_gpu(h200):
    p = h200[0]
    same = [_with_workload(p, warmup_requests=0), _with_workload(p, num_requests=17)]
    assert {holdout.shape_key(q) for q in [p, *same]} == {holdout.shape_key(p)}
    arrival = p.ctx.workload.arrival.model_copy(update={"concurrency": 8})
    h100 = p.ctx.hardware.model_copy(update={"gpu": "H100-SXM"})
    others = [
        _with_workload(p, shared_prefix_fraction=0.5),
        _with_workload(p, dataset="prompts.jsonl"),
        _with_workload(p, arrival=arrival),
        dataclasses.replace(p, ctx=dataclasses.replace(p.ctx, hardware=h100)),
    ]
    others = [dataclasses.replace(q, trial=100 + i) for i, q in enumerate(others)]
    assert len({holdout.shape_key(q) for q in [p, *others]}) == 5
    labels = holdout.shape_labels([p, *others])
    assert [labels[q.label] for q in [p, *others]] == [
        "H200: 1024 in / 256 out, concurrency 256",
        "H200: 1024 in / 256 out, concurrency 256, 50% shared prefix",
        "H200: 1024 in / 256 out, concurrency 256, dataset prompts.jsonl",
        "H200: 1024 in / 256 out, concurrency 8",
        "H100-SXM: 1024 in / 256 out, concurrency 256",
    ]


def test_leave_one_shape_out_predicts_each_shape_from_the_others_only(h200, fits):
    shapes = holdout.shape_labels(h200)
    assert len(set(shapes.values())) == 2
    predicted = holdout.leave_one_shape_out(h200, names=NAMES)
    assert set(predicted) == {p.label for p in h200}
    assert len(fits) == 2
    everything, _ = fit_constants(h200, load_profile("vllm"), NAMES)
    for trained_on, fitted in fits:
        (shape,) = {shapes[label] for label in trained_on}  # one shape's points, all of them
        assert trained_on == {label for label, s in shapes.items() if s == shape}
        assert fitted["prefill_mfu"] != pytest.approx(everything["prefill_mfu"], rel=1e-3)
        # the other shape's points carry exactly this fit's predictions
        for p in h200:
            if shapes[p.label] != shape:
                assert predicted[p.label] == pytest.approx(_predict_with(p, fitted))


def test_leave_one_shape_out_with_one_shape_fits_nothing(h200, fits):
    one = [p for p in h200 if p.ctx.workload.arrival.concurrency == 64]
    assert holdout.leave_one_shape_out(one, names=NAMES) == {} and fits == []


def test_transfer_fits_on_one_gpu_and_predicts_only_the_other(h200, h100, fits):
    h200 = [p for p in h200 if p.trial == 0]  # the defaults at 256, measured three times
    points = [*h200, *h100]
    predicted = holdout.transfer(points, names=NAMES)
    from_h200, from_h100 = TRANSFER.format("H200"), TRANSFER.format("H100-SXM")
    assert set(predicted) == {from_h200, from_h100}
    assert set(predicted[from_h200]) == {p.label for p in h100}
    assert set(predicted[from_h100]) == {p.label for p in h200}
    assert [trained for trained, _ in fits] == [{p.label for p in h200}, {p.label for p in h100}]
    fitted = fits[0][1]
    (target,) = h100
    assert predicted[from_h200][target.label] == pytest.approx(_predict_with(target, fitted))
    assert predicted[from_h200][target.label]["ttft_p99_ms"] != pytest.approx(
        predict(target)["ttft_p99_ms"], rel=1e-3
    )  # the fit moved the prediction off the shipped profile's
    assert holdout.transfer(h200, names=NAMES) == {}  # one GPU: nothing to transfer to


def test_report_on_two_gpus_and_two_shapes(h200, h100, monkeypatch):
    """The whole report, a cheap fake standing in for the fit: every predictor appears, each
    fitted one within its GPU, transfers across, and issue 25's targets are judged on all."""
    calls = []

    def fake(points, base, names=None, prior_weight=1.0):
        calls.append({p.ctx.hardware.gpu for p in points})
        return ({"prefill_mfu": 0.5 + 0.01 * len(points)} if points else {}), []

    monkeypatch.setattr(holdout, "fit_constants", fake)
    monkeypatch.setattr(
        importlib.import_module("tuner.calibration.calibrate"), "fit_constants", fake
    )
    points = [*h200, *h100]
    report = fidelity_report(points, holdout=0.5)
    assert all(len(gpus) <= 1 for gpus in calls)  # no fit mixes GPUs
    from_h200, from_h100 = TRANSFER.format("H200"), TRANSFER.format("H100-SXM")
    assert list(report.judged) == [SHIPPED, HELD_OUT, LOO, LOSO, from_h200, from_h100]
    assert IN_SAMPLE in report.summary and IN_SAMPLE not in report.judged
    gpu_of = {p.label: p.ctx.hardware.gpu for p in points}
    predicted = {(r["predictor"], gpu_of[r["point"]]) for r in report.rows}
    assert (from_h200, "H100-SXM") in predicted and (from_h200, "H200") not in predicted
    assert (from_h100, "H200") in predicted and (from_h100, "H100-SXM") not in predicted
    assert {gpu for predictor, gpu in predicted if predictor == LOSO} == {"H200"}
    assert any("Leave-one-shape-out (H100-SXM) skipped" in n for n in report.notes)
    # spreads: the 256 shape from its repeats (trial 0 three times, trial 2 twice), 64 unknown
    c256, c64 = (
        "H200: 1024 in / 256 out, concurrency 256",
        "H200: 1024 in / 256 out, concurrency 64",
    )
    assert 0 < report.spreads[c256]["output_tokens_per_s"] < 10
    assert report.spreads[c64]["output_tokens_per_s"] is None
    assert report.judged[SHIPPED]["output_tokens_per_s median"]["limit"] == 6.0
    assert report.judged[LOO]["output_tokens_per_s median"]["limit"] == 3.0
    doc = json.loads(json.dumps(report.to_dict(), default=str))
    assert set(doc["calibrations"]) == {"H200", "H100-SXM"} and "calibration" not in doc
    page = report_markdown(report)
    for heading in ("Run-to-run spread per shape", "Targets (issue 25)", LOSO, from_h100):
        assert heading in page
