"""The documented ``postgresql://user:pw@host/db`` works with what the ``postgres`` extra
installs (psycopg2), against a real PostgreSQL: SQLAlchemy 2.1 reads the plain scheme as
psycopg 3, so servetune names psycopg2 when psycopg 3 is not there."""

from __future__ import annotations

import importlib.util

import optuna
import pytest
import sqlalchemy

from tuner.spec import parse_spec
from tuner.study.loop import load_study, run_study
from tuner.study.storage import open_storage, sqlalchemy_url
from tuner.study.workers import open_worker_storage

HAS_PSYCOPG3 = importlib.util.find_spec("psycopg") is not None


def _plain(url: str) -> str:
    """``postgresql+psycopg2://user@host/db`` -> ``postgresql://user:pw@host/db`` (the test
    cluster trusts local users, so any password is accepted)."""
    user, host = url.split("://", 1)[1].split("@", 1)
    return f"postgresql://{user}:any-password@{host}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+{driver}://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+{driver}://u:p@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
    ],
)
def test_plain_postgres_urls_name_an_installed_driver(url, expected):
    driver = "psycopg" if HAS_PSYCOPG3 else "psycopg2"
    mapped = sqlalchemy_url(url)
    if HAS_PSYCOPG3 and url.startswith("postgresql://"):
        assert mapped == url  # SQLAlchemy's own default is installed: left alone
    else:
        assert mapped == expected.format(driver=driver)


@pytest.mark.postgres
def test_the_documented_url_runs_a_study_on_real_postgres(postgres_url):
    url = _plain(postgres_url)
    if not HAS_PSYCOPG3:  # what users hit before: SQLAlchemy alone cannot load the plain URL
        with pytest.raises(ModuleNotFoundError, match="psycopg"):
            sqlalchemy.create_engine(url)
    spec = parse_spec(
        {
            "name": "plain",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 50},
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "budget": {"trials": 4},
            "storage": url,
        }
    )
    run_study(spec)
    study, loaded = load_study("plain", url)
    assert loaded.storage == url
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
    # the same rows through the explicit driver URL: it is one database
    assert len(optuna.load_study(study_name="plain", storage=postgres_url).trials) == 4
    worker = open_worker_storage(url, heartbeat_s=5)
    assert [s.study_name for s in optuna.get_all_study_summaries(worker)] == ["plain"]
    open_storage(url).engine.dispose()
