"""Real measurements as calibration data: which trials, which numbers, and which workload to replay.

A point is one completed, measured (not estimated) trial of a ``runner: real`` study: its config,
its :class:`RunContext` and five metrics. Three kinds of side file next to the study database
change what a point holds, each by an explicit identity check, never by config alone:

* ``crosscheck.json`` (``vllm bench serve`` on the very server of one trial): its numbers replace
  that trial's only when the command line matches *including the port* (one server process) and
  the servetune numbers it compares against are the trial's own. A config measured again later
  (another server, another protocol) is a different measurement and keeps its own numbers.
* ``protocols.yaml``: trials measured under a load protocol whose numbers are known to differ from
  today's for some metrics. Those metrics are *set aside* with the recorded reason (kept on the
  point for reporting, left out of fits and headline errors), and the sim replays the workload
  the way the kept metrics were shown to be measured.
* ``*finalize/finalists-*.json``: re-measurements of study trials (``bench/real/h100_vllm.py
  finalize``); each becomes its own point of the same config, after its config is checked
  against the trial's (and its ``study``, when the file names one). A file with ``set_aside``
  is left out, with its reason logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from engines import RunContext
from engines.errors import SpecError, StudyError
from tuner.study.attrs import RESULT_ATTR

log = logging.getLogger(__name__)

METRICS = ("output_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")
SAME_RUN_TOLERANCE = 1e-3  # relative: a cross-check's servetune numbers are the trial's own


@dataclass(frozen=True)
class RealPoint:
    """One measured config: where it came from, what ran, and what was measured."""

    study: str
    trial: int
    engine: str
    config: dict[str, Any]
    ctx: RunContext = field(repr=False)
    measured: dict[str, float]
    measured_by: str  # "servetune loadgen", "vllm bench serve", ...
    storage: str = ""  # where the study lives (two copies of one study name stay apart)
    # metric -> (measured value, why it is not compared): known protocol artefacts
    set_aside: dict[str, tuple[float, str]] = field(default_factory=dict)
    source: str = ""  # a re-measurement's file, when the numbers are not the trial's own

    @property
    def key(self) -> str:
        """Identity of the config and workload (two measurements of one config share it)."""
        w = self.ctx.workload
        ident = [self.engine, self.config, w.input_tokens, w.output_tokens, w.arrival, w.sweep]
        return json.dumps(ident, sort_keys=True, default=str)

    @property
    def config_key(self) -> str:
        """Identity of the config alone: a sweep measures one config at several loads, and a
        held-out config must leave all of them out (its other loads would teach the fit it)."""
        return json.dumps([self.engine, self.config], sort_keys=True, default=str)

    @property
    def label(self) -> str:
        where = Path(self.storage.removeprefix("sqlite:///")).parent.name
        label = f"{self.study}#{self.trial}" + (f"@{where}" if where else "")
        if not self.source:
            return label
        source = Path(self.source)  # its folder too: sessions re-measure the same trials
        return f"{label}/{source.parent.name}/{source.stem}"


# ------------------------------------------------------------------------------ side files


@dataclass(frozen=True)
class Reference:
    """``vllm bench serve`` run against one trial's server, next to servetune's numbers."""

    server_argv: tuple[str, ...]
    bench: dict[str, float]
    servetune: dict[str, float]

    def matches(self, argv: Sequence[str], metrics: Mapping[str, float]) -> bool:
        """Same server process (full command line, port included) and the same measurement."""
        if tuple(argv) != self.server_argv:
            return False
        mine, theirs = metrics.get("output_tokens_per_s"), self.servetune.get("output_tokens_per_s")
        if not (mine and theirs):
            return False
        return abs(mine - theirs) <= SAME_RUN_TOLERANCE * abs(theirs)


def reference_measurements(folder: Path) -> list[Reference]:
    """The cross-check in ``folder/crosscheck.json``, if it names the server it ran against.

    Before the load generator's fix, servetune read ~21% lower throughput than ``vllm bench
    serve`` on the same server (session 1), so for those trials the bench numbers are the
    reference. A cross-check without a server command line cannot be tied to a trial: ignored.
    """
    path = folder / "crosscheck.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if not data.get("server_argv"):
        log.info("%s names no server command line: not tied to any trial", path)
        return []
    metrics = data.get("metrics", {})
    return [
        Reference(
            server_argv=tuple(data["server_argv"]),
            bench={m: v["vllm_bench_serve"] for m, v in metrics.items()},
            servetune={m: v["servetune"] for m, v in metrics.items()},
        )
    ]


@dataclass(frozen=True)
class Protocol:
    """How some trials of a study were measured, where that differs from today's loadgen."""

    trials: list[int] | None  # None: every trial
    description: str
    set_aside: dict[str, str]  # metric -> reason
    replay_warmup: int | None  # warmup requests the sim replays (None: the spec's)

    def covers(self, trial: int) -> bool:
        return self.trials is None or trial in self.trials


def measurement_protocols(folder: Path) -> dict[str, Protocol]:
    """Study name -> :class:`Protocol`, from ``folder/protocols.yaml`` (none if absent)."""
    path = folder / "protocols.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    out = {}
    for study, entry in data.items():
        unknown = set(entry.get("set_aside", {})) - set(METRICS)
        if unknown:
            raise SpecError(f"{path}: {study}.set_aside: unknown metric(s) {sorted(unknown)}")
        trials = entry.get("trials", "all")
        out[study] = Protocol(
            trials=None if trials == "all" else [int(t) for t in trials],
            description=str(entry.get("protocol", "")),
            set_aside={m: str(why) for m, why in entry.get("set_aside", {}).items()},
            replay_warmup=entry.get("replay_warmup_requests"),
        )
    return out


def _finalist_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*finalize/finalists*.json"))


def _finalist_metrics(measurement: Mapping[str, Any]) -> dict[str, float]:
    return {
        "output_tokens_per_s": float(measurement["output_tokens_per_s"]),
        "ttft_p50_ms": float(measurement["ttft_ms"]["p50"]),
        "ttft_p99_ms": float(measurement["ttft_ms"]["p99"]),
        "tpot_p50_ms": float(measurement["tpot_ms"]["p50"]),
        "tpot_p99_ms": float(measurement["tpot_ms"]["p99"]),
    }


# ------------------------------------------------------------------------------ loading


def load_points(
    studies: Sequence[str],
    storage: str | None = None,
    reference: bool = True,
    finalists: bool = True,
) -> list[RealPoint]:
    """Completed, measured (not estimated) trials of the named studies, as calibration data.

    ``studies`` are spec paths or names (with ``storage``, else ``sqlite:///studies/NAME.db``);
    a ``.db`` path names every study inside that SQLite file. Side files next to the database
    apply as the module docstring says: ``reference`` for ``crosscheck.json``, ``finalists`` for
    re-measurements; ``protocols.yaml`` always (it records what the numbers mean).
    """
    points: list[RealPoint] = []
    for ref in studies:
        for study, spec, url in _open(ref, storage):
            folder = _sqlite_folder(url)
            refs = reference_measurements(folder) if reference else []
            protocol = measurement_protocols(folder).get(study.study_name)
            found = list(_study_points(study, spec, refs, protocol, url))
            points.extend(found)
            if finalists:
                for path in _finalist_files(folder):
                    points.extend(_finalist_points(path, found, url))
    if not points:
        raise StudyError(f"no completed real trials in {', '.join(studies)}")
    return points


def _open(ref: str, storage: str | None) -> Iterator[tuple[Any, Any, str]]:
    import optuna

    from tuner.spec import load_spec
    from tuner.study.loop import load_study

    if ref.endswith(".db"):
        url = f"sqlite:///{ref}"
        for summary in optuna.get_all_study_summaries(url):
            yield (*load_study(summary.study_name, url), url)
        return
    if ref.endswith((".yaml", ".yml")):
        spec = load_spec(ref, storage=storage)
        yield (*load_study(spec.name, spec.storage_url), spec.storage_url)
        return
    url = storage or f"sqlite:///studies/{ref}.db"
    yield (*load_study(ref, url), url)


def _sqlite_folder(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else Path()


def _with_warmup(ctx: RunContext, warmup: int) -> RunContext:
    return replace(ctx, workload=ctx.workload.model_copy(update={"warmup_requests": warmup}))


def _study_points(study, spec, refs: Sequence[Reference], protocol: Protocol | None, url: str):
    from tuner.analysis.results import trial_records
    from tuner.study.loop import LOAD_PARAM, make_context

    if spec.runner != "real":
        log.warning("study %s is simulated (runner %s); skipped", study.study_name, spec.runner)
        return
    for record in trial_records(study):
        if record.state != "COMPLETE" or record.estimated:
            continue
        # a sweep's trial ran at its own load level: replay that one
        ctx = make_context(spec, record.number, load=record.attrs.get(LOAD_PARAM))
        measurement = (record.attrs.get(RESULT_ATTR) or {}).get("measurement") or {}
        argv = (measurement.get("extra") or {}).get("server_argv") or []
        bench = next((r.bench for r in refs if r.matches(argv, record.metrics)), None)
        source, set_aside = bench or record.metrics, {}
        if bench:  # vllm bench serve sends no warmup requests: simulate what it measured
            ctx = _with_warmup(ctx, 0)
        elif protocol and protocol.covers(record.number):
            set_aside = {
                m: (float(source[m]), why) for m, why in protocol.set_aside.items() if m in source
            }
            if protocol.replay_warmup is not None:
                ctx = _with_warmup(ctx, protocol.replay_warmup)
        yield RealPoint(
            study=study.study_name,
            trial=record.number,
            engine=record.engine,
            config=record.config,
            ctx=ctx,
            measured={m: float(source[m]) for m in METRICS if m in source and m not in set_aside},
            measured_by="vllm bench serve" if bench else "servetune loadgen",
            storage=url,
            set_aside=set_aside,
        )


def _finalist_points(path: Path, study_points: Sequence[RealPoint], url: str):
    """Re-measurements in ``path`` of trials among ``study_points`` (same config checked).

    A file naming another study (``"study"``) is not about these trials; one with ``"set_aside"``
    holds numbers known to be wrong for calibration (the reason is logged)."""
    data = json.loads(path.read_text())
    if data.get("study") not in (None, *{p.study for p in study_points}):
        return
    if data.get("set_aside"):
        log.info("%s set aside: %s", path, data["set_aside"])
        return
    by_trial = {p.trial: p for p in study_points if p.storage == url}
    for entry in data.get("configs", []):
        trial = by_trial.get(int(entry["trial"]))
        if trial is None:
            continue
        if {k: v for k, v in entry["config"].items() if k in trial.config} != trial.config:
            log.warning("%s: trial %s's config differs from the study's; skipped", path, trial)
            continue
        runs = int(entry["measurement"].get("runs") or 1)
        yield replace(
            trial,
            ctx=_with_warmup(trial.ctx, 0),  # warmup ran as its own phase, before the window
            measured=_finalist_metrics(entry["measurement"]),
            measured_by=f"servetune loadgen, warmup phase, {runs} run(s)",
            set_aside={},
            source=str(path),
        )
