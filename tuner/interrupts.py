"""SIGTERM and SIGHUP end a study the way Ctrl-C does.

Unattended studies end by signal more often than by keyboard: ``kill``, a closed SSH session
(SIGHUP), a scheduler or container stop (SIGTERM). Each becomes a ``KeyboardInterrupt`` in the
main thread, so the trial in flight is failed as ``interrupted``, its server is stopped by the
engines' ``close`` and the study resumes exactly, as after Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def interrupt_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in SIGNALS:
        signal.signal(number, _raise_interrupt)


def _raise_interrupt(number: int, frame: FrameType | None) -> None:
    for each in SIGNALS:  # a second signal while stopping must not interrupt the clean-up
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(number).name)
