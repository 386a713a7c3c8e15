"""Named goals (``preset: latency|throughput|balanced|cost``) that fill a spec's objectives, SLOs,
winner policy and measurement, so a first study needs only a model, GPUs and a workload.

Explicit spec fields win: a field the spec sets replaces the preset's, except ``slos``, ``winner``
and ``measurement``, which merge key by key (the spec's keys over the preset's). The SLO numbers
are MLPerf Inference's Llama-2-70B limits (v4.1+ rules, ``mlcommons/inference`` ``mlperf.conf``):
the *interactive* scenario (TTFT p99 450 ms, TPOT p99 40 ms) for ``latency``, the *server*
scenario (TTFT p99 2 s, TPOT p99 200 ms) for the others; error rate at most 1 %.
docs/trust.md describes each preset.
"""

from __future__ import annotations

import copy
from typing import Any

from engines.errors import SpecError

_INTERACTIVE = {"ttft_p99_ms": 450.0, "tpot_p99_ms": 40.0, "error_rate": 0.01}
_SERVER = {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 200.0, "error_rate": 0.01}

PRESETS: dict[str, dict[str, Any]] = {
    # Chat-like serving: the fastest first token and smoothest stream that still meet
    # interactive SLOs; a config must beat the defaults beyond the noise to win.
    "latency": {
        "objectives": [
            {"metric": "ttft_p99_ms", "direction": "minimize"},
            {"metric": "tpot_p99_ms", "direction": "minimize"},
            {"metric": "output_tokens_per_s", "direction": "maximize"},
        ],
        "slos": _INTERACTIVE,
        "winner": {"metric": "ttft_p99_ms", "tie_break": "tpot_p99_ms", "outside_noise": True},
        "measurement": {"repeats": 3},
    },
    # Batch / offline: the most output tokens per second within the server-scenario SLOs.
    "throughput": {
        "objectives": [
            {"metric": "output_tokens_per_s", "direction": "maximize"},
            {"metric": "ttft_p99_ms", "direction": "minimize"},
        ],
        "slos": _SERVER,
        "winner": {"metric": "output_tokens_per_s", "tie_break": "ttft_p99_ms"},
        "measurement": {"repeats": 1},
    },
    # Online serving: the most load (requests/s) a config sustains within the SLOs, with p99
    # TTFT as the second goal; every trial runs a capacity search.
    "balanced": {
        "objectives": [
            {"metric": "capacity_rps", "direction": "maximize"},
            {"metric": "ttft_p99_ms", "direction": "minimize"},
        ],
        "slos": _SERVER,
        "winner": {"metric": "capacity_rps", "tie_break": "ttft_p99_ms", "outside_noise": True},
        "measurement": {"repeats": 2, "capacity": True},
    },
    # Spend: the fewest dollars per million output tokens within the server-scenario SLOs.
    "cost": {
        "objectives": [
            {"metric": "cost_per_mtok_usd", "direction": "minimize"},
            {"metric": "ttft_p99_ms", "direction": "minimize"},
        ],
        "slos": _SERVER,
        "winner": {"metric": "cost_per_mtok_usd", "tie_break": "ttft_p99_ms"},
        "measurement": {"repeats": 1},
    },
}
_MERGED = ("slos", "winner", "measurement")


def preset_names() -> list[str]:
    return list(PRESETS)


def apply_preset(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (a raw mapping) with ``name``'s fields filled in where the spec left them out."""
    if name not in PRESETS:
        raise SpecError(f"preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    out = dict(spec)
    for key, value in copy.deepcopy(PRESETS[name]).items():
        given = spec.get(key)
        if given is None:
            out[key] = value
        elif key in _MERGED and isinstance(given, dict):
            out[key] = {**value, **given}
    return out


def preset_overrides(spec: Any) -> list[str]:
    """The fields of ``spec`` (a validated StudySpec) whose own values won over its preset's,
    dotted (``slos.ttft_p99_ms``, ``objectives``): printed at the start of a run, so a preset
    never changes a study silently or is silently changed."""
    if not spec.preset:
        return []
    won = []
    for key, value in PRESETS[spec.preset].items():
        given = getattr(spec, key)
        given = given.model_dump(mode="json") if hasattr(given, "model_dump") else given
        if key == "objectives":
            given = [o.model_dump(mode="json") for o in spec.objectives]
            if [(o["metric"], o["direction"]) for o in given] != [
                (o["metric"], o["direction"]) for o in value
            ]:
                won.append(key)
        elif isinstance(value, dict):
            won += [f"{key}.{k}" for k, v in value.items() if given.get(k) != v]
        elif given != value:
            won.append(key)
    return won
