"""Ground truth: every point of a scenario's space, validated and simulated once, cached on disk.

Points are evaluated with the engine's ``validate`` and ``run`` directly (no Optuna), in a process
pool. The cache is keyed by a hash of the spec, the simulator's profile version and the engines'
spaces, so editing a scenario, the simulator's constants or an engine's options recomputes it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines import Engine, EngineError
from engines.base import Param
from tuner.spec import StudySpec
from tuner.study.loop import build_engines, make_context, search_spaces

log = logging.getLogger(__name__)
KEPT_METRICS = ("output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms")
CACHE_DIR = Path(__file__).resolve().parents[1] / "results" / "search_grid_cache"


def config_key(engine: str, config: dict[str, Any]) -> str:
    """One string per (engine, config), whatever the order the options were chosen in."""
    return engine + ":" + json.dumps(sorted(config.items()), default=str)


def enumerate_space(
    space: list[Param], chosen: dict[str, Any] | None = None, start: int = 0
) -> Iterator[dict[str, Any]]:
    """Every config of a space whose options are all categorical, honouring ``when``."""
    chosen = dict(chosen or {})
    for i in range(start, len(space)):
        param = space[i]
        if not param.applies(chosen):
            continue
        if param.kind != "categorical":
            raise ValueError(f"{param.name}: give 'choices' to enumerate it")
        for value in param.choices:
            yield from enumerate_space(space, {**chosen, param.name: value}, i + 1)
        return
    yield chosen


@dataclass
class Grid:
    """A scenario's whole space with each point's outcome."""

    name: str
    points: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> outcome

    def lookup(self, engine: str, config: dict[str, Any]) -> dict[str, Any]:
        return self.points[config_key(engine, config)]

    @property
    def valid(self) -> list[dict[str, Any]]:
        return [p for p in self.points.values() if p["status"] != "invalid"]


def _evaluate(args: tuple[StudySpec, str, dict[str, Any]]) -> dict[str, Any]:
    spec, engine_name, config = args
    engine = _engines(spec)[engine_name]
    ctx = make_context(spec)
    reasons = engine.validate(config, ctx)
    out: dict[str, Any] = {"engine": engine_name, "config": config}
    if reasons:
        return {**out, "status": "invalid", "reason": reasons[0][:120]}
    try:
        metrics = engine.run(config, ctx).metrics()
    except EngineError as exc:
        return {**out, "status": "failed", "reason": exc.reason}
    return {
        **out,
        "status": "ok",
        "metrics": {m: (metrics[m] if math.isfinite(metrics[m]) else None) for m in KEPT_METRICS},
    }


_ENGINE_CACHE: dict[str, dict[str, Engine]] = {}


def _engines(spec: StudySpec) -> dict[str, Engine]:
    key = spec.spec_hash() + str(spec.sim_profile)
    if key not in _ENGINE_CACHE:
        _ENGINE_CACHE[key] = build_engines(spec)
    return _ENGINE_CACHE[key]


def _cache_key(spec: StudySpec, spaces: dict[str, list[Param]]) -> str:
    """What the points depend on: the spec's measured part (its hash), the sim constants and the
    engines' spaces (an option added to an engine changes every config, so every key)."""
    from engines.sim.profiles import profile_version

    profile = spec.sim_profile
    if profile and Path(profile).suffix:  # a file: its content is in the version, not its path,
        # which differs per checkout (the key changed in every clone and the tests rewrote the
        # committed cache)
        spec = spec.model_copy(update={"sim_profile": Path(profile).name})
    return f"{spec.spec_hash()}-{profile_version(profile)}-{_space_digest(spaces)}"


def _space_digest(spaces: dict[str, list[Param]]) -> str:
    described = {
        engine: [[p.name, p.kind, list(p.choices or []), p.low, p.high] for p in space]
        for engine, space in spaces.items()
    }
    return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()[:12]


def load_grid(
    name: str, spec: StudySpec, workers: int = 2, progress: Callable[[int, int], None] | None = None
) -> Grid:
    """The scenario's grid, from the cache or evaluated now (and cached)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{name}.json.gz"
    engines = build_engines(spec)
    spaces = search_spaces(spec, engines)
    key = _cache_key(spec, spaces)
    if path.is_file():
        data = json.loads(gzip.decompress(path.read_bytes()))
        if data.get("key") == key:
            return Grid(name, data["points"])
    todo = [(spec, e, c) for e, space in spaces.items() for c in enumerate_space(space)]
    points: dict[str, dict[str, Any]] = {}
    log.info("evaluating the %d-point grid of %s", len(todo), name)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, outcome in enumerate(pool.map(_evaluate, todo, chunksize=8)):
            points[config_key(outcome["engine"], outcome["config"])] = outcome
            if progress:
                progress(i + 1, len(todo))
    text = json.dumps({"key": key, "points": points}, separators=(",", ":"))
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return Grid(name, points)
