"""Writes the winner (or any trial) as files its engine takes as they are, plus a manifest of
what was measured, under which spec, with which versions, and when.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna

from engines import engine_class, split_settings
from engines.base import ExportBundle
from engines.errors import StudyError
from tuner.analysis.results import study_front, trial_records
from tuner.spec import StudySpec
from tuner.study.attrs import FINALISTS_ATTR, REMEASURED_WINNER_ATTR, RESULT_ATTR, SPEC_HASH_ATTR
from tuner.study.loop import make_context
from tuner.study.storage import redact
from tuner.versions import tool_versions


@dataclass(frozen=True)
class ExportResult:
    """Where the exported files went and which trial they came from."""

    trial: int
    engine: str
    directory: Path
    paths: list[Path]
    command: list[str]


def export_trial(
    study: optuna.Study, spec: StudySpec, out_dir: str | Path, trial_number: int | None = None
) -> ExportResult:
    """Export ``trial_number`` (default: the winner of the feasible front) into ``out_dir``."""
    front = study_front(study)
    if trial_number is None:
        if front.winner is None:
            raise StudyError(
                f"study {study.study_name!r} has no feasible trial to export "
                f"({len(front.records)} completed; loosen the SLOs or run more trials)"
            )
        trial_number = study.user_attrs.get(REMEASURED_WINNER_ATTR, front.winner)
    records = {r.number: r for r in trial_records(study)}
    record = records.get(trial_number)
    if record is None or record.state != "COMPLETE":
        raise StudyError(f"trial {trial_number} of {study.study_name!r} is not a completed trial")
    # exports never depend on how the trial was measured, only on the release the spec targets
    settings = split_settings(record.engine, spec.engines.get(record.engine))[0]
    engine = engine_class(record.engine)(**settings)
    bundle = engine.export(record.config, make_context(spec, trial_number))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, text in bundle.files.items():
            path = out / name
            path.write_text(text)
            paths.append(path)
        command_path = out / "serve.sh"
        command_path.write_text(serve_script(engine.label, bundle))
        command_path.chmod(0o755)
        manifest_path = out / "manifest.json"
        manifest_path.write_text(
            json.dumps(
                {
                    **_manifest(study, spec, record, bundle, front),
                    "options_checked_against": engine.versions(),
                },
                indent=2,
                default=str,
            )
        )
    except OSError as exc:
        raise StudyError(f"export: cannot write to {out}: {exc.strerror}") from None
    paths += [command_path, manifest_path]
    return ExportResult(trial_number, record.engine, out, paths, bundle.command)


def serve_script(label: str, bundle: ExportBundle) -> str:
    """serve.sh: the bundle's setup steps (a TensorRT engine's build-once script), then the
    serve command, each shell-quoted."""
    return (
        f"#!/usr/bin/env bash\n# {label}\nset -euo pipefail\n"
        + "".join(shlex.join(step) + "\n" for step in bundle.setup)
        + ("exec " if bundle.setup else "")
        + shlex.join(bundle.command)
        + "\n"
    )


def _manifest(study, spec, record, bundle, front) -> dict:
    """What was measured and how to serve it; ``full_command`` is shell-quoted (``shlex.join``),
    so pasting it into a shell runs the server with exactly these arguments and nothing else."""
    return {
        "study": study.study_name,
        "storage": redact(spec.storage_url),
        "trial": record.number,
        "engine": record.engine,
        "runner": spec.runner,
        "estimated": record.estimated,
        "measured": "estimated by the sim engine (no GPU)" if record.estimated else "measured",
        "config": record.config,
        "precision": record.precision,
        "gpus": record.gpus,
        "metrics": record.metrics,
        "feasible": record.feasible,
        "on_pareto_front": record.number in front.front,
        "winner_policy": {"metric": spec.winner_metric, "tie_break": spec.winner.tie_break},
        "objectives": [o.metric for o in spec.objectives],
        "slos": spec.feasibility_slos,
        "model": spec.model.name,
        "hardware": {"gpu": spec.hardware.gpu, "count": spec.hardware.count},
        "workload": spec.workload.model_dump(mode="json"),
        "spec_hash": study.user_attrs.get(SPEC_HASH_ATTR) or spec.spec_hash(),
        "command": bundle.command,
        "full_command": shlex.join(bundle.full_command or bundle.command),
        "notes": bundle.notes,
        "uncertainty": _uncertainty(study, record),
        "versions": {
            **tool_versions(),
            **(record.attrs.get(RESULT_ATTR) or {}).get("versions", {}),
        },
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _uncertainty(study, record) -> dict:
    """Confidence intervals and run counts behind the exported numbers (docs/trust.md)."""
    measurement = (record.attrs.get(RESULT_ATTR) or {}).get("measurement") or {}
    remeasured = next(
        (f for f in study.user_attrs.get(FINALISTS_ATTR) or [] if f.get("trial") == record.number),
        None,
    )
    return {
        "runs": measurement.get("runs", 1),
        "intervals": measurement.get("intervals", {}),
        "ci_level": (measurement.get("extra") or {}).get("ci_level"),
        "per_run": (measurement.get("extra") or {}).get("runs"),
        "capacity": (measurement.get("extra") or {}).get("capacity"),
        "remeasured": remeasured,
        "chosen_on_remeasurement": study.user_attrs.get(REMEASURED_WINNER_ATTR) == record.number,
    }
