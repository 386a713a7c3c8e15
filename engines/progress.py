"""One line per trial event, for people watching a long real study (or its log file).

Engines and the tuner log events (server starting and ready, warmup, measuring n/N requests
with the tokens/s so far, the result) to the ``servetune.progress`` logger at INFO. The library
stays silent by default, as libraries should; the CLI attaches a handler unless ``--quiet``, so a
study run under nohup into a file says what it is doing instead of nothing for minutes.
"""

from __future__ import annotations

import logging
import time

from engines.metrics import RequestRecord

progress_log = logging.getLogger("servetune.progress")


class RunProgress:
    """Logs a measured run's progress about every ``share`` of its requests (a load-generator
    record hook: it may be chained in front of another hook such as the overload monitor)."""

    def __init__(self, total: int, share: float = 0.25, label: str = "measuring") -> None:
        self.total = max(1, total)
        self.every = max(1, round(self.total * share))
        self.label = label
        self.done = 0
        self.tokens = 0
        self.started = time.monotonic()

    def feed(self, record: RequestRecord) -> str | None:
        """Count ``record``; never stops the run (returns None)."""
        self.done += 1
        self.tokens += int(record.output_tokens or 0)
        if self.done % self.every == 0 and self.done < self.total:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            progress_log.info(
                "  %s %d/%d requests, %.0f output tok/s so far",
                self.label,
                self.done,
                self.total,
                self.tokens / elapsed,
            )
        return None
