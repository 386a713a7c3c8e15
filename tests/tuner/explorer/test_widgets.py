import math
from pathlib import Path

import optuna
import pytest

from tuner.explorer import Explorer, ExplorerModel

ROOT = Path(__file__).resolve().parents[3]
OBJECTIVES = ["output_tokens_per_s", "ttft_p99_ms"]

# (number, engine, precision, tput, ttft p99, tpot p99, accuracy)
TRIALS = [
    (0, "vllm", "bf16", 1000.0, 400.0, 20.0, 0.99),
    (1, "vllm", "fp8", 2000.0, 900.0, 30.0, 0.985),
    (2, "trtllm", "fp8", 3000.0, 1800.0, 45.0, 0.985),
    (3, "trtllm", "int4", 3500.0, 2500.0, 60.0, 0.95),
    (4, "vllm", "bf16", 800.0, 700.0, 25.0, 0.99),  # dominated by 0
]


def _add(study, number, engine, precision, tput, ttft, tpot, acc, slos):
    metrics = {
        "output_tokens_per_s": tput,
        "ttft_p99_ms": ttft,
        "tpot_p99_ms": tpot,
        "accuracy": acc,
    }
    feasible = ttft <= slos["ttft_p99_ms"] and tpot <= slos["tpot_p99_ms"]
    study.add_trial(
        optuna.trial.create_trial(
            values=[tput, ttft],
            params={"engine": engine},
            distributions={
                "engine": optuna.distributions.CategoricalDistribution(["vllm", "trtllm"])
            },
            user_attrs={
                "engine": engine,
                "plan": {"precision": precision, "gpus": 1},
                "result": {"estimated": True, "feasible": feasible},
                "metrics": metrics,
                "config": {"max_num_seqs": 64 * (number + 1), "precision": precision},
            },
        )
    )


def hand_study(slos=None, trials=TRIALS):
    slos = slos or {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 50.0}
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("slos", slos)
    study.set_user_attr("spec", {"winner": {"metric": "output_tokens_per_s"}})
    for t in trials:
        _add(study, *t, slos)
    return study


def test_study_slos_decide_the_first_winner():
    ex = ExplorerModel(hand_study())
    assert ex.message is None
    assert ex.winner.number == 2  # 3 misses both SLOs
    assert set(ex.feasible) == {0, 1, 2, 4}
    assert set(ex.front.front) == {0, 1, 2}


def test_moving_slo_sliders_changes_feasible_set_and_winner():
    ex = Explorer(hand_study())
    front = ex.set_slo("ttft_p99_ms", 1000)
    assert front.winner == 1 and set(front.feasible) == {0, 1, 4}
    assert ex.sliders["ttft_p99_ms"].value == 1000
    assert ex.set_slo("tpot_p99_ms", 22).winner == 0
    ex.set_slo("ttft_p99_ms", 3000)
    ex.set_slo("tpot_p99_ms", 100)
    assert ex.winner.number == 3
    assert "winner: trial 3" in ex.banner.value and "estimated" in ex.banner.value


def test_accuracy_floor_slider_excludes_lossy_precisions():
    ex = Explorer(hand_study({"ttft_p99_ms": 5000.0, "tpot_p99_ms": 100.0}))
    assert ex.winner.number == 3
    assert "accuracy" in ex.sliders
    assert ex.set_slo("accuracy", 0.98).winner == 2
    assert ex.set_slo("accuracy", 0.99).winner == 0


def test_slider_drives_the_model_like_a_user_would():
    ex = Explorer(hand_study())
    ex.sliders["ttft_p99_ms"].value = 1000  # what dragging the slider does
    assert ex.winner.number == 1 and ex.slos["ttft_p99_ms"] == 1000


def test_filters_and_axes_recompute_the_front():
    ex = Explorer(hand_study())
    assert ex.set_filter("engine", ["vllm"]).winner == 1
    assert ex.filter_pickers["engine"].value == ("vllm",)
    ex.set_filter("engine", None)
    front = ex.set_axes("output_tokens_per_s", "tpot_p99_ms", "accuracy")
    assert front.metrics == ["output_tokens_per_s", "tpot_p99_ms", "accuracy"]
    assert ex.axis_pickers[2].value == "accuracy"


def test_detail_table_shows_the_selected_config_and_metrics():
    ex = Explorer(hand_study())
    frame = ex.select(1)
    assert frame.loc["config: max_num_seqs", "value"] == 128
    assert frame.loc["output tokens/s", "value"] == 2000.0
    assert "max_num_seqs" in ex.detail_html.value and ex.trial_picker.value == 1


def test_figure_marks_the_winner_and_greys_the_rest():
    ex = Explorer(hand_study())
    fig = ex.figure()
    names = [t.name for t in fig.data]
    assert any(n.startswith("winner: trial 2") for n in names)
    assert list(next(t for t in fig.data if t.name.startswith("infeasible")).customdata) == [3]


def test_no_feasible_trial_gives_a_message_but_still_a_plot():
    ex = Explorer(hand_study())
    ex.set_slo("ttft_p99_ms", 10)
    assert ex.winner is None
    assert "no trial meets the SLOs" in ex.message and "no trial meets" in ex.banner.value
    assert hasattr(ex, "plot_area")


def test_missing_storage_and_missing_study_are_messages(tmp_path):
    ex = Explorer(f"sqlite:///{tmp_path}/nope.db", "quickstart")
    assert "no study storage" in ex.message and "no study storage" in ex.banner.value
    assert not (tmp_path / "nope.db").exists()  # looking does not create it
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="other", storage=url)
    ex = Explorer(url, "quickstart")
    assert "no study named 'quickstart'" in ex.message
    assert len(ex.widget.children) == 1


def test_empty_study_and_study_with_only_failures_are_messages(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="empty", storage=url, directions=["maximize", "minimize"])
    assert "has no trials yet" in Explorer(url, "empty").message
    study = optuna.create_study(study_name="failed", storage=url)
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, user_attrs={"fail": {"reason": "oom"}}
        )
    )
    msg = Explorer(study).message
    assert "no completed trial" in msg and "1 fail" in msg


def test_export_without_a_spec_is_a_message_in_the_widget(tmp_path):
    ex = Explorer(hand_study(), export_dir=str(tmp_path))
    assert ex.export_button.disabled
    ex._on_export()
    assert "cannot be exported" in ex.export_result.value


@pytest.mark.slow
def test_sim_study_explorer_exports_the_selected_trial(tmp_path):
    if not (ROOT / "engines/sim/simulate.py").exists():
        pytest.skip("engines/sim/simulate.py is not written yet")
    from tuner import load_spec, run_study

    url = f"sqlite:///{tmp_path}/qs.db"
    spec = load_spec(
        ROOT / "studies/quickstart.yaml",
        storage=url,
        budget={"trials": 10},
        engines={"vllm": {"max_model_len": {"value": 8192}}},
        baseline=False,
    )
    run_study(spec)
    ex = Explorer(url, "quickstart", export_dir=str(tmp_path / "out"))
    assert ex.message is None and ex.winner is not None
    assert "estimated" in ex.banner.value
    ex.select(ex.front.front[0])
    ex.export_button.click()
    assert "serve.sh" in ex.export_result.value
    assert (tmp_path / "out" / "manifest.json").exists()


def test_figure_widget_path_when_anywidget_is_installed():
    pytest.importorskip("anywidget")
    ex = Explorer(hand_study())
    assert ex.figure_widget is not None
    assert any(t.name.startswith("winner") for t in ex.figure_widget.data)
    ex.set_slo("ttft_p99_ms", 1000)
    assert any(t.name.startswith("winner: trial 1") for t in ex.figure_widget.data)


def test_detail_of_a_repeated_trial_lists_its_intervals_and_runs():
    """A real trial measured 3 times: the detail view adds each metric's interval and one row
    per run, and says which trial is the baseline; a sim trial gets neither."""
    study = hand_study()
    t = study.trials[1]
    metrics = {**t.user_attrs["metrics"], "output_tokens_per_s_ci_low": 1900.0}
    metrics["output_tokens_per_s_ci_high"] = 2100.0
    runs = [{"output_tokens_per_s": v, "ttft_p99_ms": 880.0} for v in (1950.0, 2000.0, 2050.0)]
    result = {"estimated": False, "feasible": True, "measurement": {"extra": {"runs": runs}}}
    repeated = optuna.create_study(directions=["maximize", "minimize"])
    for key in ("objectives", "slos", "spec"):
        repeated.set_user_attr(key, study.user_attrs[key])
    for trial in study.trials:
        attrs = dict(trial.user_attrs)
        if trial.number == 1:
            attrs |= {"metrics": metrics, "result": result, "baseline": True}
        repeated.add_trial(
            optuna.trial.create_trial(
                values=trial.values,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=attrs,
            )
        )
    ex = ExplorerModel(repeated)
    ex.selected = 1
    frame = ex.detail()
    assert frame.loc["output tokens/s: 95% interval", "value"] == "1900 to 2100"
    assert frame.loc["run 3", "value"].startswith("output tokens/s 2050")
    assert frame.loc["baseline", "value"] is True
    ex.selected = 0
    other = ex.detail()
    assert not any(i.startswith("run ") or "interval" in i for i in other.index)


def test_the_figure_draws_the_slo_limit_where_the_slider_put_it():
    ex = ExplorerModel(hand_study())
    ex.set_axes("output_tokens_per_s", "ttft_p99_ms")
    ex.set_slo("ttft_p99_ms", 1000)
    limits = [s.y0 for s in ex.figure().layout.shapes if s.line.dash == "dash"]
    assert limits == [1000]
    ex.set_slo("ttft_p99_ms", None)
    assert not [s for s in ex.figure().layout.shapes if s.line.dash == "dash"]


def test_latency_sliders_start_near_the_data_and_step_in_round_amounts():
    from tuner.explorer.model import slider_format, slider_step

    ex = ExplorerModel(hand_study())
    low, high, _ = ex.slider_range("ttft_p99_ms")
    best = min(r.metrics["ttft_p99_ms"] for r in ex.completed)
    assert 0 < low <= best < high  # not from 0: the range is where the trials are
    for span_low, span_high in [(0, 12_000), (900, 4_300), (0.2, 0.97)]:
        step = slider_step(span_low, span_high)
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1, 2, 5) and (span_high - span_low) / step <= 200
    assert slider_format(100) == ",.0f" and slider_format(0.005) == ",.3f"
