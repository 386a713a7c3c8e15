"""The sim runner: a performance model of continuous batching on a catalogued GPU.

:mod:`.engine` wraps any engine so the model measures its configs; :mod:`.simulate` runs one
workload through :mod:`.scheduler` (admission, chunked prefill, preemption) priced by
:mod:`.costs` with the efficiency constants of :mod:`.profiles`.
"""

from engines.sim.engine import SimulatedEngine

__all__ = ["SimulatedEngine"]
