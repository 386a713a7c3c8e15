"""vLLM's option tables per release: made from source, checked against, and carried by exports."""

from __future__ import annotations

import json
from pathlib import Path

from engines.vllm_options import compare, make_table
from engines.vllm_options.make_table import main as make_table_main

FIXTURE = Path(__file__).parent / "data" / "vllm_src"


def test_the_table_replays_get_kwargs_over_a_miniature_source():
    options = make_table(FIXTURE, "9.9.9")["options"]
    assert set(options) == {
        "--api-server-count", "--headless", "--enable-auto-tool-choice", "--allowed-origins",
        "--port", "--uvicorn-log-level", "--max-num-seqs", "--scheduling-policy",
        "--async-scheduling", "--stream-interval", "--chunk-bytes", "--speculative-config",
        "--disable-log-stats", "--enable-log-requests",
    }  # fmt: skip
    assert options["--max-num-seqs"]["default"] is None  # the "default": None override wins
    assert options["--scheduling-policy"]["choices"] == ["fcfs", "priority"]  # Literal alias
    assert options["--async-scheduling"].items() >= {"boolean": True, "no_form": True}.items()
    assert options["--disable-log-stats"]["no_form"] is False  # store_true: no --no- form
    assert options["--enable-log-requests"]["default"] is False  # a class attribute, followed
    assert (
        options["--stream-interval"]["default"] == 1 and options["--chunk-bytes"]["default"] == 4096
    )
    origins = options["--allowed-origins"]
    assert origins["type"] == "json" and origins["default"] == ["*"]
    assert options["--api-server-count"]["aliases"] == ["-asc"]
    spec = options["--speculative-config"]
    assert spec["type"] == "json" and spec["aliases"] == ["-sc"]
    assert spec["fields"]["method"]["choices"] == ["draft_model", "ngram"]  # nested Literal
    assert set(spec["fields"]) == {"method", "num_speculative_tokens", "prompt_lookup_max"}


def test_the_script_writes_the_table_and_compare_names_each_difference(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert make_table_main([str(FIXTURE), "--version", "9.9.9", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["vllm_version"] == "9.9.9" and "--port" in table["options"]
    parser_like = {k: dict(v) for k, v in table["options"].items()}
    parser_like["--port"]["default"] = 8080
    del parser_like["--headless"]
    assert compare(table["options"], parser_like) == [
        "--headless: only in the source table",
        "--port: default source 8000 parser 8080",
    ]
    assert make_table_main([str(tmp_path), "--version", "1"]) == 2
    assert "holds no vllm/engine/arg_utils.py" in capsys.readouterr().err
