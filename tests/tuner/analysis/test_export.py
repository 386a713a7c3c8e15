"""manifest.json's ``full_command`` is one shell-safe command line: pasted into bash it runs the
server with exactly the exported arguments (injected text stays one argument, nothing else
runs) and without the benchmark-only ``vllm_args``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.analysis.export import export_trial
from tuner.spec import parse_spec
from tuner.study.loop import run_study

INJECTIONS = [
    "$(touch pwned-1)",
    "`touch pwned-2`",
    "m; touch pwned-3",
    "m && touch pwned-4",
    "m | touch pwned-5",
    "m\ntouch pwned-6",
    "'; touch pwned-7; '",
]


def _spec(tmp_path: Path, model_path: str | None = None):
    model = {"name": "Llama-3.1-8B", **({"path": model_path} if model_path else {})}
    return parse_spec(
        {
            "name": "exp",
            "model": model,
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 50},
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "budget": {"trials": 3},
            "storage": f"sqlite:///{tmp_path}/exp.db",
            "options": {"vllm_args": {"load-format": "dummy", "seed": "7"}},
        }
    )


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    return tmp, run_study(_spec(tmp))


def _fake_vllm(bin_dir: Path) -> None:
    """A ``vllm`` on PATH that prints the arguments it got, as JSON."""
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    script.chmod(0o755)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_full_command_pasted_into_a_shell_runs_only_the_server(study_dir, injection, tmp_path):
    tmp, study = study_dir
    out = tmp_path / "out"
    export_trial(study, _spec(tmp, injection), out)
    full = json.loads((out / "manifest.json").read_text())["full_command"]
    argv = shlex.split(full)
    assert argv[:3] == ["vllm", "serve", injection]  # the model path is one argument
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--load-format" not in argv and "dummy" not in argv and "--seed" not in argv
    _fake_vllm(tmp_path / "bin")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", full], cwd=run_dir, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == argv[1:]
    assert not list(run_dir.iterdir()) and not list(tmp_path.glob("pwned*"))


def test_exported_files_leave_out_benchmark_only_args(study_dir, tmp_path):
    tmp, study = study_dir
    result = export_trial(study, _spec(tmp), tmp_path / "out")
    text = "".join(path.read_text() for path in result.paths)
    assert "load-format" not in text and "dummy" not in text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["spec_hash"] == study.user_attrs["spec_hash"]
    assert shlex.split(manifest["full_command"])[:2] == ["vllm", "serve"]
