"""The ``sim`` runner: any engine's configs measured by a performance model instead of a GPU.

:class:`SimulatedEngine` keeps the target engine's space, rules and export (so a sim study's
winner exports exactly like a real one) and replaces ``run`` with :func:`simulate`, which costs
each continuous-batching step with a roofline and an engine efficiency profile.
"""

from __future__ import annotations

from dataclasses import replace

from engines.base import Config, Engine, ExportBundle, Param, RunContext, ServingPlan
from engines.metrics import Measurement
from engines.sim.simulate import simulate
from engines.specs import HardwareSpec, ModelSpec
from engines.uncertainty import MeasureSettings


class SimulatedEngine(Engine):
    """Wraps a real engine; every measurement it returns is labelled ``estimated``."""

    def __init__(self, target: Engine, profile: str | None = None) -> None:
        self.target = target
        self.profile = profile
        self.name = target.name  # type: ignore[misc]
        self.label = f"{target.label} (sim)"  # type: ignore[misc]
        self.key_options = target.key_options  # type: ignore[misc]
        self.context_option = target.context_option  # type: ignore[misc]
        self.lossless_options = target.lossless_options  # type: ignore[misc]
        self.numerics_options = target.numerics_options  # type: ignore[misc]

    def space(self, model: ModelSpec, hardware: HardwareSpec) -> list[Param]:
        return self.target.space(model, hardware)

    def unknown_option(self, name: str, known: list[str]) -> str:
        return self.target.unknown_option(name, known)

    def check_space(self, space: list[Param], where: str) -> None:
        self.target.check_space(space, where)

    def plan(self, config: Config, ctx: RunContext) -> ServingPlan:
        return self.target.plan(config, ctx)

    def engine_rules(self, config: Config, ctx: RunContext) -> list[str]:
        return self.target.engine_rules(config, ctx)

    def run(self, config: Config, ctx: RunContext) -> Measurement:
        plan = self.plan(config, ctx)
        measured = simulate(self.target.name, plan, ctx, profile=self.profile)
        if MeasureSettings.from_options(ctx.options).capacity:
            from engines.serving.capacity import estimate_capacity, search_bounds, timing_for

            options = ctx.options.get("capacity") or {}  # the same options as a real search
            timing = timing_for(measured.e2e_ms.p50, options)
            found = estimate_capacity(
                lambda c: simulate(self.target.name, plan, c, profile=self.profile),
                ctx,
                start_rps=max(measured.requests_per_s, 0.1),
                probe_s=timing.min_duration_s,
                **search_bounds(options),
            )
            extra = {**measured.extra, "capacity": found.to_dict()}
            measured = replace(measured, capacity_rps=found.capacity_rps, extra=extra)
        return measured

    def export(self, config: Config, ctx: RunContext) -> ExportBundle:
        return self.target.export(config, ctx)

    def defaults(self, model: ModelSpec, hardware: HardwareSpec) -> Config:
        return self.target.defaults(model, hardware)

    def versions(self) -> dict[str, str]:
        from engines.sim.profiles import profile_version

        return {**self.target.versions(), "sim_profile": profile_version(self.profile)}
