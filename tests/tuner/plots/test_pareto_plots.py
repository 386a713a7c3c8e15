import math

import optuna
import plotly.graph_objects as go
import pytest

from engines.errors import StudyError
from tuner.analysis.results import TrialRecord, pareto_front
from tuner.plots import (
    GREY_DOMINATED,
    GREY_INFEASIBLE,
    WINNER_COLOR,
    hover_text,
    param_importances,
    plot_convergence,
    plot_fronts_overlay,
    plot_importance,
    plot_latency_percentiles,
    plot_parallel_coordinates,
    plot_pareto,
    plot_pareto_3d,
    save_figure,
)

XY = ["output_tokens_per_s", "ttft_p99_ms"]


def record(
    number,
    tput,
    ttft,
    engine="vllm",
    feasible=True,
    estimated=True,
    state="COMPLETE",
    precision="bf16",
    **config,
):
    metrics = {
        "output_tokens_per_s": tput,
        "ttft_p99_ms": ttft,
        "tpot_p99_ms": 30.0,
        "cost_per_mtok_usd": 1000.0 / max(tput, 1),
    }
    for lat in ("ttft", "tpot", "itl", "e2e"):
        for i, pct in enumerate(("p50", "p90", "p99")):
            metrics.setdefault(f"{lat}_{pct}_ms", 10.0 * (i + 1))
    return TrialRecord(
        number=number,
        state=state,
        engine=engine,
        config={"max_num_seqs": 64 * (number + 1), "enable_prefix_caching": True, **config},
        metrics=metrics if state == "COMPLETE" else {},
        feasible=feasible,
        estimated=estimated,
        precision=precision,
        gpus=1,
        reason=None,
        detail=None,
        baseline=False,
    )


@pytest.fixture
def records():
    return [
        record(0, 1000, 500),  # front
        record(1, 2000, 900),  # front, winner (max throughput)
        record(2, 900, 800),  # dominated by 0
        record(3, 3000, 5000, feasible=False),  # infeasible
        record(4, 500, 100, engine="trtllm"),  # front
        record(5, 0, 0, state="FAIL"),
    ]


def by_name(fig, prefix):
    return [t for t in fig.data if t.name.startswith(prefix)]


def test_pareto_has_grey_infeasible_and_dominated_a_front_line_and_the_winner(records):
    fig = plot_pareto(records, *XY)
    (infeasible,) = by_name(fig, "infeasible")
    (dominated,) = by_name(fig, "dominated")
    (front,) = by_name(fig, "Pareto front")
    (winner,) = by_name(fig, "winner")
    assert list(infeasible.customdata) == [3] and infeasible.marker.color == GREY_INFEASIBLE
    assert list(dominated.customdata) == [2] and dominated.marker.color == GREY_DOMINATED
    assert list(front.customdata) == [4, 0, 1]  # sorted along x for the line
    assert "lines" in front.mode
    assert list(winner.customdata) == [1] and winner.marker.color == WINNER_COLOR
    assert winner.marker.symbol == "star"


def test_pareto_labels_estimated_results(records):
    fig = plot_pareto(records, *XY)
    assert "estimated" in fig.layout.title.text
    assert "(estimated)" in by_name(fig, "Pareto front")[0].name
    measured = [record(0, 10, 10, estimated=False)]
    assert "estimated" not in plot_pareto(measured, *XY).layout.title.text


def test_hover_shows_config_and_key_metrics(records):
    fig = plot_pareto(records, *XY)
    text = by_name(fig, "winner")[0].hovertext[0]
    assert "trial 1" in text and "max_num_seqs = 128" in text
    assert "enable_prefix_caching = True" in text
    assert "output tokens/s: 2000" in text and "TTFT p99 (ms): 900" in text
    assert "estimated" in hover_text(records[0])


def test_pareto_from_a_front_result_keeps_its_winner_and_slos_refeasible(records):
    front = pareto_front(records, XY, slos={"ttft_p99_ms": 600})
    fig = plot_pareto(front)
    assert list(by_name(fig, "winner")[0].customdata) == [0]  # 1 now misses the SLO
    assert 1 in by_name(fig, "infeasible")[0].customdata


def test_pareto_colour_splits_the_front_by_group(records):
    fig = plot_pareto(records, *XY, color="engine")
    assert {t.name for t in by_name(fig, "front:")} == {"front: vllm", "front: trtllm"}
    assert by_name(fig, "Pareto front")[0].mode == "lines"


def test_pareto_without_feasible_trials_has_no_winner():
    fig = plot_pareto([record(0, 1, 1, feasible=False)], *XY)
    assert not by_name(fig, "winner") and len(by_name(fig, "Pareto front")[0].x) == 0


def test_pareto_3d(records):
    fig = plot_pareto_3d(records, *XY, z="cost_per_mtok_usd")
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    assert list(by_name(fig, "winner")[0].customdata) == [1]
    assert "config" in by_name(fig, "winner")[0].hovertext[0]


def test_parallel_coordinates_handles_categorical_and_missing_options(records):
    mixed = records + [record(6, 700, 300, engine="trtllm", max_batch_size=8)]
    fig = plot_parallel_coordinates(mixed, ["engine", "max_num_seqs", "max_batch_size"])
    (par,) = fig.data
    labels = [d.label for d in par.dimensions]
    assert labels == ["engine", "max_num_seqs", "max_batch_size", "output tokens/s"]
    assert list(par.dimensions[2].ticktext) == ["None", "8"]  # a missing option at the bottom
    assert len(par.dimensions[0].values) == 6  # completed trials only


def test_parallel_coordinates_defaults_to_varying_options(records):
    labels = [d.label for d in plot_parallel_coordinates(records).data[0].dimensions]
    assert "max_num_seqs" in labels and "enable_prefix_caching" not in labels


def test_latency_percentiles_one_bar_per_percentile_and_latency(records):
    fig = plot_latency_percentiles(records, [0, 1])
    assert len(fig.data) == 4 * 3
    assert list(fig.data[0].x) == ["#0 vllm", "#1 vllm"]
    with pytest.raises(StudyError):
        plot_latency_percentiles(records, [5])


def test_convergence_is_monotone_per_group(records):
    fig = plot_convergence(records, "output_tokens_per_s", by="engine")
    (vllm,) = [t for t in fig.data if t.name == "best so far: vllm"]
    assert list(vllm.y) == [1000, 2000, 2000]  # trial 3 is infeasible, not counted
    fig = plot_convergence({"nsga2": records, "random": records[:1]}, "ttft_p99_ms")
    assert {t.name for t in fig.data if t.mode == "lines"} == {
        "best so far: nsga2",
        "best so far: random",
    }


def test_fronts_overlay_draws_one_front_per_engine(records):
    fig = plot_fronts_overlay(records, by="engine")
    fronts = {t.name: list(t.x) for t in fig.data if t.mode == "lines+markers"}
    assert fronts == {"vllm front (estimated)": [1000, 2000], "trtllm front (estimated)": [500]}


def _study_with_metric(n):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(n):
        t = study.ask()
        a = t.suggest_int("vllm.max_num_seqs", 16, 512)
        b = t.suggest_categorical("vllm.kv_cache_dtype", ["auto", "fp8"])
        tput = a * 3.0 + (100 if b == "fp8" else 0)
        t.set_user_attr("metrics", {"output_tokens_per_s": tput, "ttft_p99_ms": 100.0})
        t.set_user_attr("engine", "vllm")
        t.set_user_attr("estimated", True)
        study.tell(t, [tput, 100.0])
    return study


def test_importance_ranks_the_option_that_drives_the_metric():
    imp = param_importances(_study_with_metric(20), "output_tokens_per_s", engine="vllm")
    assert max(imp, key=imp.get) == "vllm.max_num_seqs"
    fig = plot_importance(_study_with_metric(20), "output_tokens_per_s", engine="vllm")
    assert "max_num_seqs" in fig.data[0].y


def test_importance_with_too_few_trials_is_a_message_not_an_error():
    fig = plot_importance(_study_with_metric(2), "output_tokens_per_s")
    assert not fig.data and "at least 3" in fig.layout.annotations[0].text


def test_save_figure_writes_html_and_explains_png_without_kaleido(records, tmp_path):
    path = save_figure(plot_pareto(records), tmp_path / "front.html")
    assert "plotly" in path.read_text()[:5000].lower()
    try:
        import kaleido  # noqa: F401
    except ImportError:
        with pytest.raises(StudyError, match="kaleido"):
            save_figure(plot_pareto(records), tmp_path / "front.png")


def test_nan_metrics_do_not_break_plots():
    r = record(0, 100, 10)
    r.metrics["ttft_p99_ms"] = math.nan
    assert plot_pareto([r, record(1, 50, 5)], *XY).data


def test_fronts_overlay_skips_empty_groups_and_refuses_mixed_studies(records):
    fig = plot_fronts_overlay({"a": records, "b": [record(0, 1, 1, state="FAIL")]}, by=None)
    assert {t.name for t in fig.data if t.mode == "lines+markers"} == {"a front (estimated)"}
    with pytest.raises(StudyError, match="repeats trial numbers"):
        plot_fronts_overlay({"a": records + records[:1]})


def test_pareto_draws_intervals_of_repeated_trials_and_marks_the_baseline():
    """Real trials measured several times carry ``<metric>_ci_low/high``: the plot turns them
    into asymmetric error bars on both axes (zero for a trial without one); sim trials get none.
    The baseline is its own open-diamond trace, labelled with its trial number."""
    from dataclasses import replace

    base = replace(record(0, 5000.0, 900.0, estimated=False), baseline=True)
    ci = {"output_tokens_per_s_ci_low": 5800.0, "output_tokens_per_s_ci_high": 6300.0}
    ci |= {"ttft_p99_ms_ci_low": 450.0, "ttft_p99_ms_ci_high": 700.0}
    best = record(1, 6000.0, 500.0, estimated=False)
    best = replace(best, metrics={**best.metrics, **ci})
    plain = record(2, 6500.0, 800.0, estimated=False)
    fig = plot_pareto([base, best, plain], *XY)
    front = next(t for t in fig.data if t.name.startswith("Pareto front"))
    xs = list(front.x)
    i = xs.index(6000.0)
    assert front.error_x.array[i] == pytest.approx(300.0)
    assert front.error_x.arrayminus[i] == pytest.approx(200.0)
    assert front.error_y.array[i] == pytest.approx(200.0)
    assert front.error_y.arrayminus[i] == pytest.approx(50.0)
    assert front.error_x.array[xs.index(6500.0)] == 0.0
    (diamond,) = [t for t in fig.data if t.name == "baseline: trial 0"]
    assert list(diamond.x) == [5000.0] and diamond.marker.symbol == "diamond-open"
    assert "baseline" in diamond.hovertext[0] and "[5800, 6300]" not in diamond.hovertext[0]
    assert "[5800, 6300]" in front.hovertext[xs.index(6000.0)]
    bare = plot_pareto([best, plain], *XY, error_bars=False)
    assert all(t.error_x.array is None for t in bare.data)
    sim = plot_pareto([record(3, 10.0, 5.0), record(4, 12.0, 6.0)], *XY)
    assert all(t.error_x.array is None and t.error_y.array is None for t in sim.data)
    assert not any(t.name.startswith("baseline") for t in sim.data)


def test_slo_limits_on_shown_axes_are_dashed_lines_with_their_bound():
    from tuner.plots import draw_slo_limits

    fig = draw_slo_limits(
        go.Figure(),
        {"ttft_p99_ms": 2000, "output_tokens_per_s": 500, "tpot_p99_ms": 50},
        "output_tokens_per_s",
        "ttft_p99_ms",
    )
    shapes = {("v" if s.x0 == s.x1 else "h"): s for s in fig.layout.shapes}
    assert shapes["v"].x0 == 500 and shapes["h"].y0 == 2000 and len(fig.layout.shapes) == 2
    texts = {a.text.rsplit(" ", 2)[-2] for a in fig.layout.annotations}  # the bound's sign
    assert texts == {">=", "<="}
    assert any(a.text.endswith(">= 500") for a in fig.layout.annotations)


def test_parallel_coordinates_orders_numbers_numerically_without_float_noise():
    from tuner.plots.search import _column

    class Rec:
        def __init__(self, value):
            self.config = {"opt": value}

    column = _column([Rec(v) for v in (1024, None, 18, 256, 0.8700000000000001)], "opt")
    assert column["ticktext"] == ["None", "0.87", "18", "256", "1024"]
