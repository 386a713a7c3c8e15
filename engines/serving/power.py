"""GPU board power sampled through NVML while a run is in flight, for joules per output token.

:class:`PowerSampler` is a context manager: a daemon thread reads ``nvmlDeviceGetPowerUsage``
(milliwatts, the board's own sensor) of the chosen GPUs every ``interval_s`` and integrates the
sum over time (trapezoids). When ``pynvml`` (``pip install nvidia-ml-py``) or a driver is missing
it records nothing and says why in ``note``, so the same code runs on a laptop and an H100 host.

Watch: NVML's power reading is averaged by the driver over ~1 s on many boards (``GetPowerUsage``
on Hopper is a 1 s average), so runs shorter than a few seconds give rough energy; we report the
number of samples next to the result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerReading:
    """Energy over a run: joules (all sampled GPUs together), mean watts, samples taken."""

    joules: float | None
    avg_watts: float | None
    samples: int
    gpus: tuple[int, ...]
    note: str | None = None

    def joules_per_token(self, output_tokens: float) -> float | None:
        if self.joules is None or output_tokens <= 0:
            return None
        return self.joules / output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "joules": self.joules,
            "avg_watts": self.avg_watts,
            "samples": self.samples,
            "gpus": list(self.gpus),
            "note": self.note,
        }


def visible_gpus(count: int) -> list[int]:
    """NVML indices of the first ``count`` GPUs this process may use (CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        return [int(part) for part in visible.split(",")][:count]
    return list(range(count))


class PowerSampler:
    """Sample GPU power in a background thread between ``__enter__`` and ``__exit__``."""

    def __init__(self, gpus: Sequence[int], interval_s: float = 0.1) -> None:
        self.gpus = tuple(gpus)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: list[Any] = []
        self._nvml: Any = None
        self._joules = 0.0
        self._samples = 0
        self._started = 0.0
        self._ended = 0.0
        self.note: str | None = None
        self.reading: PowerReading | None = None

    def __enter__(self) -> PowerSampler:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.gpus]
            self._nvml = pynvml
        except ImportError:
            self.note = "power not measured: pynvml missing (pip install nvidia-ml-py)"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, bad index...
            self.note = f"power not measured: NVML unavailable ({exc})"
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)
            self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ended = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # shutting down is best effort
                self._nvml.nvmlShutdown()
        self.reading = self._reading()

    def _watts(self) -> float:
        return sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0

    def _loop(self) -> None:
        try:
            last_t, last_w = time.perf_counter(), self._watts()
            self._samples = 1
            while not self._stop.wait(self.interval_s):
                now, watts = time.perf_counter(), self._watts()
                self._joules += (watts + last_w) / 2 * (now - last_t)
                last_t, last_w = now, watts
                self._samples += 1
            now = time.perf_counter()
            self._joules += last_w * (now - last_t)
        except Exception as exc:  # a GPU that falls off the bus mid-run
            self.note = f"power sampling stopped: {exc}"
            log.warning(self.note)

    def _reading(self) -> PowerReading:
        if self._nvml is None or self._samples == 0:
            return PowerReading(None, None, 0, self.gpus, self.note)
        span = max(self._ended - self._started, 1e-9)
        return PowerReading(self._joules, self._joules / span, self._samples, self.gpus, self.note)
