"""The shareable HTML report: its numbers come from the study, its page needs no server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tuner.analysis.html_report import front_figure, render_html, report_data, write_report
from tuner.spec import parse_spec
from tuner.study.loop import run_study


@pytest.fixture(scope="module")
def study_and_spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    spec = parse_spec(
        {
            "name": "report",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 100},
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "slos": {"ttft_p99_ms": 3000},
            "budget": {"trials": 8},
            "storage": f"sqlite:///{folder}/report.db",
        }
    )
    return run_study(spec), spec, folder


def test_report_data_reads_the_front_baseline_and_winner(study_and_spec) -> None:
    study, spec, _ = study_and_spec
    data = report_data(study, spec)
    assert len(data.rows) == len(study.trials)
    assert data.estimated and data.winner is not None
    assert data.baseline is not None
    assert data.ratios[data.baseline]["output_tokens_per_s"] == pytest.approx(1.0)
    winner_row = next(r for r in data.rows if r["winner"])
    assert winner_row["trial"] == data.winner and winner_row["feasible"]
    assert "vllm_config.yaml" in data.winner_files
    assert data.winner_command.startswith("vllm serve")


def test_the_front_shows_the_slo_it_is_bounded_by(study_and_spec) -> None:
    study, spec, _ = study_and_spec
    fig = front_figure(report_data(study, spec))
    lines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert [s.y0 for s in lines] == [3000]  # TTFT p99 is the y axis of the quickstart objectives


def test_the_page_is_self_contained_and_says_estimated(study_and_spec) -> None:
    study, spec, _ = study_and_spec
    page = render_html(report_data(study, spec))
    assert "ESTIMATED by the sim engine" in page
    assert not re.search(r"<script[^>]+src=", page), "the page must not load scripts from a server"
    assert "Plotly.newPlot" in page
    assert page.count("<tr>") == len(study.trials) + 1


def test_cli_writes_the_report_and_names_a_missing_study(study_and_spec, tmp_path) -> None:
    study, spec, folder = study_and_spec
    out = tmp_path / "r" / "report.html"
    storage = f"sqlite:///{folder}/report.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner",
            "report",
            "report",
            "--html",
            str(out),
            "--storage",
            storage,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert write_report(study, spec, tmp_path / "again.html").stat().st_size > 100_000
