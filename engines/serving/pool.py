"""Keep one server running across trials while the options that need a restart stay the same.

Starting vLLM costs tens of seconds to minutes (weights, profiling, CUDA graphs), so a trial
whose config differs from the running server's only in options a server takes at run time
(``Param.restart`` False), or only in the workload, reuses it. One server is kept at a time: the
GPUs hold one engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from engines.serving.lifecycle import ServerProcess

log = logging.getLogger(__name__)


def restart_key(config: Mapping[str, Any], restart_free: set[str], **identity: Any) -> str:
    """A stable key of everything that needs a fresh server: ``config`` without the
    ``restart_free`` options, plus ``identity`` (engine, model, command, environment)."""
    relevant = {k: v for k, v in config.items() if k not in restart_free}
    return json.dumps({"config": relevant, **identity}, sort_keys=True, default=str)


class ServerPool:
    """Holds at most one running server, keyed by :func:`restart_key`."""

    def __init__(self) -> None:
        self._server: ServerProcess | None = None
        self._key: str | None = None
        self.starts = 0

    @property
    def current(self) -> ServerProcess | None:
        return self._server

    def acquire(self, key: str, start: Callable[[], ServerProcess]) -> tuple[ServerProcess, bool]:
        """The running server for ``key`` (reused: True) or a new one from ``start()``.

        A server with another key, or one that died, is stopped first. ``start`` must return a
        healthy server or raise; nothing is kept when it raises.
        """
        if self._server is not None and self._key == key and self._server.alive():
            return self._server, True
        self.close()
        server = start()
        self.starts += 1
        self._server, self._key = server, key
        return server, False

    def discard(self) -> None:
        """Forget and stop the current server (after it failed mid-run)."""
        self.close()

    def close(self) -> None:
        """Stop the running server, if any; safe to call twice."""
        server, self._server, self._key = self._server, None, None
        if server is not None:
            log.info("stopping server on port %d", server.port)
            server.stop()
