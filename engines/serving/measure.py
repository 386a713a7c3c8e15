"""Real-server measurement shared by every OpenAI-compatible engine (vLLM, TensorRT-LLM).

:func:`measure_server` is all an engine's ``run`` calls. The engine supplies what differs:

its :class:`engines.served.ServedEngine` hooks ``serve_argv`` (the server command), ``prepare``
(a step before start, such as building a TensorRT engine), ``server_env`` (e.g. a compile-cache
directory) and ``health_path``.

Everything else (free port, process group, health wait, failure reasons, reuse across trials,
prompts of exact length, the load generator, the metrics) lives here, once. ``ctx.options`` may
set ``server_command`` or ``<engine>_server_command`` (a list replacing ``argv[0:2]``, e.g. ``[sys.executable, "-m",
"engines.standin.openai_server"]``), ``env`` (extra environment), ``startup_timeout_s``,
``stop_grace_s``, ``request_timeout_s``, ``endpoint`` (``completions`` or ``chat``) and
``extra_body`` (merged into every request) and ``save_requests`` (each run's and each capacity
probe's per-request timings under ``ctx.workdir/requests``, see :mod:`.request_log`).

``ctx.options['measurement']`` (:class:`engines.uncertainty.MeasureSettings`) asks for repeats
(combined with confidence intervals), warmup, a minimum run length and a capacity search
(``ctx.options['capacity']`` tunes it); each run is wrapped in NVML power sampling
(:mod:`.power`) and priced per million output tokens.

With ``stop_overloaded`` an open-loop run is watched by
:class:`engines.serving.overload.OverloadMonitor` through the load generator's streaming hook:
once the queue grows without bound or TTFT keeps rising past its SLO, the run ends there (no
further repeats, capacity search or accuracy suite) and the measurement of what finished carries
the symptom in ``extra['stopped']``, which the study records as a PRUNED trial. A closed loop is
not watched: its in-flight requests are capped by the concurrency, so its queue cannot run away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engines.base import Config, RunContext
from engines.errors import EngineError
from engines.metrics import Measurement, RequestRecord, cost_per_mtok, summarize
from engines.progress import RunProgress, progress_log
from engines.served import ServedEngine
from engines.serving.binding import bind_host, client_host
from engines.serving.lifecycle import ServerProcess, classify_failure, free_port
from engines.serving.loadgen import LoadRequest, LoadResult, run_load
from engines.serving.overload import OverloadMonitor
from engines.serving.pool import ServerPool, restart_key
from engines.serving.power import PowerReading, PowerSampler, visible_gpus
from engines.serving.prompts import PromptMaker
from engines.serving.request_log import request_log_path, write_request_log
from engines.serving.request_source import RequestSource, request_source
from engines.serving.server_metrics import CounterWindow
from engines.uncertainty import MeasureSettings, combine_runs

log = logging.getLogger(__name__)

_POOL = ServerPool()
_PORT_RETRIES = 2


def measure_server(engine: ServedEngine, config: Config, ctx: RunContext) -> Measurement:
    """Start (or reuse) ``engine``'s server for ``config``, drive ``ctx.workload``, summarize.

    Raises EngineError with a reason (``oom``, ``invalid_argument``, ``port_clash``,
    ``startup_timeout``, ``crash``, ``http_error``, ``hang``) when the trial cannot be measured.
    """
    server, reused = _acquire(engine, config, ctx)
    model_id = _served_model(server, ctx)
    source = request_source(ctx)
    plan, label = source.plan, source.maker.label  # label: how prompt lengths were made
    chat = ctx.options.get("endpoint", "completions") == "chat"
    settings = MeasureSettings.from_options(ctx.options)
    save_run = _trace_writer(ctx, "run")
    load = {
        "chat": chat,
        "request_timeout_s": float(ctx.options.get("request_timeout_s", min(ctx.timeout_s, 600))),
        "extra_body": ctx.options.get("extra_body"),
        "processes": ctx.options.get("loadgen_processes", "auto"),
    }
    gpus = _gpu_count(engine, config, ctx)
    new_monitor = None
    if settings.stop_overloaded and plan.arrival_s is not None:
        new_monitor = functools.partial(OverloadMonitor, ctx.slo.ttft_ms)
    started = time.monotonic()
    runs: list[Measurement] = []
    records: list[list[RequestRecord]] = []
    counters = CounterWindow(server.base_url)
    counters.start()
    for index in range(settings.repeats):
        remaining = ctx.timeout_s - (time.monotonic() - started)
        with PowerSampler(visible_gpus(gpus)) as power:
            result = _timed_run(
                server, model_id, source, settings, index, remaining, load, new_monitor
            )
        measured = _summarize(engine, config, ctx, result, server, reused, label, chat)
        runs.append(_with_energy_and_cost(measured, power.reading, ctx, gpus))  # type: ignore[arg-type]
        records.append(result.records)
        if save_run is not None:
            save_run(index, result.records)
        if result.stopped:
            break
    combined = combine_runs(runs, records, settings.level, seed=ctx.seed)
    if counters.stop():  # warmup included: the server cannot tell the phases apart
        combined = dataclasses.replace(
            combined, extra={**combined.extra, "server_metrics": counters.record}
        )
    if result.stopped:  # lost already: nothing more is worth measuring on this config
        log.info("trial %s stopped early: %s", ctx.trial_number, result.stopped)
        return dataclasses.replace(combined, extra={**combined.extra, "stopped": result.stopped})
    if settings.capacity:
        combined = _with_capacity(combined, server, model_id, source, ctx, load)
    if ctx.options.get("accuracy"):
        combined = _with_accuracy(combined, engine, config, ctx, server, model_id)
    return combined


def measure_reference(engine: ServedEngine, config: Config, ctx: RunContext) -> dict:
    """Serve ``config`` (the study's accuracy reference) and record its outputs once.

    ``ctx.options["accuracy"]`` holds the study's accuracy settings. The server stays in the pool,
    so a first trial with the same config reuses it.
    """
    from engines.accuracy import AccuracySettings, collect_reference_outputs

    settings = AccuracySettings.model_validate(ctx.options["accuracy"])
    server, _ = _acquire(engine, config, ctx)
    data = collect_reference_outputs(
        server.base_url, _served_model(server, ctx), settings, _request_timeout(ctx)
    )
    return {**data, "engine": engine.name, "config": dict(config)}


def _acquire(engine: ServedEngine, config: Config, ctx: RunContext) -> tuple[ServerProcess, bool]:
    """The pooled server for ``config`` (reused when only restart-free options changed)."""
    engine.prepare(config, ctx)
    key = restart_key(
        config,
        _restart_free(engine, ctx),
        engine=engine.name,
        model=ctx.model.serve_path,
        command=server_command(engine, ctx),
        env=ctx.options.get("env"),
    )
    return _POOL.acquire(key, lambda: _start(engine, config, ctx))


def _request_timeout(ctx: RunContext) -> float:
    return float(ctx.options.get("request_timeout_s", min(ctx.timeout_s, 600)))


def _with_accuracy(
    measured: Measurement,
    engine: ServedEngine,
    config: Config,
    ctx: RunContext,
    server: ServerProcess,
    model_id: str,
) -> Measurement:
    """Run the study's accuracy suite on the same server after the load run (engines.accuracy)."""
    from engines.accuracy import AccuracySettings, run_suite
    from engines.accuracy._client import CompletionsClient
    from engines.accuracy.lossless import check_lossless, must_match_reference

    settings = AccuracySettings.model_validate(ctx.options["accuracy"])
    try:
        context = int(engine.plan(config, ctx).max_model_len)
    except Exception:  # an engine whose plan needs more than this config has
        context = int(ctx.model.max_context)
    report = run_suite(
        server.base_url,
        model_id,
        settings,
        context_tokens=context,
        reference=ctx.options.get("accuracy_reference"),
        workdir=ctx.workdir,
        timeout_s=_request_timeout(ctx),
    )
    if not server.alive():
        _POOL.discard()
        raise server.failure()
    reference = ctx.options.get("accuracy_reference") or {}
    changed = must_match_reference(
        engine.lossless_options, engine.numerics_options, config, reference.get("config")
    )
    if changed:
        with CompletionsClient(server.base_url, model_id, _request_timeout(ctx)) as client:
            kept = check_lossless(changed, client, reference, settings.lossless == "enforce")
        if kept:
            report = dataclasses.replace(report, record={**report.record, "lossless": kept})
    return report.apply(measured)


def _timed_run(
    server: ServerProcess,
    model_id: str,
    source: RequestSource,
    settings: MeasureSettings,
    index: int,
    remaining_s: float,
    load: dict,
    new_monitor: Callable[[], OverloadMonitor] | None = None,
) -> LoadResult:
    """One run of the workload (repeated until ``settings.min_duration_s``, or until a monitor
    from ``new_monitor`` stops it), warmup before the first run only; a run past the trial's
    time is a ``hang``."""
    try:
        result = _repeated_load(
            server, model_id, source, settings, index, remaining_s, load, new_monitor
        )
    except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
        _POOL.discard()  # a server that stalls is not trusted with the next trial
        raise EngineError(
            "hang",
            f"the load run took over {remaining_s:g} s (log: {server.log_path})",
            log_path=str(server.log_path),
        ) from None
    if not server.alive():
        _POOL.discard()
        raise server.failure()
    return result


def _repeated_load(
    server: ServerProcess,
    model_id: str,
    source: RequestSource,
    settings: MeasureSettings,
    index: int,
    remaining_s: float,
    load: dict,
    new_monitor: Callable[[], OverloadMonitor] | None,
) -> LoadResult:
    """Warmup (first run only), then the measured requests; every pass after the trial's very
    first sends prompts the server has not seen (:mod:`.request_source`)."""
    plan = source.plan
    measured = source.measured if index == 0 else source.redraw()
    arrivals = None if plan.arrival_s is None else list(plan.arrival_s[plan.warmup :])
    warm: list[LoadRequest] = []
    if index == 0:
        count = plan.warmup if settings.warmup_requests is None else settings.warmup_requests
        warm = source.requests[:count] if count <= plan.warmup else _cycled(measured, count)
    records: list[RequestRecord] = []
    warmup_records: list[RequestRecord] = []
    duration, deadline = 0.0, time.monotonic() + remaining_s
    if warm:
        progress_log.info("  warmup: %d requests", len(warm))
    if warm:  # a phase of its own that ends before the measured run starts, as in
        # `vllm bench serve`: run into the measured load, the warmup tail staggers the closed
        # loop's start and moved median TTFT by 2x against it on the H100 (crosscheck.json)
        warmed = run_load(
            server.base_url,
            model_id,
            warm,
            concurrency=plan.concurrency or len(warm),  # open loop: warm up all at once
            warmup=len(warm),
            deadline_s=max(deadline - time.monotonic(), 1.0),
            **load,
        )
        warmup_records += warmed.warmup_records
    while True:
        monitor = None if new_monitor is None else new_monitor()  # one per run: its own t0
        progress_log.info("  run %d: measuring %d requests", index + 1, len(measured))
        result = run_load(
            server.base_url,
            model_id,
            measured,
            arrival_s=arrivals,
            concurrency=plan.concurrency,
            deadline_s=max(deadline - time.monotonic(), 1.0),
            on_record=_watched(RunProgress(len(measured)), monitor),
            **load,
        )
        records += [_shifted(r, duration) for r in result.records]
        duration += result.duration_s
        if result.stopped or duration >= settings.min_duration_s or not measured:
            return LoadResult(records, duration, warmup_records, stopped=result.stopped)
        measured = source.redraw()


def _watched(progress: RunProgress, monitor: OverloadMonitor | None):
    """One record hook: progress lines first, then the monitor's verdict (which may stop)."""

    def feed(record: RequestRecord) -> str | None:
        progress.feed(record)
        return None if monitor is None else monitor.feed(record)

    return feed


def _cycled(requests: list[LoadRequest], count: int) -> list[LoadRequest]:
    return [requests[i % len(requests)] for i in range(count)] if requests else []


def _shifted(record: RequestRecord, offset: float) -> RequestRecord:
    if not offset:
        return record
    first = None if record.first_token_s is None else record.first_token_s + offset
    return dataclasses.replace(
        record, start_s=record.start_s + offset, first_token_s=first, end_s=record.end_s + offset
    )


def _with_energy_and_cost(
    measured: Measurement, power: PowerReading, ctx: RunContext, gpus: int
) -> Measurement:
    """Joules per output token from NVML (when it could sample) and $ per 1M output tokens."""
    tokens = measured.output_tokens_per_s * measured.duration_s
    extra = {**measured.extra, "power": power.to_dict()}
    return dataclasses.replace(
        measured,
        joules_per_token=power.joules_per_token(tokens),
        cost_per_mtok_usd=cost_per_mtok(
            measured.output_tokens_per_s, gpus, ctx.hardware.price_per_gpu_hour
        ),
        extra=extra,
    )


def _with_capacity(
    measured: Measurement,
    server: ServerProcess,
    model_id: str,
    source: RequestSource,
    ctx: RunContext,
    load: dict,
) -> Measurement:
    """Search the highest request rate within the SLOs on the same running server."""
    from engines.serving.capacity import CapacityLimits, measure_capacity, search_bounds, timing_for

    options = ctx.options.get("capacity") or {}
    timing = timing_for(measured.e2e_ms.p50, options)
    result = measure_capacity(
        server.base_url,
        model_id,
        source.sample,
        CapacityLimits.from_slo(ctx.slo, float(options.get("max_error_rate", 0.01))),
        start_rps=max(measured.requests_per_s, 0.1),
        min_requests=int(options.get("min_requests", 50)),
        min_duration_s=timing.min_duration_s,
        grace_s=timing.grace_s,
        arrival=options.get("arrival", "poisson"),
        **search_bounds(options),
        seed=ctx.seed,
        slo=ctx.slo,
        keep_records=_trace_writer(ctx, "probe"),
        **load,
    )
    return dataclasses.replace(
        measured,
        capacity_rps=result.capacity_rps,
        extra={
            **measured.extra,
            "capacity": {**result.to_dict(), "probe_s": timing.min_duration_s},
        },
    )


def _trace_writer(
    ctx: RunContext, kind: str
) -> Callable[[int, Sequence[RequestRecord]], None] | None:
    """With ``save_requests``: writes the records of run (or capacity probe) ``index`` to
    ``ctx.workdir/requests`` (:func:`.request_log.request_log_path`)."""
    if not ctx.options.get("save_requests"):
        return None
    folder = ctx.workdir / "requests"

    def write(index: int, records: Sequence[RequestRecord]) -> None:
        write_request_log(request_log_path(folder, ctx.trial_number, index, kind), records)

    return write


def _gpu_count(engine: ServedEngine, config: Config, ctx: RunContext) -> int:
    try:
        return int(engine.plan(config, ctx).gpus)
    except Exception:  # an engine whose plan needs more than this config has
        return 1


def close_servers() -> None:
    """Stop the server kept for reuse (between studies, or at the end of one)."""
    _POOL.close()


def _restart_free(engine: ServedEngine, ctx: RunContext) -> set[str]:
    try:
        space = engine.space(ctx.model, ctx.hardware)
    except Exception:  # a space that cannot be built here: restart on any change
        return set()
    return {p.name for p in space if not p.restart}


def server_command(engine: ServedEngine, ctx: RunContext) -> list[str] | None:
    """What replaces ``argv[0:2]``: ``<engine>_server_command`` (so a study over several
    engines can point each at its own executable), else ``server_command``. A bare ``python``
    first word means the interpreter running servetune: the stand-in specs say ``python -m
    engines.standin.openai_server``, which PATH's ``python`` (another venv, or none) may not
    be able to import when servetune runs from a venv it was not activated from, or a kernel."""
    command = ctx.options.get(f"{engine.name}_server_command") or ctx.options.get("server_command")
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _start(engine: ServedEngine, config: Config, ctx: RunContext) -> ServerProcess:
    """A healthy server on a free port; a port taken in the meantime is retried."""
    bound = bind_host(ctx.options)
    for attempt in range(_PORT_RETRIES + 1):
        port = free_port(bound)
        argv = list(engine.serve_argv(config, ctx, bound, port))
        command = server_command(engine, ctx)
        if command:
            argv = [*command, *argv[2:]]
        trial = "x" if ctx.trial_number is None else str(ctx.trial_number)
        log_path = Path(ctx.workdir) / "logs" / f"trial-{trial}-{engine.name}-{port}.log"
        server = ServerProcess(
            argv,
            port,
            log_path,
            host=client_host(bound),
            env=_environment(engine, config, ctx),
            health_path=engine.health_path,
            startup_timeout_s=float(
                ctx.options.get("startup_timeout_s", min(ctx.timeout_s, 1200.0))
            ),
            stop_grace_s=float(ctx.options.get("stop_grace_s", 30.0)),
        )
        progress_log.info("  server starting on port %d: %s", port, " ".join(argv[:4]) + " ...")
        try:
            begun = time.monotonic()
            started = server.start()
            progress_log.info("  server ready in %.0f s", time.monotonic() - begun)
            return started
        except EngineError as exc:
            if exc.reason != "port_clash" or attempt == _PORT_RETRIES:
                raise
            log.warning("port %d was taken; retrying on another", port)
    raise AssertionError("unreachable")


def _environment(engine: ServedEngine, config: Config, ctx: RunContext) -> dict[str, str]:
    """This process's environment, then the engine's (caches), then ``ctx.options['env']``."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the log file as they happen
    env.update({k: str(v) for k, v in engine.server_env(config, ctx).items()})
    env.update({k: str(v) for k, v in (ctx.options.get("env") or {}).items()})
    return env


def _served_model(server: ServerProcess, ctx: RunContext) -> str:
    """The model name the server answers to: ``/v1/models``' first id, else the serve path."""
    import httpx

    try:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            return str(client.get(server.base_url + "/v1/models").json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return ctx.model.serve_path


def _summarize(
    engine: ServedEngine,
    config: Config,
    ctx: RunContext,
    result: LoadResult,
    server: ServerProcess,
    reused: bool,
    tokenizer_label: str,
    chat: bool,
) -> Measurement:
    if result.records and all(r.error is not None for r in result.records):
        kinds = sorted({r.error for r in result.records if r.error})
        raise EngineError(
            "http_error",
            f"every request failed ({', '.join(kinds)}); log: {server.log_path}",
            log_path=str(server.log_path),
        )
    gpus = _gpu_count(engine, config, ctx)
    extra = {
        "server_start_s": server.start_s,
        "server_reused": reused,
        "log_path": str(server.log_path),
        "server_argv": server.argv,
        "prompt_tokens": tokenizer_label,
        "endpoint": "chat" if chat else "completions",
        "warmup_requests": len(result.warmup_records),
    }
    return summarize(result.records, result.duration_s, ctx.slo, gpu_count=gpus, extra=extra)


__all__ = [
    "LoadRequest",
    "LoadResult",
    "PromptMaker",
    "RequestSource",
    "ServerPool",
    "ServerProcess",
    "classify_failure",
    "close_servers",
    "free_port",
    "measure_reference",
    "measure_server",
    "run_load",
]
