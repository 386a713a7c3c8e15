"""Run an event loop to completion, turning Ctrl-C, SIGTERM and SIGHUP into a clean cancellation.

A signal handler that raises (Python's SIGINT handler, servetune's SIGTERM/SIGHUP one, the
server teardown chained in front of them) raises wherever the loop happens to be, often inside
``select``: the load generator's ``finally`` never runs, its worker processes are left to the
garbage collector after the loop closed, and Python prints tracebacks at exit. Here such a
signal cancels the running coroutine instead, as ``asyncio.Runner`` does for SIGINT alone, and
once its cleanup has run the signal is handed to the handler that was there before (which
raises KeyboardInterrupt, or kills the process by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_cancelling_on_signals(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``; a signal of :data:`DEFERRED` cancels it first, then goes to
    its previous handler. Outside the main thread (no signal handlers there) plain asyncio.run."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coroutine)
    caught: list[int] = []
    task: list[asyncio.Task[T]] = []

    async def main() -> T:
        task.append(asyncio.current_task())  # type: ignore[arg-type]
        return await coroutine

    def on_signal(signum: int, _frame: object) -> None:
        caught.append(signum)
        if task and len(caught) == 1:
            task[0].cancel()
            task[0].get_loop().call_soon_threadsafe(lambda: None)  # wake the selector

    previous = {s: signal.getsignal(s) for s in DEFERRED}
    for signum, handler in previous.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(signum, on_signal)
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not caught:
            raise
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
    _deliver(caught[0], previous[caught[0]])
    raise KeyboardInterrupt  # the previous handler returned: still, the run did not finish


def _deliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), signum)
