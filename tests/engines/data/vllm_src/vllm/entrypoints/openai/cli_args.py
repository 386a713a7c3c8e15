from dataclasses import field
from typing import Literal

from vllm.config.utils import config
from vllm.engine.arg_utils import AsyncEngineArgs


@config
class BaseFrontendArgs:
    enable_auto_tool_choice: bool = False
    allowed_origins: list[str] = field(default_factory=lambda: ["*"])

    @classmethod
    def _customize_cli_kwargs(cls, frontend_kwargs):
        frontend_kwargs["allowed_origins"]["type"] = json.loads
        return frontend_kwargs


@config
class FrontendArgs(BaseFrontendArgs):
    port: int = 8000
    uvicorn_log_level: Literal["info", "debug"] = "info"


def make_arg_parser(parser):
    parser.add_argument("model_tag", type=str, nargs="?")
    parser.add_argument("--api-server-count", "-asc", type=int, default=None)
    parser.add_argument("--headless", action="store_true", default=False)
    parser = FrontendArgs.add_cli_args(parser)
    parser = AsyncEngineArgs.add_cli_args(parser)
    return parser
