"""Processes of the chaos benchmark: the CLI as subprocesses under timeouts, and the census of
stand-in servers and load-generator workers a run left behind.

Everything the benchmark starts carries ``CHAOS_MARKER=<run marker>`` in its environment, which
servers and load-generator workers inherit (servers also get it in argv through
``options.vllm_args``), so the census counts only this benchmark's processes and
:func:`kill_marked` can end them without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER_VAR = "CHAOS_MARKER"
SERVER_MODULE = "engines.standin.openai_server"
LOADGEN_SCRIPT = "loadgen_worker"
REPO = Path(__file__).resolve().parents[2]
_STARTED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class Done:
    """A finished CLI call: exit code (None when it ran past its timeout and was killed)."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str


def cli_env(marker: str) -> dict[str, str]:
    """The environment of a ``python -m tuner`` call: this checkout first on the path, a wide
    terminal (rich would wrap a one-line error at 80 columns) and the marker."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), COLUMNS="400", PYTHONUNBUFFERED="1")
    env[MARKER_VAR] = marker
    env.pop("BENCH_RECORD", None)
    return env


def tuner_argv(*args: str) -> list[str]:
    """``python -m tuner ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tuner", *args]


def spawn(argv: list[str], cwd: Path, marker: str, log: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (so a timeout can end its whole group) and remember it
    for :func:`stop_started`; output goes to ``log`` (stdout and stderr together) or a pipe."""
    out = log.open("wb") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=cli_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        start_new_session=True,
    )
    if log is not None:
        out.close()
    _STARTED.append(proc)
    return proc


def run_cli(args: list[str], cwd: Path, marker: str, timeout_s: float = 120.0) -> Done:
    """Run ``python -m tuner ARGS`` to completion (its group killed past ``timeout_s``)."""
    argv = tuner_argv(*args)
    proc = spawn(argv, cwd, marker)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        code = None
    return Done(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """The exit code, or None after killing the group of a process that outlived ``timeout_s``."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        return None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started by :func:`spawn` and its session's process group."""
    for send in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send()


def stop_started() -> None:
    """End every process :func:`spawn` started that is still running (and reap them)."""
    for proc in _STARTED:
        if proc.poll() is None:
            kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    _STARTED.clear()


# ---------------------------------------------------------------- the census of /proc
def _read(pid: str, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def _alive(pid: str) -> bool:
    stat = _read(pid, "stat")
    return bool(stat) and stat.rpartition(b")")[2].split()[:1] != [b"Z"]


def marked_processes(marker: str) -> dict[str, list[int]]:
    """Live pids carrying ``marker`` (exactly, or as a prefix when it ends with ``-``): stand-in
    servers and load-generator workers."""
    found: dict[str, list[int]] = {"servers": [], "loadgen": []}
    wanted = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        cmdline = _read(entry, "cmdline")
        kind = (
            "servers"
            if SERVER_MODULE.encode() in cmdline
            else "loadgen"
            if LOADGEN_SCRIPT.encode() in cmdline
            else None
        )
        if kind is None:
            continue
        environ = _read(entry, "environ").split(b"\0")
        tagged = any(
            v == MARKER_VAR.encode() + b"=" + wanted
            or (wanted.endswith(b"-") and v.startswith(MARKER_VAR.encode() + b"=" + wanted))
            for v in environ
        )
        if (tagged or wanted in cmdline.split(b"\0")) and _alive(entry):
            found[kind].append(int(entry))
    return found


def server_instances(pids: list[int]) -> int:
    """Servers among ``pids``, counted once per ``--port`` (a wrapper such as a guard process
    that carries the server's argv counts with the server it wraps, not as a second one)."""
    ports = set()
    for pid in pids:
        argv = _read(str(pid), "cmdline").split(b"\0")
        port = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == b"--port"), None)
        ports.add(port if port is not None else pid)
    return len(ports)


def census_after(marker: str, wait_s: float = 5.0) -> dict[str, int]:
    """Servers and load-generator workers of ``marker`` still alive once they had up to
    ``wait_s`` to go (a fix may end them a moment after their owner died), then killed so the
    next run starts clean."""
    deadline = time.monotonic() + wait_s
    while True:
        found = marked_processes(marker)
        if not any(found.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    counts = {"servers": server_instances(found["servers"]), "loadgen": len(found["loadgen"])}
    kill_marked(marker)
    return counts


def kill_marked(marker: str, wait_s: float = 2.0) -> None:
    """SIGKILL every live process :func:`marked_processes` finds for ``marker``, and wait up to
    ``wait_s`` for them to be gone (a killed process lingers a moment before it is a zombie)."""
    for pids in marked_processes(marker).values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while any(marked_processes(marker).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
