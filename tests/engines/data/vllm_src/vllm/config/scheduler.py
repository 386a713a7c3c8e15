from typing import ClassVar, Literal

from pydantic import Field

from vllm.config.utils import config

SchedulerPolicy = Literal["fcfs", "priority"]


@config
class SchedulerConfig:
    DEFAULT_MAX_NUM_SEQS: ClassVar[int] = 128
    max_num_seqs: int = Field(default=DEFAULT_MAX_NUM_SEQS, ge=1)
    policy: SchedulerPolicy = "fcfs"
    async_scheduling: bool | None = None
    stream_interval: int = Field(default=1, ge=1)
    chunk_bytes: int = 4 * 1024
