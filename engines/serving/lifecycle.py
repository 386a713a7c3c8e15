"""Start a real inference server, wait until it is healthy, and always take it down again.

:class:`ServerProcess` runs one server (an argv list, never a shell string) in its own process
group with its output in a kept log file, polls ``GET /health`` until 200 or a deadline, and
turns an early death into an :class:`~engines.errors.EngineError` whose reason comes from the
exit code and the log tail (:func:`classify_failure`). Teardown runs on every path: ``finally``,
SIGTERM/SIGINT (chained to whatever handler was there) and ``atexit``. It SIGTERMs the whole
group, waits, SIGKILLs what is left and reaps it, then checks that the port is free.

Servers such as vLLM start helper processes (``EngineCore``) that outlive their parent when it is
killed; this process makes itself a child subreaper (Linux) so those orphans come back to it and
can be reaped instead of lingering as zombies in the group.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from engines.errors import EngineError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Most specific first: vLLM reports a KV-cache shortfall as a ValueError, so "oom" beats
# "invalid_argument"; argparse errors never mention memory.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "oom",
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks"
            r"|KV cache.{0,200}larger than (?:the )?available|not enough GPU memory"
            r"|less than desired GPU memory utilization|CUDA error: out of memory",
            re.I,
        ),
    ),
    ("port_clash", re.compile(r"Address already in use|Errno 98\]", re.I)),
    (
        "invalid_argument",
        re.compile(
            r"error: argument|unrecognized arguments|error: the following arguments are required"
            r"|^\w*(?:ValueError|ValidationError|TypeError)\b|validation errors? for",
            re.M,
        ),
    ),
)
_TAIL_BYTES = 64 * 1024


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it; racy by nature, so callers
    that get ``port_clash`` should retry with a new one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path, size: int = _TAIL_BYTES) -> str:
    """The last ``size`` bytes of a log file as text ("" when unreadable)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def classify_failure(returncode: int | None, tail: str) -> tuple[str, str]:
    """Reason code and a one-line cause for a server that died while starting.

    ``returncode`` None means it never became healthy in time (``startup_timeout``). A negative
    code is death by signal, often the host's OOM killer, reported as ``crash`` with the signal.
    """
    for reason, pattern in _PATTERNS:
        if returncode is None and reason != "oom":
            continue  # a live server's log may mention anything; only a memory failure counts
        match = pattern.search(tail)
        if match:
            return reason, _line_at(tail, match.start())
    if returncode is None:
        return "startup_timeout", _last_line(tail) or "no output"
    if returncode == 2:  # argparse's exit status, even when its message was not recognised
        return "invalid_argument", _last_line(tail) or "exit status 2"
    if returncode < 0:
        name = (
            signal.Signals(-returncode).name
            if -returncode in signal.valid_signals()
            else (str(-returncode))
        )
        return "crash", f"killed by {name}" + (" (host OOM killer?)" if name == "SIGKILL" else "")
    return "crash", _last_line(tail) or f"exit status {returncode}"


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start : end if end >= 0 else None].strip()[:300]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# The server runs under engines/serving/guard.py, which ends its group when this process dies.
GUARD = Path(__file__).with_name("guard.py")


# ---------------------------------------------------------------- teardown on every exit path
_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()
_HOOKS_INSTALLED = False


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _chain(signum: int, previous: Any) -> Any:
    def handler(number: int, frame: FrameType | None) -> None:
        _stop_all()
        if callable(previous):
            previous(number, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL: die by the same signal
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)

    return handler


def _install_hooks() -> None:
    """atexit and SIGTERM/SIGINT handlers that stop live servers, once per process."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_stop_all)
    _become_subreaper()
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still runs
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _chain(signum, signal.getsignal(signum)))


def _become_subreaper() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


# ---------------------------------------------------------------- the server
class ServerProcess:
    """One server process: start, wait healthy, stop; a context manager.

    ``start_s`` is the time from spawn to the first healthy answer. ``stop`` is idempotent and
    safe from a signal handler.
    """

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        *,
        host: str = HOST,
        env: Mapping[str, str] | None = None,
        health_path: str = "/health",
        startup_timeout_s: float = 1200.0,
        stop_grace_s: float = 30.0,
        cwd: str | Path | None = None,
    ) -> None:
        if isinstance(argv, str):
            raise TypeError("argv must be a list of strings, not a shell string")
        self.argv = [str(a) for a in argv]
        self.host, self.port = host, port
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.health_path = health_path
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.cwd = cwd
        self.start_s: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServerProcess:
        """Spawn and wait for ``/health`` == 200; on failure stop and raise EngineError."""
        if not port_is_free(self.port, self.host):
            raise EngineError("port_clash", f"{self.host}:{self.port} is already in use")
        _install_hooks()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s (log %s)", " ".join(self.argv), self.log_path)
        began = time.perf_counter()
        with self.log_path.open("ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            if shutil.which(self.argv[0], path=(self.env or os.environ).get("PATH")) is None:
                raise EngineError(
                    "not_installed",
                    f"cannot run {self.argv[0]!r} (not found): install the engine (e.g. "
                    "pip install 'servetune[vllm]') or set options.server_command",
                )
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, str(GUARD), str(os.getpid()), "--", *self.argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError) as exc:
                raise EngineError(
                    "not_installed",
                    f"cannot run {self.argv[0]!r} ({exc.strerror}): install the engine (e.g. "
                    "pip install 'servetune[vllm]') or set options.server_command",
                ) from None
        _LIVE.add(self)
        try:
            self._wait_healthy(began)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - began
        log.info("server healthy on port %d after %.1f s", self.port, self.start_s)
        return self

    def _wait_healthy(self, began: float) -> None:
        deadline = began + self.startup_timeout_s
        delay = 0.02
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
            while True:
                code = self.proc.poll()  # type: ignore[union-attr]
                if code is not None:
                    self._raise_failure(code)
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.base_url + self.health_path).status_code == 200:
                        if self.proc.poll() is None:  # type: ignore[union-attr]
                            return  # healthy, and the answer came from our process
                        continue
                if time.perf_counter() >= deadline:
                    self._raise_failure(None)
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    def _raise_failure(self, code: int | None) -> None:
        tail = log_tail(self.log_path)
        reason, cause = classify_failure(code, tail)
        if code is None and reason == "startup_timeout":
            cause = f"not healthy after {self.startup_timeout_s:g} s; last output: {cause}"
        elif code is None:  # alive but stuck after an engine child ran out of memory
            cause = f"not healthy after {self.startup_timeout_s:g} s: {cause}"
        raise EngineError(reason, f"{cause} (log: {self.log_path})", log_path=str(self.log_path))

    def failure(self) -> EngineError:
        """The error to report for a server that died after it was healthy (e.g. OOM mid-run)."""
        code = self.proc.poll() if self.proc is not None else None
        reason, cause = classify_failure(code if code is not None else 1, log_tail(self.log_path))
        return EngineError(
            reason,
            f"server died during the run: {cause} (log: {self.log_path})",
            log_path=str(self.log_path),
        )

    def stop(self) -> None:
        """SIGTERM the group, wait ``stop_grace_s``, SIGKILL it, reap, check the port is free."""
        if self._stopped or self.proc is None:
            return
        self._stopped = True
        _LIVE.discard(self)
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "server pid %d ignored SIGTERM for %g s; killing its group", pgid, self.stop_grace_s
            )
        self._kill_group(pgid)
        if not port_is_free(self.port, self.host):
            log.warning("port %d still busy after the server stopped", self.port)

    def _kill_group(self, pgid: int) -> None:
        """SIGKILL whatever is left in the group and reap our children there, for up to 5 s."""
        deadline = time.monotonic() + 5.0
        while group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            if self.proc.poll() is None:  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)  # type: ignore[union-attr]
            _reap_group(pgid)
            if time.monotonic() > deadline:
                log.warning("process group %d still has members after SIGKILL", pgid)
                return
            time.sleep(0.02)


def _reap_group(pgid: int) -> None:
    """Collect exited children of ours (orphans handed to us as subreaper) in group ``pgid``."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
