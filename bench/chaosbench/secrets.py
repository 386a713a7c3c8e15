"""The secrets scenario: studies whose storage URL has a password (PostgreSQL ``user:pw@`` and
SQLite ``?password=``) and whose ``options.env`` holds a token, driven through run, export, show
and worker, plus malformed URLs carrying a password; then every byte written (files, database
files, PostgreSQL's cluster, every stdout and stderr, the studies' attributes) is searched for
each secret.

The spec files the scenario writes hold the secrets by design (they are the input) and are left
out of the search; nothing else is.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from chaosbench.procs import Done, census_after, run_cli
from chaosbench.studies import standin_spec, write_spec


def secrets_scenario(root: Path, marker: str, pg: Any | None) -> dict[str, Any]:
    """Run the commands, then count where each secret turned up (``pg`` None: SQLite only)."""
    token = uuid.uuid4().hex[:10]
    secrets = {"sqlite password": f"sqpw{token}", "env token": f"hf_secret123{token}"}
    root.mkdir(parents=True, exist_ok=True)
    stores = {"sqlite": f"sqlite:///{root / 'secret.db'}?password={secrets['sqlite password']}"}
    if pg is not None:
        secrets["postgres password"] = f"pgpw{token}"
        url = pg.create_database("chaos_secret")
        stores["postgres"] = url.replace(
            f"{pg.user}@", f"{pg.user}:{secrets['postgres password']}@"
        )
    inputs, outputs, studies = [], [], []
    for kind, storage in stores.items():
        name = f"chaos-secret-{kind}"
        env = {"HF_TOKEN": secrets["env token"]}
        spec = write_spec(
            root / f"{kind}.yaml", standin_spec(name, marker, 2, storage=storage, env=env)
        )
        inputs.append(spec)
        outputs += _commands(root, marker, spec, name, storage)
        studies.append((name, storage.split("?")[0] if kind == "sqlite" else storage))
    outputs += _malformed(root, marker, inputs[0], secrets)
    census = census_after(marker, wait_s=2.0)
    hits = _scan_outputs(outputs, secrets)
    hits += _scan_files([root, *([pg.root] if pg is not None else [])], set(inputs), secrets)
    hits += _scan_attrs(studies, secrets)
    return {
        "commands": len(outputs),
        "exit_codes": [d.returncode for d in outputs],
        "census": census,
        "hits": hits,
        "secrets": sorted(secrets),
    }


def _commands(root: Path, marker: str, spec: Path, name: str, storage: str) -> list[Done]:
    return [
        run_cli(["run", str(spec)], root, marker, 150),
        run_cli(["export", str(spec), "--out", str(root / f"export-{name}")], root, marker),
        run_cli(["show", str(spec)], root, marker),
        run_cli(["worker", str(spec), "--storage", storage], root, marker, 150),
    ]


def _malformed(root: Path, marker: str, spec: Path, secrets: dict[str, str]) -> list[Done]:
    """Storage URLs that cannot work, each with a password in it."""
    pw, sq = secrets.get("postgres password", "pgpw"), secrets["sqlite password"]
    urls = [
        f"postgresql+psycopg2://u:{pw}@127.0.0.1:notaport/db",
        f"postgresql+psycopg2://u:{pw}@127.0.0.1:1/db",
        f"nosuchdialect://u:{pw}@127.0.0.1/db",
        f"sqlite:////nonexistent-chaos-dir/x.db?password={sq}",
    ]
    return [run_cli(["show", "chaos-secret-x", "--storage", u], root, marker, 60) for u in urls] + [
        run_cli(["worker", str(spec), "--storage", urls[1]], root, marker, 60)
    ]


def _found(blob: bytes, secrets: dict[str, str]) -> list[str]:
    return [label for label, value in secrets.items() if value.encode() in blob]


def _scan_outputs(outputs: list[Done], secrets: dict[str, str]) -> list[dict[str, str]]:
    hits = []
    for done in outputs:
        command = " ".join(done.argv[3:5])
        for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
            for label in _found(text.encode(), secrets):
                hits.append({"where": f"{stream} of {command}", "secret": label})
    return hits


def _scan_files(roots: list[Path], skip: set[Path], secrets: dict[str, str]) -> list[dict]:
    hits = []
    for folder in roots:
        for path in sorted(folder.rglob("*")):
            if path in skip or not path.is_file():
                continue
            try:
                blob = path.read_bytes()
            except OSError:
                continue
            for label in _found(blob, secrets):
                hits.append({"where": str(path.relative_to(folder)), "secret": label})
    return hits


def _scan_attrs(studies: list[tuple[str, str]], secrets: dict[str, str]) -> list[dict]:
    import optuna

    from tuner.study.optuna_private import study_system_attrs

    hits = []
    for name, storage in studies:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except Exception:  # never created: nothing stored to leak
            continue
        system = study_system_attrs(study)  # no public getter
        blobs = {"study attrs": [study.user_attrs, system]}
        for trial in study.get_trials(deepcopy=False):
            blobs[f"trial {trial.number} attrs"] = [trial.user_attrs, trial.system_attrs]
        for where, value in blobs.items():
            for label in _found(json.dumps(value, default=str).encode(), secrets):
                hits.append({"where": f"{name}: {where}", "secret": label})
    return hits
