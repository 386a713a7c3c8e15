"""Run a server so that it cannot outlive the tuner that started it.

``python guard.py TUNER_PID -- ARGV...``: the guard leads the server's process group (the tuner
starts it in a new session), runs ARGV as its child in that group, and every 0.2 s checks that
its parent is still TUNER_PID. When the tuner is gone, even by ``kill -9`` (which runs none of the
tuner's clean-up), the guard sends SIGTERM to the whole group (vLLM's EngineCore children
included), waits ``GRACE_S`` and SIGKILLs what is left: a dead tuner leaves no server holding
the GPU's memory or the port. Otherwise it waits for ARGV and ends as it ended (same exit code,
or the same signal), so the tuner reads the server's own exit. A stop from the tuner (SIGTERM to
the group) reaches ARGV directly; the guard ignores it and follows its child.

Stdlib only and run by path, so it needs nothing the server's environment may lack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.2
GRACE_S = 5.0


def _stop_group() -> None:
    try:
        os.killpg(0, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)  # the guard goes too, last


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: guard.py TUNER_PID -- ARGV...\n")
        return 2
    tuner = int(argv[0])
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # ARGV gets the group's signals itself
    try:
        child = subprocess.Popen(argv[2:], restore_signals=True, preexec_fn=_default_signals)
    except OSError as exc:
        sys.stderr.write(f"guard: cannot run {argv[2]!r}: {exc.strerror}\n")
        return 127
    while child.poll() is None:
        if os.getppid() != tuner:
            _stop_group()
        time.sleep(POLL_S)
    code = child.returncode
    if code < 0:  # end by the same signal, so the tuner sees what killed the server
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _default_signals() -> None:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
