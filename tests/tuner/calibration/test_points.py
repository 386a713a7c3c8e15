"""Which real numbers become calibration data: cross-checks tie to one server, protocols set aside."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tuner.calibration.points import (
    Reference,
    load_points,
    measurement_protocols,
    reference_measurements,
)

ROOT = Path(__file__).resolve().parents[3]
REAL = ROOT / "studies" / "real"
ARGV = ("vllm", "serve", "m", "--host", "127.0.0.1", "--port", "55071", "--max-num-seqs", "1024")


def test_reference_ties_to_one_server_and_one_measurement():
    ref = Reference(ARGV, {"output_tokens_per_s": 5400.0}, {"output_tokens_per_s": 4300.0})
    assert ref.matches(ARGV, {"output_tokens_per_s": 4300.0})
    other_port = tuple("45201" if a == "55071" else a for a in ARGV)
    assert not ref.matches(other_port, {"output_tokens_per_s": 4300.0})  # same config, other run
    assert not ref.matches(ARGV, {"output_tokens_per_s": 5372.0})  # same server, other measurement


def test_crosscheck_without_server_is_tied_to_nothing(tmp_path):
    (tmp_path / "crosscheck.json").write_text(
        json.dumps({"server_argv": None, "metrics": {"output_tokens_per_s": {}}})
    )
    assert reference_measurements(tmp_path) == []


def test_protocols_reject_unknown_metrics(tmp_path):
    (tmp_path / "protocols.yaml").write_text("s: {set_aside: {ttft_p42_ms: why}}\n")
    with pytest.raises(Exception, match="ttft_p42_ms"):
        measurement_protocols(tmp_path)


@pytest.fixture(scope="module")
def real_points():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return load_points(
        [str(REAL / "h100-llama8b-vllm.db"), str(REAL / "cold-start/h100-llama8b-vllm.db")]
    )


def test_session_two_trials_keep_their_own_numbers_with_protocol_medians_set_aside(real_points):
    study = [p for p in real_points if p.label.endswith("@real")]
    assert len(study) == 10 and all(p.measured_by == "servetune loadgen" for p in study)
    for p in study:
        assert set(p.set_aside) == {"ttft_p50_ms", "tpot_p50_ms"}
        assert set(p.measured) == {"output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms"}
        assert p.ctx.workload.warmup_requests == 0  # replayed as the clean protocol
    trial0 = next(p for p in study if p.trial == 0)
    assert trial0.measured["output_tokens_per_s"] == pytest.approx(5372.06, abs=0.01)


def test_cold_start_takes_its_own_servers_bench_numbers(real_points):
    (cold,) = [p for p in real_points if "@cold-start" in p.label]
    assert cold.measured_by == "vllm bench serve" and not cold.set_aside
    assert cold.measured["output_tokens_per_s"] == pytest.approx(5432.0, abs=0.1)


def test_finalists_are_extra_points_of_their_trials_config(real_points):
    again = {p.trial: p for p in real_points if p.source}
    assert set(again) == {0, 3}
    study = {p.trial: p for p in real_points if p.label.endswith("@real")}
    for trial, p in again.items():
        assert p.key == study[trial].key and len(p.measured) == 5 and not p.set_aside
    assert again[0].measured["ttft_p50_ms"] == pytest.approx(1654.07, abs=0.01)


def test_h200_grid_trials_load_and_only_its_clean_finalists_join_them(caplog):
    """The H200 replay of the H100 configs: twelve trials (six configs at concurrency 256 then
    64), plus the clean re-measurements (fresh prompts each run): session 4's of trials 0 and 2,
    session 5's of trials 0 and 8 (8 twice, on two servers). The session-3 finalize files are set
    aside: their repeats re-sent prompts and hit vLLM's prefix cache."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with caplog.at_level("INFO", logger="tuner.calibration.points"):
        points = load_points([str(REAL / "h200" / "h200-llama8b-vllm-grid.db")])
    study = sorted((p for p in points if not p.source), key=lambda p: p.trial)
    assert [p.trial for p in study] == list(range(12))
    assert {p.ctx.hardware.gpu for p in points} == {"H200"}
    assert [p.ctx.workload.arrival.concurrency for p in study] == [256, 64] * 6
    again = sorted(
        (Path(p.source).parent.name, Path(p.source).name, p.trial) for p in points if p.source
    )
    assert again == [
        ("session4-finalize", "finalists-baseline.json", 0),
        ("session4-finalize", "finalists-winner.json", 2),
        ("session5-finalize", "finalists-baseline.json", 0),
        ("session5-finalize", "finalists-winner-run2.json", 8),
        ("session5-finalize", "finalists-winner.json", 8),
    ]
    for p in (p for p in points if p.source):
        assert p.key == study[p.trial].key and not p.set_aside
    assert "set aside: runs 2-5 re-sent" in caplog.text


def test_finalists_of_another_study_are_not_this_studys_points(tmp_path, real_points):
    """A finalize file naming another study is ignored even where trial numbers and configs
    match (the H200 grid's trial 0 is the H100 study's trial 0 config)."""
    import shutil

    shutil.copy(REAL / "h100-llama8b-vllm.db", tmp_path / "h100-llama8b-vllm.db")
    (tmp_path / "x-finalize").mkdir()
    data = json.loads((REAL / "h100-finalize" / "finalists-baseline.json").read_text())
    (tmp_path / "x-finalize" / "finalists-a.json").write_text(json.dumps(data))
    (tmp_path / "x-finalize" / "finalists-b.json").write_text(
        json.dumps({**data, "study": "another-study"})
    )
    points = load_points([str(tmp_path / "h100-llama8b-vllm.db")], reference=False)
    assert [Path(p.source).name for p in points if p.source] == ["finalists-a.json"]
