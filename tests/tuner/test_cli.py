"""The servetune command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SPEC = {
    "name": "cli",
    "model": "Llama-3.1-8B",
    "hardware": {"gpu": "H100-SXM"},
    "workload": {"preset": "chat", "num_requests": 100},
    "engines": {"vllm": {"max_model_len": {"value": 8192}}},
    "slos": {"ttft_p99_ms": 5000},
    "budget": {"trials": 6},
}


ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """This process's environment with PYTHONPATH at this checkout first, so the subprocess
    runs the code under test (the venv's editable install may point at another checkout)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p)}


def servetune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_run_prints_the_front_and_exports_files(tmp_path):
    spec = _write(tmp_path, {**SPEC, "storage": f"sqlite:///{tmp_path}/cli.db"})
    out = tmp_path / "export"
    done = servetune("run", str(spec), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Pareto front of cli" in done.stdout
    assert "exported trial" in done.stdout
    config = yaml.safe_load((out / "vllm_config.yaml").read_text())
    assert config["host"] == "127.0.0.1" and "max-num-seqs" in config
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["estimated"] is True and manifest["metrics"]["output_tokens_per_s"] > 0
    assert (out / "serve.sh").read_text().strip().endswith("vllm serve --config vllm_config.yaml")

    shown = servetune("show", str(spec), cwd=tmp_path)
    assert shown.returncode == 0 and "Pareto front of cli" in shown.stdout
    again = servetune(
        "export",
        "cli",
        "--storage",
        f"sqlite:///{tmp_path}/cli.db",
        "--out",
        str(tmp_path / "again"),
        "--trial",
        "0",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["trial"] == 0
    space = servetune("space", str(spec), cwd=tmp_path)
    assert space.returncode == 0 and "gpu_memory_utilization" in space.stdout


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("name: x\nmodel: [oops\n", "malformed YAML"),
        ({**SPEC, "colour": 1}, "colour"),
        ({**SPEC, "model": "GPT-9"}, "unknown model 'GPT-9'"),
        ({**SPEC, "hardware": {"gpu": "TPU"}}, "unknown gpu 'TPU'"),
        ({**SPEC, "budget": {"trials": 0}}, "budget.trials"),
        ({**SPEC, "hardware": {"gpu": "H100-SXM", "count": "two"}}, "hardware.count"),
        ({**SPEC, "storage": "sqlite:////proc/nope/x.db"}, "storage"),
        ({**SPEC, "engines": {"vllm": {"max_num_seqz": 4}}}, "engines.vllm.max_num_seqz"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, spec, needle):
    path = _write(tmp_path, spec)
    done = servetune("run", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


def test_export_without_feasible_trial_is_a_clear_error(tmp_path):
    spec = _write(
        tmp_path,
        {
            **SPEC,
            "slos": {"ttft_p99_ms": 0.5},
            "budget": {"trials": 3},
            "storage": f"sqlite:///{tmp_path}/cli.db",
        },
    )
    done = servetune("run", str(spec), cwd=tmp_path)
    assert done.returncode == 2
    assert "no feasible trial" in done.stderr and "Traceback" not in done.stderr


def test_missing_study_is_a_clear_error(tmp_path):
    done = servetune("show", "ghost", "--storage", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert done.returncode == 2 and "no study named 'ghost'" in done.stderr


def test_debug_shows_the_traceback(tmp_path):
    path = _write(tmp_path, {**SPEC, "model": "GPT-9"})
    done = servetune("--debug", "run", str(path), cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(tmp_path):
    import signal
    import time

    import optuna

    storage = f"sqlite:///{tmp_path}/cli.db"
    spec = _write(tmp_path, {**SPEC, "budget": {"trials": 400}, "storage": storage})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(spec), "--no-export"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 5:  # let a few trials finish first
        time.sleep(0.5)
        try:
            done = len(optuna.load_study(study_name="cli", storage=storage).trials)
        except KeyError:
            continue
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "completed trials are saved" in err and "Traceback" not in err
    before = optuna.load_study(study_name="cli", storage=storage)
    kept = {t.number: t.values for t in before.trials if t.state.name == "COMPLETE"}
    assert kept and all(t.state.is_finished() for t in before.trials)
    again = servetune("run", str(spec), "--trials", str(len(kept) + 3), "--no-export", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = optuna.load_study(study_name="cli", storage=storage)
    assert {t.number: t.values for t in after.trials if t.number in kept} == kept
    assert sum(t.state.name == "COMPLETE" for t in after.trials) >= len(kept) + 3


def test_unknown_flag_is_a_usage_error_exit_2(tmp_path):
    done = servetune("run", "x.yaml", "--trialz", "3", cwd=tmp_path)
    assert done.returncode == 2 and "--trialz" in done.stderr
    assert "Traceback" not in done.stderr


def test_dashboard_serves_the_study_on_loopback(tmp_path):
    import socket
    import time

    import httpx

    pytest.importorskip("optuna_dashboard")
    storage = f"sqlite:///{tmp_path}/cli.db"
    spec = _write(tmp_path, {**SPEC, "budget": {"trials": 3}, "storage": storage})
    assert servetune("run", str(spec), "--no-export", cwd=tmp_path).returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", str(spec), "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.monotonic() + 30, None
        while time.monotonic() < deadline and studies is None:
            try:
                reply = httpx.get(
                    f"http://127.0.0.1:{port}/api/studies", timeout=2, trust_env=False
                )
                studies = reply.json()["study_summaries"]
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.3)
        assert studies and studies[0]["study_name"] == "cli"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # fail, but leave no dashboard behind
            proc.kill()
            proc.wait(timeout=10)
            raise


def test_real_runner_without_the_engine_stops_with_one_line(tmp_path):
    storage = f"sqlite:///{tmp_path}/cli.db"
    spec = _write(
        tmp_path,
        {
            **SPEC,
            "runner": "real",
            "storage": storage,
            "options": {"server_command": ["no-such-vllm-binary", "serve"]},
        },
    )
    done = servetune("run", str(spec), cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot run 'no-such-vllm-binary'" in done.stderr and "servetune[vllm]" in done.stderr
    assert "Traceback" not in done.stderr
    import optuna

    trials = optuna.load_study(study_name="cli", storage=storage).trials
    assert len(trials) == 1 and trials[0].user_attrs["fail"]["reason"] == "not_installed"


def test_replay_queues_another_studys_configs_and_run_measures_them_in_order(tmp_path):
    import optuna

    source = _write(tmp_path, {**SPEC, "storage": f"sqlite:///{tmp_path}/source.db"})
    assert servetune("run", str(source), "--no-export", cwd=tmp_path).returncode == 0
    target = tmp_path / "target.yaml"
    target.write_text(
        yaml.safe_dump(
            {
                **SPEC,
                "name": "target",
                "hardware": {"gpu": "H200"},
                "storage": f"sqlite:///{tmp_path}/target.db",
                "baseline": False,
                "sampler": "random",
                "budget": {"trials": 2},
            }
        )
    )
    done = servetune("replay", str(target), "--from", str(source), "--trials", "3,0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "queued 2 trial(s) of 2 config(s) from 'cli'" in done.stdout
    again = servetune("replay", str(target), "--from", str(source), "--trials", "3,0", cwd=tmp_path)
    assert again.returncode == 0 and "nothing added" in again.stdout
    assert servetune("run", str(target), "--no-export", cwd=tmp_path).returncode == 0
    storage = f"sqlite:///{tmp_path}/source.db"
    src = {t.number: t for t in optuna.load_study(study_name="cli", storage=storage).trials}
    got = optuna.load_study(study_name="target", storage=f"sqlite:///{tmp_path}/target.db").trials
    assert [t.user_attrs["config"] for t in got] == [
        src[3].user_attrs["config"],
        src[0].user_attrs["config"],
    ]
    assert [bool(t.user_attrs.get("baseline")) for t in got] == [True, False]


@pytest.mark.parametrize(
    ("trials", "needle"), [("0,x", "--trials: expected"), ("99", "no trial 99")]
)
def test_replay_of_bad_trials_is_one_line_naming_the_flag(tmp_path, trials, needle):
    source = _write(tmp_path, {**SPEC, "storage": f"sqlite:///{tmp_path}/source.db"})
    assert servetune("run", str(source), "--no-export", cwd=tmp_path).returncode == 0
    done = servetune("replay", str(source), "--from", str(source), "--trials", trials, cwd=tmp_path)
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr


def test_run_with_a_grid_smaller_than_the_budget_says_so_and_exports(tmp_path):
    """The grid sampler's end of grid used to crash `servetune run` with a RuntimeError from
    Optuna's study.stop(); now the run ends, says why, shows the front and exports."""
    from engines.space import pinned_overrides
    from engines.specs import HardwareSpec, ModelSpec
    from engines.vllm import VllmEngine

    space = VllmEngine().space(ModelSpec(name="Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM"))
    keep = {"max_model_len": {"value": 8192}, "max_num_seqs": {"choices": [64, 256]}}
    data = {**SPEC, "engines": {"vllm": pinned_overrides(space, keep)}, "sampler": "grid"}
    spec = _write(tmp_path, {**data, "baseline": False, "storage": f"sqlite:///{tmp_path}/g.db"})
    done = servetune("run", str(spec), "--trials", "9", "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "every config of the grid was tried (2 trials)" in done.stdout
    assert "exported trial" in done.stdout


def test_run_with_only_the_baseline_skips_re_measurement_and_still_exports(tmp_path):
    """finalists.count in the spec, but the study so far is just its baseline: nothing to
    re-measure, which used to end the run with an error before the export."""
    data = {**SPEC, "finalists": {"count": 2, "rounds": 2}, "budget": {"trials": 1}}
    spec = _write(tmp_path, {**data, "storage": f"sqlite:///{tmp_path}/b.db"})
    done = servetune("run", str(spec), "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing to re-measure: no feasible trial besides the baseline" in done.stdout
    assert "exported trial 0" in done.stdout


def test_run_prints_a_line_per_trial_with_its_eta_and_quiet_prints_none(tmp_path):
    spec = _write(tmp_path, {**SPEC, "storage": f"sqlite:///{tmp_path}/lines.db"})
    done = servetune("run", str(spec), "--no-export", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    started = [line for line in done.stdout.splitlines() if " trial 0 (vllm): " in line]
    assert started and started[0].endswith("the engine's defaults")
    finished = [line for line in done.stdout.splitlines() if " trial 0 COMPLETE: " in line]
    assert finished and "(1.00x baseline)" in finished[0] and "ETA" in finished[0]
    again = _write(tmp_path, {**SPEC, "name": "q", "storage": f"sqlite:///{tmp_path}/q.db"})
    quiet = servetune("run", str(again), "--no-export", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and " COMPLETE: " not in quiet.stdout


def test_run_says_which_fields_won_over_the_preset(tmp_path):
    data = {**SPEC, "preset": "throughput", "storage": f"sqlite:///{tmp_path}/p.db"}
    data["budget"] = {"trials": 2}
    done = servetune("run", str(_write(tmp_path, data)), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "preset throughput: the spec's own slos.ttft_p99_ms wins over the preset's" in " ".join(
        done.stdout.split()
    )


def test_the_tour_replay_measures_just_the_replayed_configs(tmp_path):
    root = Path(__file__).resolve().parents[2]
    source = {**SPEC, "storage": f"sqlite:///{tmp_path}/src.db"}
    assert servetune("run", str(_write(tmp_path, source)), "--quiet", cwd=tmp_path).returncode == 0
    target = yaml.safe_load((root / "studies" / "new-gpu.yaml").read_text())
    target.update(storage=f"sqlite:///{tmp_path}/new.db", engines=SPEC["engines"])
    target["workload"]["num_requests"] = 100
    new = tmp_path / "new-gpu.yaml"
    new.write_text(yaml.safe_dump(target))
    queued = servetune("replay", str(new), "--from", "cli", "--storage", source["storage"],
                       "--trials", "0,3", cwd=tmp_path)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    done = servetune("run", str(new), "--quiet", "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "measuring the replayed configs (2 trials" in done.stdout
    import optuna

    study = optuna.load_study(study_name="new-gpu", storage=target["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs.get("baseline") is True
    more = servetune("run", str(new), "--quiet", "--trials", "4", "--no-export", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert len(optuna.load_study(study_name="new-gpu", storage=target["storage"]).trials) >= 4


def test_every_commands_help_fits_80_columns_without_bool_placeholders(tmp_path):
    import os

    listing = servetune("--help", cwd=tmp_path).stdout
    commands = [
        line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert {"run", "show", "export", "worker", "replay", "report"} <= set(commands)
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "tuner", command, "--help"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "80"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "<bool>" not in done.stdout, command
        assert max(map(len, done.stdout.splitlines())) <= 80, command


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "args",
    [
        ["show", "ghost"],
        ["export", "ghost", "--out", "out"],
        ["show", "../ghost"],
        ["export", "../../ghost", "--out", "../out"],
        ["report", "ghost", "--html", "r.html"],
        ["show", "ghost", "--storage", "sqlite:///sub/dir/ghost.db"],
        ["show", "ghost", "--storage", "sqlite:///../ghost.db"],
        ["export", "ghost", "--storage", "journal:logs/ghost.log", "--out", "out"],
        ["show", "spec.yaml"],
    ],
)
def test_reading_a_study_that_does_not_exist_creates_nothing(tmp_path, args):
    cwd = tmp_path / "home" / "work"
    cwd.mkdir(parents=True)
    _write(cwd, SPEC)  # spec.yaml: its study was never run
    before = _tree(tmp_path)
    done = servetune(*args, cwd=cwd)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "no study named" in done.stderr or "neither a study name" in done.stderr
    assert _tree(tmp_path) == before


@pytest.mark.postgres
def test_reading_a_missing_study_leaves_an_empty_postgres_database_empty(tmp_path, postgres_url):
    import sqlalchemy

    done = servetune("show", "ghost", "--storage", postgres_url, cwd=tmp_path)
    assert done.returncode == 2 and "no study named 'ghost'" in done.stderr
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
