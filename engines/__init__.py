"""Serving engines behind one interface, registered by name.

``get_engine("vllm")`` returns vLLM's space, rules and export with the simulator measuring it
(``runner="sim"``, the default: no GPU needed); ``runner="real"`` starts real servers. Adding an
engine means adding one module and one line in ``_REGISTRY``.
"""

from __future__ import annotations

from importlib import import_module

from engines.base import Config, Engine, ExportBundle, Param, RunContext, ServingPlan
from engines.errors import EngineError, ServetuneError, SpecError, StudyError
from engines.metrics import LatencyStats, Measurement, RequestRecord, RequestSLO, summarize
from engines.specs import GpuSpec, HardwareSpec, ModelSpec
from engines.workload import WorkloadSpec, plan_requests

_REGISTRY = {
    "vllm": "engines.vllm:VllmEngine",
    "trtllm": "engines.trtllm:TrtllmEngine",
}
RUNNERS = ("sim", "real")


def engine_names() -> list[str]:
    """Names of every registered engine."""
    return list(_REGISTRY)


def engine_class(name: str) -> type[Engine]:
    """The class registered under ``name``."""
    if name not in _REGISTRY:
        raise SpecError(f"unknown engine {name!r}; known: {', '.join(_REGISTRY)}")
    module, attr = _REGISTRY[name].split(":")
    return getattr(import_module(module), attr)


def split_settings(name: str, block: dict | None) -> tuple[dict, dict]:
    """A spec's ``engines.<name>`` block as (engine settings, space overrides)."""
    keys = set(engine_class(name).settings)
    block = dict(block or {})
    return {k: v for k, v in block.items() if k in keys}, {
        k: v for k, v in block.items() if k not in keys
    }


def get_engine(
    name: str, runner: str = "sim", profile: str | None = None, settings: dict | None = None
) -> Engine:
    """An engine ready to measure: simulated (``runner='sim'``) or real servers (``'real'``);
    ``settings`` are the engine's own (:attr:`Engine.settings`, e.g. vLLM's ``version``)."""
    target = engine_class(name)(**(settings or {}))
    if runner == "real":
        return target
    if runner != "sim":
        raise SpecError(f"runner: {runner!r} is not one of {', '.join(RUNNERS)}")
    from engines.sim.engine import SimulatedEngine

    return SimulatedEngine(target, profile=profile)


__all__ = [
    "Config",
    "Engine",
    "EngineError",
    "ExportBundle",
    "GpuSpec",
    "HardwareSpec",
    "LatencyStats",
    "Measurement",
    "ModelSpec",
    "Param",
    "RequestRecord",
    "RequestSLO",
    "RunContext",
    "RUNNERS",
    "ServetuneError",
    "ServingPlan",
    "SpecError",
    "StudyError",
    "WorkloadSpec",
    "engine_class",
    "engine_names",
    "get_engine",
    "plan_requests",
    "split_settings",
    "summarize",
]
