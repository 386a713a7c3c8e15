import argparse
import json

from vllm.config import SchedulerConfig, VllmConfig


def get_kwargs(cls):
    return {}


class EngineArgs:
    @staticmethod
    def add_cli_args(parser):
        scheduler_kwargs = get_kwargs(SchedulerConfig)
        group = parser.add_argument_group(title="SchedulerConfig")
        group.add_argument("--max-num-seqs", **{**scheduler_kwargs["max_num_seqs"], "default": None})
        group.add_argument("--scheduling-policy", **scheduler_kwargs["policy"])
        group.add_argument("--async-scheduling", **scheduler_kwargs["async_scheduling"])
        group.add_argument("--stream-interval", **scheduler_kwargs["stream_interval"])
        group.add_argument("--chunk-bytes", **scheduler_kwargs["chunk_bytes"])
        vllm_kwargs = get_kwargs(VllmConfig)
        vllm_kwargs["speculative_config"]["type"] = optional_type(json.loads)
        group.add_argument("--speculative-config", "-sc", **vllm_kwargs["speculative_config"])
        parser.add_argument("--disable-log-stats", action="store_true")
        return parser


class AsyncEngineArgs(EngineArgs):
    enable_log_requests: bool = False

    @staticmethod
    def add_cli_args(parser):
        parser = EngineArgs.add_cli_args(parser)
        parser.add_argument(
            "--enable-log-requests",
            action=argparse.BooleanOptionalAction,
            default=AsyncEngineArgs.enable_log_requests,
        )
        return parser
