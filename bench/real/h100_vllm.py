"""The real vLLM proof on an H100 (run on the device machine, vLLM importable).

    python bench/real/h100_vllm.py setup                 # dummy Llama-3.1-8B model directory
    python bench/real/h100_vllm.py baseline --out DIR    # trial 0 (vLLM defaults) + vllm bench serve
    python bench/real/h100_vllm.py study --seconds 540 --out DIR   # resume the study until then
    python bench/real/h100_vllm.py finalize --out DIR    # winner + baseline re-measured, capacity
    python bench/real/h100_vllm.py enqueue --spec GRID --from DB --trials 0,3   # replay configs

``--spec`` picks another study spec (default: the H100 study). The H200 grid
(studies/real/h200-llama8b-vllm-grid.yaml) replays six of the H100 study's configs on an H200:
``enqueue`` queues them in order, each at every load level of the spec's sweep (one server per
config), ``study`` measures them, ``finalize`` re-measures its defaults and winner.

``baseline`` measures vLLM's default config as the study's first trial and then, on the very
same running server, runs ``vllm bench serve`` with the same workload, so the two tools'
numbers can be compared (written to DIR/crosscheck.json). ``study`` resumes the servetune study
(studies/real/h100-llama8b-vllm.yaml) and stops starting trials when too little time is left;
the Optuna DB is copied to DIR after every trial so nothing is lost if the machine goes.

``finalize`` re-measures the study's winner next to the baseline on the same machine (trials of
one study can come from two machines: the device tool lends each for 30 minutes), each run
``--repeats`` times on one running server, with its capacity under ``CAPACITY_SLOS`` and NVML
energy per token (issue 15's proof); it writes DIR/finalists.json. ``--capacity-steps`` caps the
probes of the capacity search, and ``--no-crosscheck`` skips the ``vllm bench serve`` run on the
baseline's server: a first vLLM start (~3 min), five runs and a capacity search fill most of a
600 s call on their own (session 4: 477 s).

On the device machine, run ``setup`` in every call: ignored folders such as the model
directory do not survive from one call to the next. ``--state DIR`` (e.g. /root/campaign) keeps
the study's DB on the machine between calls while it stays warm: each command starts from the
newer of that copy and the one in the working tree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.real.knob_screen import copy_storage  # noqa: E402
from bench.real.make_dummy_model import make  # noqa: E402
from engines.serving.measure import _POOL  # noqa: E402  (the running server, for the cross-check)
from tuner.spec import load_spec  # noqa: E402
from tuner.study.loop import build_engines, run_study  # noqa: E402

SPEC = Path("studies/real/h100-llama8b-vllm.yaml")
TRIAL_SECONDS = 150  # a restart (~60 s) plus 800 requests (~60 s), with margin
# Interactive-chat limits for the capacity search (not constraints of the study itself).
CAPACITY_SLOS = {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 60.0}
STATE: Path | None = None


def _db_path(spec) -> Path:
    return Path(spec.storage_url.removeprefix("sqlite:///"))


def _restore_db(spec) -> None:
    """Start from the machine's own copy of the DB when it is newer than the working tree's."""
    if STATE is None:
        return
    kept, db = STATE / _db_path(spec).name, _db_path(spec)
    if kept.exists() and (not db.exists() or kept.stat().st_mtime > db.stat().st_mtime):
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        db.write_bytes(kept.read_bytes())
        print(f"restored {db} from {kept}", flush=True)


def _save(out: Path, spec) -> None:
    _copy_db(out, spec)
    if STATE is not None:
        _copy_db(STATE, spec)


def _copy_db(out: Path, spec) -> None:
    """A consistent copy of the study's SQLite file, if it exists (see ``copy_storage``)."""
    if _db_path(spec).exists():
        copy_storage(f"sqlite:///{_db_path(spec)}", out)


class _KeepServer:
    """An engine whose close() leaves the server running (so vllm bench serve can use it)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def close(self) -> None:
        pass


def baseline(out: Path) -> None:
    spec = load_spec(SPEC)
    _restore_db(spec)
    first = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 1})})
    engines = {name: _KeepServer(e) for name, e in build_engines(first).items()}
    study = run_study(first, engines=engines)
    _save(out, spec)
    trial = study.trials[0]
    server = _POOL.current
    if server is None or trial.state.name != "COMPLETE":
        raise SystemExit(f"baseline failed: {trial.state.name} {trial.user_attrs.get('fail')}")
    crosscheck(spec, server, trial.user_attrs["metrics"], out, trial.user_attrs["result"])
    _POOL.close()


def crosscheck(spec, server, mine: dict, out: Path, result: dict | None = None) -> None:
    """``vllm bench serve`` with the study's workload on the running ``server``; both tools'
    numbers side by side in DIR/crosscheck.json."""
    model_dir = spec.model.path
    started = time.monotonic()
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.cli.main",
        "bench",
        "serve",
        "--backend",
        "vllm",
        "--base-url",
        server.base_url,
        "--model",
        model_dir,
        "--tokenizer",
        model_dir,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(spec.workload.input_tokens.value),
        "--random-output-len",
        str(spec.workload.output_tokens.value),
        "--num-prompts",
        str(spec.workload.num_requests),
        "--max-concurrency",
        str(spec.workload.arrival.concurrency),
        "--num-warmups",
        str(spec.workload.warmup_requests),
        "--ignore-eos",
        "--temperature",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--save-result",
        "--result-dir",
        str(out),
        "--result-filename",
        "vllm_bench_serve.json",
        "--disable-tqdm",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    (out / "vllm_bench_serve.log").write_text(done.stdout[-20000:] + done.stderr[-20000:])
    bench = json.loads((out / "vllm_bench_serve.json").read_text())
    pairs = {
        "output_tokens_per_s": "output_throughput",
        "ttft_p50_ms": "median_ttft_ms",
        "tpot_p50_ms": "median_tpot_ms",
        "ttft_p99_ms": "p99_ttft_ms",
        "tpot_p99_ms": "p99_tpot_ms",
        "itl_p50_ms": "median_itl_ms",
        "e2e_p50_ms": "median_e2el_ms",
        "requests_per_s": "request_throughput",
    }
    rows = {
        k: {
            "servetune": mine.get(k),
            "vllm_bench_serve": bench.get(v),
            "difference_pct": 100.0 * (mine[k] - bench[v]) / bench[v]
            if mine.get(k) and bench.get(v)
            else None,
        }
        for k, v in pairs.items()
    }
    (out / "crosscheck.json").write_text(
        json.dumps(
            {
                "server_argv": ((result or {}).get("measurement") or {})
                .get("extra", {})
                .get("server_argv"),
                "bench_seconds": round(time.monotonic() - started, 1),
                "metrics": rows,
            },
            indent=2,
        )
    )
    print(json.dumps(rows, indent=1))


def study(seconds: float, out: Path) -> None:
    began = time.monotonic()
    spec = load_spec(SPEC)
    _restore_db(spec)
    minutes = max(0.1, (seconds - TRIAL_SECONDS) / 60.0)
    spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"minutes": minutes})})

    def progress(outcome, done, total):
        _save(out, spec)
        print(
            f"[{time.monotonic() - began:6.0f}s] trial {outcome.number} {outcome.state} "
            f"{outcome.values} {outcome.reason or ''}",
            flush=True,
        )

    run_study(spec, progress=progress)
    _save(out, spec)


def enqueue(source: Path, trials: list[int]) -> None:
    """Queue trials of the study stored in ``source`` (same study name as its file) in SPEC."""
    import optuna

    from tuner.study.replay import enqueue_configs, trial_configs

    spec = load_spec(SPEC)
    _restore_db(spec)
    stored = optuna.load_study(study_name=source.stem, storage=f"sqlite:///{source}")
    configs = trial_configs(stored, trials)
    print(f"queued {enqueue_configs(spec, configs)} trials in {spec.name}", flush=True)


def finalize(
    out: Path,
    repeats: int,
    only: str = "both",
    crosscheck_tools: bool = True,
    steps: int = 4,
    tolerance: float = 0.2,
) -> None:
    """Winner and baseline re-measured in one call: spread over runs, capacity, joules/token."""
    from tuner.analysis.results import trial_records
    from tuner.study.loop import make_context, open_study

    spec = load_spec(SPEC)
    _restore_db(spec)
    variant = spec.model_copy(
        update={
            "slos": dict(CAPACITY_SLOS),
            "measurement": spec.measurement.model_copy(
                update={"repeats": repeats, "capacity": True}
            ),
            "options": {
                **spec.options,
                "capacity": {"max_steps": steps, "rel_tol": tolerance, "min_duration_s": 8.0},
                # its own folder: the study's trial logs and request traces stay as they were
                "workdir": f"{spec.options.get('workdir', 'studies/runs/' + spec.name)}/finalize",
            },
        }
    )
    records = trial_records(open_study(spec, create=False))
    base = next(r for r in records if r.baseline and r.state == "COMPLETE")
    winner = best_within_baseline_ttft(records, base)
    engine = build_engines(variant)["vllm"]
    began = time.monotonic()
    report: dict = {
        "study": spec.name,
        "slos_for_capacity": CAPACITY_SLOS,
        "repeats": repeats,
        "configs": [],
    }
    chosen = {"both": (base, winner), "baseline": (base,), "winner": (winner,)}[only]
    target = out / ("finalists.json" if only == "both" else f"finalists-{only}.json")
    try:
        for record in chosen:
            ctx = make_context(variant, record.number)
            measured = engine.run(record.config, ctx)
            if crosscheck_tools and record.baseline and _POOL.current is not None:  # the other tool
                try:
                    crosscheck(spec, _POOL.current, measured.metrics(), out)
                except (OSError, ValueError, subprocess.SubprocessError) as error:
                    print(f"cross-check failed, finalize goes on: {error!r}", flush=True)
            report["configs"].append(
                {
                    "trial": record.number,
                    "baseline": record.baseline,
                    "config": record.config,
                    "study_metrics": record.metrics,
                    "measurement": measured.to_dict(),
                }
            )
            report["seconds"] = round(time.monotonic() - began, 1)
            target.write_text(json.dumps(report, indent=2, default=str))
            print(
                f"[{time.monotonic() - began:6.0f}s] trial {record.number}: "
                f"{measured.output_tokens_per_s:.0f} tok/s, capacity {measured.capacity_rps} req/s, "
                f"{measured.joules_per_token} J/tok, runs {measured.extra.get('runs')}",
                flush=True,
            )
    finally:
        engine.close()


def best_within_baseline_ttft(records, base):
    """The highest-throughput completed trial whose p99 TTFT is no worse than the baseline's
    (the issue's target), else the highest-throughput one; at the baseline's load level."""
    load = base.attrs.get("load")  # a sweep's trials compete at the baseline's load level only
    done = [
        r
        for r in records
        if r.state == "COMPLETE" and not r.baseline and r.attrs.get("load") == load
    ]
    if not done:
        raise SystemExit("no completed trial besides the baseline")
    limit = base.metrics["ttft_p99_ms"]
    within = [r for r in done if r.metrics.get("ttft_p99_ms", float("inf")) <= limit]
    return max(within or done, key=lambda r: r.metrics.get("output_tokens_per_s", 0.0))


def main() -> None:
    global SPEC, STATE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["setup", "baseline", "study", "finalize", "enqueue"])
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--seconds", type=float, default=540)
    parser.add_argument("--spec", type=Path, default=SPEC, help="(tests: a stand-in variant)")
    parser.add_argument("--state", type=Path, default=None, help="DB kept here between calls")
    parser.add_argument("--repeats", type=int, default=3, help="finalize: runs per config")
    parser.add_argument("--only", choices=["both", "baseline", "winner"], default="both")
    parser.add_argument("--from", dest="source", type=Path, help="enqueue: a study's SQLite file")
    parser.add_argument("--trials", default="", help="enqueue: trial numbers, e.g. 0,3,7")
    parser.add_argument(
        "--no-crosscheck", action="store_true", help="finalize: no vllm bench serve afterwards"
    )
    parser.add_argument("--capacity-steps", type=int, default=4, help="finalize: probes at most")
    parser.add_argument(
        "--capacity-tol",
        type=float,
        default=0.2,
        help="finalize: the capacity bracket's width, as a share of its top, where probing stops",
    )
    args = parser.parse_args()
    SPEC = args.spec
    if args.state is not None:
        args.state.mkdir(parents=True, exist_ok=True)
        STATE = args.state
    if args.command == "setup":
        make(Path(load_spec(SPEC).model.path))
    elif args.command == "baseline":
        baseline(args.out)
    elif args.command == "study":
        study(args.seconds, args.out)
    elif args.command == "enqueue":
        if args.source is None or not args.trials:
            parser.error("enqueue needs --from and --trials")
        from engines.errors import SpecError
        from tuner.study.replay import parse_trials

        try:
            enqueue(args.source, parse_trials(args.trials))
        except SpecError as error:
            parser.error(str(error))
    else:
        finalize(
            args.out,
            args.repeats,
            args.only,
            not args.no_crosscheck,
            args.capacity_steps,
            args.capacity_tol,
        )


if __name__ == "__main__":
    main()
