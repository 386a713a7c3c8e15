"""Engines measured through a real OpenAI-compatible server: the hooks the shared runner calls.

:func:`engines.serving.measure.measure_server` starts, health-checks, drives and stops the
server; a served engine says only what differs between engines. ``serve_argv`` is abstract, so
an engine that forgets it fails when its class is instantiated, not in the middle of a trial.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from engines.base import Config, Engine, RunContext
from engines.metrics import Measurement


class ServedEngine(Engine):
    """An engine whose ``run`` starts (or reuses) its server and drives it over HTTP."""

    health_path: ClassVar[str] = "/health"

    @abstractmethod
    def serve_argv(self, config: Config, ctx: RunContext, host: str, port: int) -> list[str]:
        """The server's full command line (a list, never a shell string), bound to host:port."""

    def prepare(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        """A step before the server starts (e.g. building a TensorRT engine); what it made."""
        return {}

    def server_env(self, config: Config, ctx: RunContext) -> dict[str, str]:
        """Environment added to the server's (e.g. a compile-cache directory)."""
        return {}

    def run(self, config: Config, ctx: RunContext) -> Measurement:
        from engines.serving.measure import measure_server  # the HTTP stack only when measuring

        return measure_server(self, config, ctx)

    def close(self) -> None:
        from engines.serving.measure import close_servers

        close_servers()
