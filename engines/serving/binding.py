"""Where trial servers listen: host and port are servetune's, loopback unless asked otherwise.

A server under test answers anyone who can reach it, with no authentication, on a GPU host often
shared or reachable from a cluster network. So servetune alone chooses the address
(``127.0.0.1``, or ``options.host`` when the spec names one, with a warning) and the port (a free
one per server). Extra server arguments (``options.vllm_args`` and any ``options.<x>_args``)
cannot name them: the spec refuses them, and an engine given them anyway drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from engines.serving.lifecycle import HOST

log = logging.getLogger(__name__)

RESERVED = ("host", "port")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_warned: set[str] = set()


def _flag(name: str) -> str:
    """``--max_num_seqs`` and ``max-num-seqs`` alike -> ``max-num-seqs``."""
    return str(name).lstrip("-").replace("_", "-").lower()


def reserved_args(options: Mapping[str, Any]) -> list[str]:
    """Paths (``options.vllm_args.host``) of extra server arguments that would bind the server."""
    return [
        f"options.{key}.{arg}"
        for key, args in options.items()
        if str(key).endswith("_args") and isinstance(args, Mapping)
        for arg in args
        if _flag(arg) in RESERVED
    ]


def without_binding(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` less host and port (servetune's own ``--host``/``--port`` must stay in force:
    a later flag wins in argparse, so a passed-through ``--host 0.0.0.0`` would open the
    server to every interface)."""
    dropped = [arg for arg in args if _flag(arg) in RESERVED]
    if dropped:
        log.warning(
            "ignoring server argument(s) %s: host and port are servetune's (options.host binds "
            "beyond loopback)",
            ", ".join(map(str, dropped)),
        )
    return {arg: value for arg, value in args.items() if _flag(arg) not in RESERVED}


def bind_host(options: Mapping[str, Any]) -> str:
    """The address servers bind: ``options.host`` (warned about once when not loopback), else
    ``127.0.0.1``."""
    host = str(options.get("host") or HOST)
    if host not in LOOPBACK and host not in _warned:
        _warned.add(host)
        log.warning(
            "options.host is %s: trial servers listen beyond loopback, unauthenticated; anyone "
            "who can reach this machine can use them",
            host,
        )
    return host


def client_host(bound: str) -> str:
    """Where servetune itself connects to a server bound to ``bound`` (a wildcard address is
    reached through loopback)."""
    return "127.0.0.1" if bound in ("0.0.0.0", "", "::") else bound
