"""The files a new user meets first stay consistent with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)}
    assert {_name(d) for d in deps} <= conda


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"\. \.venv/bin/activate && (python -m pytest[^\n`]*)", readme).group(1)
    assert command.strip() in ci


def test_readme_main_job_runs_the_quickstart_spec():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[dev]" && servetune run studies/quickstart.yaml' in readme
    assert (ROOT / "studies" / "quickstart.yaml").is_file()


def test_the_readme_copy_of_the_quickstart_spec_is_the_file():
    readme = (ROOT / "README.md").read_text()
    after = readme.split("A study is one YAML file (`studies/quickstart.yaml`):", 1)[1]
    copy = yaml.safe_load(re.search(r"```yaml\n(.*?)```", after, re.S).group(1))
    spec = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    assert copy == spec
