"""Host and port are servetune's: extra server arguments cannot rebind a trial server, and the
real stand-in, measured through the vLLM engine, listens on 127.0.0.1 only unless the spec's
``options.host`` says otherwise (with a warning)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engines.errors import SpecError
from engines.serving.measure import close_servers, measure_server
from engines.standin import REPO_ROOT, STANDIN_COMMAND
from engines.vllm import VllmEngine
from tuner.spec import parse_spec

SPEC = {"name": "bind", "model": "Llama-3.1-8B", "hardware": {"gpu": "H100-SXM"}}


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) LISTENing on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def _measure_port(make_ctx, **options) -> tuple[int, set[str], list[str]]:
    engine = VllmEngine()
    ctx = make_ctx(
        server_command=STANDIN_COMMAND,
        env={"PYTHONPATH": str(REPO_ROOT)},
        stop_grace_s=3.0,
        startup_timeout_s=20.0,
        **options,
    )
    measurement = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    argv = list(measurement.extra["server_argv"])
    port = int(argv[argv.index("--port") + 1])
    try:  # the pooled server is still running: read what it listens on
        return port, _listening(port), argv
    finally:
        close_servers()


@pytest.mark.parametrize("arg", ["host", "--host", "port", "--port", "PORT"])
def test_spec_refuses_host_or_port_in_extra_server_args(arg):
    with pytest.raises(SpecError) as caught:
        parse_spec({**SPEC, "options": {"vllm_args": {arg: "0.0.0.0"}}})
    message = str(caught.value)
    assert f"options.vllm_args.{arg}" in message and "options.host" in message
    assert "\n" not in message


def test_spec_takes_options_host_and_other_extra_args():
    spec = parse_spec({**SPEC, "options": {"host": "0.0.0.0", "vllm_args": {"load-format": "x"}}})
    assert spec.options["host"] == "0.0.0.0"
    with pytest.raises(SpecError, match="options.host"):
        parse_spec({**SPEC, "options": {"host": ""}})


def test_real_standin_listens_on_loopback_only_even_when_vllm_args_say_otherwise(make_ctx, caplog):
    caplog.set_level(logging.WARNING)
    port, addresses, argv = _measure_port(
        make_ctx, vllm_args={"host": "0.0.0.0", "port": "1", "load-format": "dummy"}
    )
    assert addresses == {"0100007F"}  # 127.0.0.1, and nothing else (no 0.0.0.0, no ::)
    assert argv.count("--host") == 1 and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv.count("--port") == 1 and port != 1
    assert "--load-format" in argv  # the other extra arguments still reach the server
    assert "host and port are servetune's" in caplog.text


def test_options_host_binds_beyond_loopback_with_a_warning(make_ctx, caplog, monkeypatch):
    monkeypatch.setattr("engines.serving.binding._warned", set())  # warned once per process
    caplog.set_level(logging.WARNING)
    _, addresses, argv = _measure_port(make_ctx, host="0.0.0.0")
    assert addresses == {"00000000"}
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "listen beyond loopback" in caplog.text
