"""No password reaches anything servetune writes: a real study on the stand-in, stored in a real
PostgreSQL under a URL with a password, warm-started from a SQLite study whose URL carries
``?password=`` junk, with a token in ``options.env``; then show, export, report and a worker.
Every file under the test's folder, every study and trial attribute and every stdout/stderr is
searched for each secret (as written and percent-decoded). Malformed URLs' errors too."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import yaml

from engines.standin import REPO_ROOT, STANDIN_SCRIPT
from tests.tuner.test_cli import servetune
from tuner.redaction import redact_spec, redact_url, scrub, url_secrets

PG_PASSWORD = "Pg@Secret/71:x"  # '@', '/' and ':' must be percent-encoded in the URL
SQLITE_JUNK = "SqliteJunk-5521"
TOKEN = "hf_TokenValue-9931"
SECRETS = (PG_PASSWORD, SQLITE_JUNK, TOKEN)


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret)}


def _found(text: str) -> list[str]:
    return [form for secret in SECRETS for form in _forms(secret) if form in text]


def _with_password(url: str) -> str:
    """``postgres_url`` (``postgresql+psycopg2://user@host:port/db``) as the documented plain
    ``postgresql://user:pw@host/db`` form (the test cluster trusts local users: any password)."""
    rest = url.split("://", 1)[1]
    user, host = rest.split("@", 1)
    return f"postgresql://{user}:{quote(PG_PASSWORD, safe='')}@{host}"


def _attrs_text(url: str) -> str:
    """Every study's and trial's user and system attributes of a storage, as one JSON text."""
    storage = optuna.storages.RDBStorage(url)
    try:
        out = []
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            system = storage.get_study_system_attrs(study._study_id)
            out.append({"user": study.user_attrs, "system": system})
            for t in study.get_trials(deepcopy=False):
                out.append({"user": t.user_attrs, "system": t.system_attrs, "params": t.params})
        return json.dumps(out, default=str)
    finally:
        storage.engine.dispose()


def _leaks(root: Path, inputs: set[Path]) -> dict[str, list[str]]:
    """Files under ``root`` (but the test's own specs) holding a secret, with what they hold."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and path not in inputs:
            hits = _found(path.read_bytes().decode("utf-8", "replace"))
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_a_real_study_with_secrets_writes_none_of_them(tmp_path, postgres_url):
    pg = _with_password(postgres_url)
    sqlite = f"sqlite:///{tmp_path}/source.db?password={SQLITE_JUNK}&mode=x"
    common = {
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "engines": {"vllm": {"max_model_len": {"value": 8192}}},
        "slos": {"ttft_p99_ms": 5000},
    }
    source = tmp_path / "source.yaml"
    source.write_text(yaml.safe_dump({**common, "name": "source", "budget": {"trials": 3}}))
    spec = tmp_path / "real.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                **common,
                "name": "real",
                "runner": "real",
                "storage": pg,
                "workload": {
                    "input_tokens": 16,
                    "output_tokens": 4,
                    "num_requests": 6,
                    "arrival": {"kind": "concurrency", "concurrency": 2},
                },
                "warm_start": {"study": "source", "storage": sqlite, "top_k": 1},
                "budget": {"trials": 2, "trial_timeout_s": 60},
                "options": {
                    "server_command": [sys.executable, str(STANDIN_SCRIPT)],
                    "env": {"HF_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)},
                    "startup_timeout_s": 20,
                    "stop_grace_s": 3,
                    "workdir": str(tmp_path / "work"),
                },
            }
        )
    )
    runs = [
        servetune("run", str(source), "--storage", sqlite, "--out", "src-export", cwd=tmp_path),
        servetune("run", str(spec), "--out", "export", cwd=tmp_path),
        servetune("worker", str(spec), "--trials", "3", cwd=tmp_path),
        servetune("show", "real", "--storage", pg, cwd=tmp_path),
        servetune("export", str(spec), "--out", "again", cwd=tmp_path),
        servetune("report", "real", "--storage", pg, "--html", "r.html", cwd=tmp_path),
        servetune("show", "source", "--storage", sqlite, cwd=tmp_path),
    ]
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
        assert not _found(done.stdout + done.stderr), done.stdout + done.stderr
    assert "worker on real (postgresql://postgres:***@" in runs[2].stdout
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["storage"].startswith("postgresql://postgres:***@")
    src_manifest = json.loads((tmp_path / "src-export" / "manifest.json").read_text())
    assert "password=***&mode=x" in src_manifest["storage"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10 and any(p.suffix == ".log" for p in written)  # logs, db, exports
    assert _leaks(tmp_path, {source, spec}) == {}
    attrs = _attrs_text(postgres_url)
    assert '"HF_TOKEN": "***"' in attrs and "password=***" in attrs  # stored, redacted
    assert not _found(attrs)
    assert not _found(_attrs_text(f"sqlite:///{tmp_path}/source.db"))
    done = optuna.load_study(study_name="real", storage=postgres_url).trials
    assert sum(t.state.name == "COMPLETE" for t in done) == 3 and any(
        t.user_attrs.get("warm_start") for t in done
    )


MALFORMED = [
    "postgresql://u:{pw}@127.0.0.1:notaport/db",
    "postgresql+psycopg2://u:{pw}@[::1:5/db",
    "postgresql+psycopg2://u:{pw}@127.0.0.1:99999/db",
    "u:{pw}@127.0.0.1/db",
    "nope://u:{pw}@127.0.0.1/db",
    "mysql://u:{pw}@127.0.0.1/db",
    "postgresql+psycopg2://u@127.0.0.1:1/db?sslmode=bogus&password={pw}",
    "postgresql+psycopg2://u:{pw}@127.0.0.1:1/db",
    "postgresql://u:{qpw}@127.0.0.1:1/db",
    "postgresql+psycopg2://u:{pw}@127.0.0.1:1/db?pass%77ord={pw}",
]


@pytest.mark.parametrize("form", MALFORMED)
@pytest.mark.parametrize("command", ["show", "run", "debug"])
def test_storage_errors_never_show_the_password(tmp_path, form, command):
    url = form.format(pw=TOKEN, qpw=quote(PG_PASSWORD, safe=""))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "s", "model": "Llama-3.1-8B", "hardware": {"gpu": "H100-SXM"}})
    )
    args = {
        "show": ["show", "s", "--storage", url],
        "run": ["run", str(spec), "--storage", url],
        "debug": ["--debug", "worker", str(spec), "--storage", url],
    }[command]
    done = servetune(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "storage" in done.stderr or "no study named" in done.stderr
    assert not _found(done.stdout + done.stderr), done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@w/x?y@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("sqlite:///a.db?x=1;Pass%77ord=pw", "sqlite:///a.db?x=1;Pass%77ord=***"),
        ("sqlite:///studies/a.db", "sqlite:///studies/a.db"),
        ("journal:studies/a.log", "journal:studies/a.log"),
    ],
)
def test_redact_url_hides_every_password_form(url, shown):
    assert redact_url(url) == shown
    assert all(secret not in shown for secret in url_secrets(url))


def test_scrub_and_redact_spec():
    text = "could not parse 'postgresql://u:S3cret!@h/db': S3cret! rejected"
    assert scrub(text) == "could not parse 'postgresql://u:***@h/db': *** rejected"
    spec = {
        "storage": "postgresql://u:a%2Fb@h/db",
        "warm_start": {"study": "x", "storage": "sqlite:///x.db?password=zz"},
        "options": {"env": {"HF_TOKEN": "t", "CUDA_VISIBLE_DEVICES": "0"}, "workdir": "w"},
    }
    safe = redact_spec(spec)
    assert safe["storage"] == "postgresql://u:***@h/db"
    assert safe["warm_start"] == {"study": "x", "storage": "sqlite:///x.db?password=***"}
    assert safe["options"] == {
        "env": {"HF_TOKEN": "***", "CUDA_VISIBLE_DEVICES": "***"},
        "workdir": "w",
    }
    assert spec["options"]["env"]["HF_TOKEN"] == "t"  # the spec itself is left as it was
