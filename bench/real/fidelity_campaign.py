"""The calibration campaign of issue 25: configs x workload shapes, one server per config.

    python bench/real/fidelity_campaign.py setup  [--campaign C]
    python bench/real/fidelity_campaign.py specs  [--campaign C] --dir DIR
    python bench/real/fidelity_campaign.py run    [--campaign C] --seconds 540 --out DIR \\
        [--db /root/campaign/h200-fidelity-campaign.db] [--first-start-s 240 --start-s 100]

The campaign file (``studies/real/h200-fidelity-campaign.yaml``) holds a study spec without a
name, workload or seed (``study``), the workload ``shapes`` (each with its own seed), the
``configs`` (options over the engine's defaults within the study's space, in the order they are
measured) and the ``rounds`` of some configs. Each shape is an Optuna study of its own,
``<name>-<shape>``, in one storage, so ``servetune fidelity DB`` scores the sim on every point.

Each config is served once: its first trial starts the server and its other shapes and rounds
reuse it (the server pool keeps a server while only the workload changes), then it is stopped
before the next config. A trial runs through the study loop's own ``run_one_trial`` (the real
runner, the shared load generator, failures recorded with their reason). A config whose server
cannot start is not retried on its other shapes: one failure is recorded, the rest are skipped.
A (config, round, shape) already in the storage is skipped, so a lost call is resumed by the
next; a trial is started only when the time it is expected to take fits in ``--seconds``. After
every trial the storage is copied to ``--out`` (SQLite's backup API) with ``campaign.json``: a
row per trial with its config, shape, round, numbers, the server's counters and the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.real.knob_screen import (  # noqa: E402
    COLD_MARKER,
    copy_storage,
    fail_unfinished,
    gpu_identity,
    measurement_extra,
    server_counters,
)
from engines.errors import SpecError  # noqa: E402
from engines.space import space_defaults  # noqa: E402
from tuner.spec import StudySpec, parse_spec  # noqa: E402
from tuner.study.attrs import FAIL_ATTR, fail_reason  # noqa: E402
from tuner.study.loop import (  # noqa: E402
    build_engines,
    open_study,
    run_one_trial,
    search_spaces,
)
from tuner.study.search import config_params  # noqa: E402

CAMPAIGN = Path("studies/real/h200-fidelity-campaign.yaml")
FIRST_START_S = 240.0  # a machine's first vLLM start (kernel JIT, torch.compile)
START_S = 100.0  # a later start (compile caches warm; a new quantization recompiles)
SHAPE_S = 45.0  # one shape's trial before one has been timed
# Failures of a server that never came up: its other shapes would fail the same way.
START_FAILURES = ("oom", "invalid_argument", "startup_timeout", "crash", "port_clash")
CONFIG_ATTR, ROUND_ATTR, SHAPE_ATTR = "campaign_config", "campaign_round", "campaign_shape"
_TOP_KEYS = {"name", "study", "shapes", "configs", "rounds"}


@dataclass(frozen=True)
class Campaign:
    """A parsed campaign file: one study spec per shape, the configs and their rounds."""

    name: str
    specs: dict[str, StudySpec]  # shape -> its study's spec
    configs: dict[str, dict[str, Any]]  # name -> options over the defaults, in measured order
    rounds: dict[str, int]

    def plan(self) -> list[tuple[str, int, str]]:
        """(config, round, shape) in the order they are measured: a config's rounds in turn,
        each round every shape."""
        return [
            (config, k, shape)
            for config in self.configs
            for k in range(1, self.rounds.get(config, 1) + 1)
            for shape in self.specs
        ]


def load_campaign(path: Path, storage: str | None = None) -> Campaign:
    """Parse and check a campaign file; a bad field is a one-line SpecError naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the campaign: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a campaign is a mapping with {', '.join(sorted(_TOP_KEYS))}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown field(s) {sorted(unknown)}")
    for key in ("name", "study", "shapes", "configs"):
        if not data.get(key):
            raise SpecError(f"{path}: {key}: missing")
    name, study = str(data["name"]), dict(data["study"])
    for key in ("name", "workload", "seed"):
        if key in study:
            raise SpecError(f"{path}: study.{key}: set per shape, not in the shared study")
    if storage:
        study["storage"] = storage
    specs = {}
    for shape, entry in data["shapes"].items():
        if not isinstance(entry, dict) or "workload" not in entry:
            raise SpecError(f"{path}: shapes.{shape}: needs a workload (and a seed)")
        fields = {**study, "name": f"{name}-{shape}", "workload": entry["workload"]}
        fields["seed"] = entry.get("seed", 0)
        specs[shape] = parse_spec(fields, f"{path} shapes.{shape}")
    configs = {str(k): dict(v or {}) for k, v in data["configs"].items()}
    rounds = {str(k): int(v) for k, v in (data.get("rounds") or {}).items()}
    for config, count in rounds.items():
        if config not in configs:
            raise SpecError(f"{path}: rounds.{config}: not a config ({', '.join(configs)})")
        if count < 1:
            raise SpecError(f"{path}: rounds.{config}: must be at least 1, got {count}")
    campaign = Campaign(name, specs, configs, rounds)
    first = next(iter(specs.values()))
    space = search_spaces(first, build_engines(first))[_engine(first)]
    for config, options in configs.items():
        _check_options(path, config, options, space)
    return campaign


def _engine(spec: StudySpec) -> str:
    engines = list(spec.engines)
    if len(engines) != 1:
        raise SpecError(f"study.engines: a campaign serves one engine, got {engines}")
    return engines[0]


def _check_options(path: Path, config: str, options: dict[str, Any], space: list) -> None:
    """Every option is a parameter of the space and one of its values (else enqueueing it
    would be silently replaced by a suggestion)."""
    params = {p.name: p for p in space}
    for key, value in options.items():
        if key not in params:
            raise SpecError(f"{path}: configs.{config}.{key}: not in the study's space")
        choices = getattr(params[key], "choices", None)
        if choices and value not in choices:
            raise SpecError(
                f"{path}: configs.{config}.{key}: {value!r} is not among the space's "
                f"{list(choices)} (add it to study.engines)"
            )


class CampaignRun:
    """One call's share of a campaign: the studies, the clock, the current server."""

    def __init__(
        self,
        campaign: Campaign,
        out: Path,
        seconds: float,
        first_start_s: float = FIRST_START_S,
        start_s: float = START_S,
        shape_s: float = SHAPE_S,
        max_trials: int | None = None,
    ) -> None:
        self.campaign, self.out, self.seconds = campaign, out, seconds
        self.first_start_s, self.start_s, self.shape_s = first_start_s, start_s, shape_s
        self.max_trials = max_trials
        self.began = time.monotonic()
        self.cold = not COLD_MARKER.exists()
        self.gpu = gpu_identity()
        self.studies = {shape: open_study(spec) for shape, spec in campaign.specs.items()}
        first = next(iter(campaign.specs.values()))
        self.engine = _engine(first)
        self.engines = build_engines(first)  # one engine object: its server pool spans shapes
        self.space = search_spaces(first, self.engines)[self.engine]
        self.defaults = space_defaults(self.space)
        self.serving: str | None = None  # the config whose server is up

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.began)

    def done(self, config: str, round_: int, shape: str) -> optuna.trial.FrozenTrial | None:
        """The finished trial of (config, round) in the shape's study, if any."""
        for trial in self.studies[shape].get_trials(deepcopy=False):
            attrs = trial.user_attrs
            if (attrs.get(CONFIG_ATTR), attrs.get(ROUND_ATTR)) != (config, round_):
                continue
            # finished, or failed for a reason a rerun would not change (a lost call's
            # interrupted or never-run trial is measured again)
            if trial.state == TrialState.COMPLETE or (
                trial.state in (TrialState.FAIL, TrialState.PRUNED)
                and fail_reason(trial) not in ("interrupted", "not_run")
            ):
                return trial
        return None

    def failed_to_start(self, config: str) -> str | None:
        """The reason a config's server could not start (or died: ``crash`` does not say
        which), from any shape's study; its other shapes are then not tried."""
        for study in self.studies.values():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                reason = fail_reason(trial)
                if trial.user_attrs.get(CONFIG_ATTR) == config and reason in START_FAILURES:
                    return reason
        return None

    def estimate(self, config: str, shape: str) -> float:
        """Seconds the next trial is expected to take: the shape's longest measured run so far
        (server start excluded), plus a start when the config's server is not up."""
        runs = []
        for trial in self.studies[shape].get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.datetime_start and trial.datetime_complete:
                extra = measurement_extra(trial)
                started = 0.0 if extra.get("server_reused") else extra.get("server_start_s") or 0
                runs.append(
                    (trial.datetime_complete - trial.datetime_start).total_seconds() - started
                )
        need = max(runs, default=self.shape_s) + 5.0
        if self.serving != config:
            need += self.first_start_s if self.cold else self.start_s
        return need

    def run(self) -> None:
        for study in self.studies.values():
            fail_unfinished(study)
        measured = 0
        for config, round_, shape in self.campaign.plan():
            if self.done(config, round_, shape):
                continue
            if self.max_trials is not None and measured >= self.max_trials:
                print(
                    f"{config} r{round_} {shape}: --trials {self.max_trials} measured; "
                    "stopping here",
                    flush=True,
                )
                break
            reason = self.failed_to_start(config)
            if reason:
                print(f"{config} r{round_} {shape}: skipped, its server failed ({reason})")
                continue
            need = self.estimate(config, shape)
            if need > self.left():
                print(
                    f"{config} r{round_} {shape}: {need:.0f} s needed, {self.left():.0f} left; "
                    "stopping here",
                    flush=True,
                )
                break
            self.measure(config, round_, shape)
            measured += 1
        self.stop_server()
        self.save()

    def stop_server(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.serving = None

    def measure(self, config: str, round_: int, shape: str) -> None:
        """Queue the config in the shape's study and run it as that study's next trial."""
        if self.serving not in (None, config):
            self.stop_server()
        spec, study = self.campaign.specs[shape], self.studies[shape]
        full = {**self.defaults, **self.campaign.configs[config]}
        attrs = {CONFIG_ATTR: config, ROUND_ATTR: round_, SHAPE_ATTR: shape, "gpu": self.gpu}
        if self.cold:
            attrs["cold_start"] = True
        study.enqueue_trial(config_params(self.engine, full, False, self.space), user_attrs=attrs)
        started = time.monotonic()
        outcome = run_one_trial(study, spec, self.engines, {self.engine: self.space})
        self.cold = False
        self.serving = config if outcome.state == "COMPLETE" else None
        trial = study.trials[outcome.number]
        m = trial.user_attrs.get("metrics") or {}
        print(
            f"[{time.monotonic() - self.began:5.0f}s] {config} r{round_} {shape}: trial "
            f"{trial.number} {trial.state.name} in {time.monotonic() - started:.0f} s, "
            f"{m.get('output_tokens_per_s', float('nan')):.0f} tok/s, TTFT p50/p99 "
            f"{m.get('ttft_p50_ms', float('nan')):.0f}/{m.get('ttft_p99_ms', float('nan')):.0f} "
            f"ms, TPOT p50 {m.get('tpot_p50_ms', float('nan')):.1f} ms, "
            f"{_counters(trial)} {outcome.reason or ''}",
            flush=True,
        )
        if outcome.state != "COMPLETE":
            self.stop_server()  # a failed run may have left the server unhealthy
        self.save()

    def save(self) -> None:
        copy_storage(next(iter(self.campaign.specs.values())).storage_url, self.out)
        rows = [row for study in self.studies.values() for row in campaign_rows(study)]
        (self.out / "campaign.json").write_text(json.dumps(rows, indent=1, default=str))


def _counters(trial: optuna.trial.FrozenTrial) -> str:
    return server_counters(trial, ("prefix_cache_hit_rate", "kv_cache_tokens"), ".3g")


def campaign_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """A row per trial of one shape's study: what ran, how it went, what was measured."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        extra = measurement_extra(t)
        metrics = t.user_attrs.get("metrics") or {}
        rows.append(
            {
                "study": study.study_name,
                "trial": t.number,
                "shape": t.user_attrs.get(SHAPE_ATTR),
                "config": t.user_attrs.get(CONFIG_ATTR),
                "round": t.user_attrs.get(ROUND_ATTR),
                "state": t.state.name,
                "fail": t.user_attrs.get(FAIL_ATTR),
                "gpu": t.user_attrs.get("gpu"),
                "started": t.datetime_start,
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None,
                "server_reused": extra.get("server_reused"),
                "server_start_s": extra.get("server_start_s"),
                "server_argv": extra.get("server_argv"),
                **{k: metrics.get(k) for k in _ROW_METRICS},
                "server_metrics": extra.get("server_metrics"),
            }
        )
    return rows


_ROW_METRICS = (
    "output_tokens_per_s",
    "requests_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "tpot_p99_ms",
    "e2e_p50_ms",
)


def write_specs(campaign: Campaign, folder: Path) -> list[Path]:
    """Each shape's study spec as a file of its own (to rerun one shape with ``study``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in campaign.specs.values():
        path = folder / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        paths.append(path)
    return paths


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["setup", "specs", "run"])
    parser.add_argument("--campaign", type=Path, default=CAMPAIGN)
    parser.add_argument("--db", type=Path, default=None, help="the campaign's SQLite file here")
    parser.add_argument("--seconds", type=float, default=540.0)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--dir", type=Path, default=Path("campaign-specs"))
    parser.add_argument("--first-start-s", type=float, default=FIRST_START_S)
    parser.add_argument("--start-s", type=float, default=START_S)
    parser.add_argument(
        "--shape-s", type=float, default=SHAPE_S, help="a shape's trial before one is timed"
    )
    parser.add_argument("--trials", type=int, default=None, help="at most this many this call")
    args = parser.parse_args()
    storage = None
    if args.db is not None:
        args.db.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{args.db}"
    try:
        campaign = load_campaign(args.campaign, storage)
    except SpecError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.command == "setup":
        from bench.real.make_dummy_model import make

        make(Path(next(iter(campaign.specs.values())).model.path))
    elif args.command == "specs":
        for path in write_specs(campaign, args.dir):
            print(path)
    else:
        CampaignRun(
            campaign,
            args.out,
            args.seconds,
            args.first_start_s,
            args.start_s,
            args.shape_s,
            args.trials,
        ).run()


if __name__ == "__main__":
    main()
