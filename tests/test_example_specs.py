"""Every example spec in studies/ runs to an export from a fresh clone, as its comment says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "studies").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_spec_runs_to_an_export(tmp_path, name):
    shutil.copytree(ROOT / "studies", tmp_path / "studies", ignore=shutil.ignore_patterns("real"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "run", f"studies/{name}", "--quiet", "--out", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["feasible"] is True
    assert any(
        (tmp_path / "out" / f).is_file() for f in ("vllm_config.yaml", "extra_llm_api_options.yaml")
    )
