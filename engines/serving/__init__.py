"""Real-server measurement shared by every OpenAI-compatible engine (vLLM, TensorRT-LLM).

:func:`measure_server` is all an engine's ``run`` calls. The engine supplies what differs:

* ``serve_argv(config, ctx, host, port) -> list[str]`` (required): the server command;
* ``prepare(config, ctx)`` (optional): a step before start, such as building a TensorRT engine;
* ``server_env(config, ctx) -> dict`` (optional): environment, e.g. a compile-cache directory;
* ``health_path`` (optional attribute, default ``/health``).

Everything else (free port, process group, health wait, failure reasons, reuse across trials,
prompts of exact length, the load generator, the metrics) lives here, once. ``ctx.options`` may
set ``server_command`` (a list replacing ``argv[0:2]``, e.g. ``[sys.executable, "-m",
"engines.standin.openai_server"]``), ``env`` (extra environment), ``startup_timeout_s``,
``stop_grace_s``, ``request_timeout_s``, ``endpoint`` (``completions`` or ``chat``) and
``extra_body`` (merged into every request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from engines.base import Config, Engine, RunContext
from engines.errors import EngineError
from engines.metrics import Measurement, summarize
from engines.serving.lifecycle import HOST, ServerProcess, classify_failure, free_port
from engines.serving.loadgen import LoadRequest, LoadResult, run_load
from engines.serving.pool import ServerPool, restart_key
from engines.serving.prompts import PromptMaker, is_sharegpt, load_tokenizer, read_sharegpt
from engines.workload import RequestPlan, plan_requests

log = logging.getLogger(__name__)

_POOL = ServerPool()
_PORT_RETRIES = 2


def measure_server(engine: Engine, config: Config, ctx: RunContext) -> Measurement:
    """Start (or reuse) ``engine``'s server for ``config``, drive ``ctx.workload``, summarize.

    Raises EngineError with a reason (``oom``, ``invalid_argument``, ``port_clash``,
    ``startup_timeout``, ``crash``, ``http_error``, ``hang``) when the trial cannot be measured.
    """
    prepare = getattr(engine, "prepare", None)
    if callable(prepare):
        prepare(config, ctx)
    key = restart_key(
        config,
        _restart_free(engine, ctx),
        engine=engine.name,
        model=ctx.model.serve_path,
        command=ctx.options.get("server_command"),
        env=ctx.options.get("env"),
    )
    server, reused = _POOL.acquire(key, lambda: _start(engine, config, ctx))
    model_id = _served_model(server, ctx)
    requests, plan, tokenizer_label = _requests(ctx)
    chat = ctx.options.get("endpoint", "completions") == "chat"
    try:
        result = run_load(
            server.base_url,
            model_id,
            requests,
            arrival_s=plan.arrival_s,
            concurrency=plan.concurrency,
            warmup=plan.warmup,
            chat=chat,
            request_timeout_s=float(ctx.options.get("request_timeout_s", min(ctx.timeout_s, 600))),
            extra_body=ctx.options.get("extra_body"),
            deadline_s=ctx.timeout_s,
        )
    except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
        _POOL.discard()  # a server that stalls is not trusted with the next trial
        raise EngineError(
            "hang",
            f"the load run took over {ctx.timeout_s:g} s (log: {server.log_path})",
            log_path=str(server.log_path),
        ) from None
    if not server.alive():
        _POOL.discard()
        raise server.failure()
    return _summarize(engine, config, ctx, result, server, reused, tokenizer_label, chat)


def close_servers() -> None:
    """Stop the server kept for reuse (between studies, or at the end of one)."""
    _POOL.close()


def _restart_free(engine: Engine, ctx: RunContext) -> set[str]:
    try:
        space = engine.space(ctx.model, ctx.hardware)
    except Exception:  # a space that cannot be built here: restart on any change
        return set()
    return {p.name for p in space if not p.restart}


def _start(engine: Engine, config: Config, ctx: RunContext) -> ServerProcess:
    """A healthy server on a free port; a port taken in the meantime is retried."""
    for attempt in range(_PORT_RETRIES + 1):
        port = free_port(HOST)
        argv = list(engine.serve_argv(config, ctx, HOST, port))  # type: ignore[attr-defined]
        command = ctx.options.get("server_command")
        if command:
            argv = [*command, *argv[2:]]
        trial = "x" if ctx.trial_number is None else str(ctx.trial_number)
        log_path = Path(ctx.workdir) / "logs" / f"trial-{trial}-{engine.name}-{port}.log"
        server = ServerProcess(
            argv,
            port,
            log_path,
            host=HOST,
            env=_environment(engine, config, ctx),
            health_path=getattr(engine, "health_path", "/health"),
            startup_timeout_s=float(
                ctx.options.get("startup_timeout_s", min(ctx.timeout_s, 1200.0))
            ),
            stop_grace_s=float(ctx.options.get("stop_grace_s", 30.0)),
        )
        try:
            return server.start()
        except EngineError as exc:
            if exc.reason != "port_clash" or attempt == _PORT_RETRIES:
                raise
            log.warning("port %d was taken; retrying on another", port)
    raise AssertionError("unreachable")


def _environment(engine: Engine, config: Config, ctx: RunContext) -> dict[str, str]:
    """This process's environment, then the engine's (caches), then ``ctx.options['env']``."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the log file as they happen
    hook = getattr(engine, "server_env", None)
    if callable(hook):
        env.update({k: str(v) for k, v in hook(config, ctx).items()})
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


def _requests(ctx: RunContext) -> tuple[list[LoadRequest], RequestPlan, str]:
    """Concrete requests for the trial, plus how prompt lengths were made."""
    workload = ctx.workload
    path = ctx.model.path
    maker = PromptMaker(load_tokenizer(path if path and Path(path).is_dir() else None), ctx.seed)
    if workload.dataset and is_sharegpt(workload.dataset):
        plan, prompts = _sharegpt_plan(ctx, maker)
    else:
        plan = plan_requests(workload, ctx.seed)
        if plan.prompts is not None:
            prompts = list(plan.prompts)
            plan = dataclasses.replace(
                plan, input_tokens=np.array([maker.count(p) for p in prompts])
            )
        else:
            prompts = maker.make(plan.input_tokens, plan.shared_prefix_tokens)
    requests = [
        LoadRequest(p, int(i), int(o))
        for p, i, o in zip(prompts, plan.input_tokens, plan.output_tokens, strict=True)
    ]
    return requests, plan, maker.label


def _sharegpt_plan(ctx: RunContext, maker: PromptMaker) -> tuple[RequestPlan, list[str]]:
    """Arrivals from the workload, lengths and prompts sampled from a ShareGPT file."""
    pairs = read_sharegpt(ctx.workload.dataset)  # type: ignore[arg-type]
    plan = plan_requests(ctx.workload.model_copy(update={"dataset": None}), ctx.seed)
    idx = np.random.default_rng(ctx.seed).integers(0, len(pairs), size=plan.count)
    prompts = [pairs[i][0] for i in idx]
    outputs = np.array([max(1, maker.count(pairs[i][1]) - maker.special_tokens) for i in idx])
    inputs = np.array([maker.count(p) for p in prompts])
    return dataclasses.replace(
        plan, input_tokens=inputs, output_tokens=outputs, shared_prefix_tokens=0
    ), prompts


def _summarize(
    engine: Engine,
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
    try:
        gpus = engine.plan(config, ctx).gpus
    except Exception:  # an engine whose plan needs more than this config has
        gpus = 1
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
    "ServerPool",
    "ServerProcess",
    "classify_failure",
    "close_servers",
    "free_port",
    "measure_server",
    "run_load",
]
