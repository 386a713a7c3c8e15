"""vLLM's option tables per release: made from source, checked against, and carried by exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.errors import SpecError
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine
from engines.vllm_options import compare, make_table
from engines.vllm_options.make_table import main as make_table_main
from engines.vllm_options.table import load_table

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


# ------------------------------------------------------------- validation against a release
def _spec(tmp_path, **engines_block):
    from tuner.spec import parse_spec

    return parse_spec(
        {
            "name": "v",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "engines": {"vllm": engines_block},
            "storage": f"sqlite:///{tmp_path}/s.db",
        }
    )


def _spaces(spec):
    from tuner.study.loop import build_engines, search_spaces

    return search_spaces(spec, build_engines(spec))


def test_a_misspelt_option_names_the_closest_one_and_the_release(tmp_path):
    with pytest.raises(SpecError) as err:
        _spaces(_spec(tmp_path, max_num_seq={"value": 64}))
    assert str(err.value) == (
        "engines.vllm.max_num_seq: not an option of vLLM 0.26.0; did you mean 'max_num_seqs'?"
    )
    with pytest.raises(SpecError, match="max_long_partial_prefills: a vLLM 0.26.0 option "):
        _spaces(_spec(tmp_path, max_long_partial_prefills={"value": 2}))
    with pytest.raises(SpecError, match=r"'lifo' for --scheduling-policy \(vLLM 0.26.0\)"):
        _spaces(_spec(tmp_path, scheduling_policy={"choices": ["fcfs", "lifo"]}))


def test_a_baseline_and_vllm_args_are_checked_too(tmp_path, make_ctx):
    from tuner.spec import parse_spec

    spec = _spec(tmp_path)
    data = {**spec.model_dump(mode="json"), "baseline": {"vllm": {"stream_intervall": 8}}}
    with pytest.raises(SpecError, match="baseline.vllm.stream_intervall: .*'stream_interval'"):
        _spaces(parse_spec(data))
    engine, ctx = VllmEngine(), make_ctx(vllm_args={"load_fromat": "dummy"})
    with pytest.raises(SpecError) as err:
        engine.serve_argv(engine.defaults(ctx.model, ctx.hardware), ctx, "127.0.0.1", 8000)
    assert "load_fromat" in str(err.value) and "'load-format'" in str(err.value)
    assert "vLLM 0.26.0" in str(err.value)


def test_defaults_and_options_that_differ_between_releases_come_from_the_tables(tmp_path):
    old, new = load_table("0.26.0"), load_table("0.33.0")
    changed = [k for k in old.options if k in new.options and old.default(k) != new.default(k)]
    assert "--disable-cascade-attn" in changed  # read from the two tables, not pinned here
    ctx_model, hw = ModelSpec(name="Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")
    names = {v: {p.name for p in VllmEngine(v).space(ctx_model, hw)} for v in ("0.26.0", "0.33.0")}
    assert old.has("max_num_partial_prefills") and not new.has("max_num_partial_prefills")
    assert "max_num_partial_prefills" in names["0.26.0"] - names["0.33.0"]
    with pytest.raises(SpecError, match="max_num_partial_prefills: not an option of vLLM 0.33.0"):
        _spaces(_spec(tmp_path, version="0.33.0", max_num_partial_prefills={"value": 2}))
    for param in VllmEngine("0.33.0").space(ctx_model, hw):  # knob defaults: the 0.33.0 table's
        if param.name in ("stream_interval", "performance_mode", "scheduling_policy"):
            assert param.default == new.default(param.name)
    with pytest.raises(SpecError, match="no option table for vLLM 0.1.0; shipped: 0.26.0, 0.33"):
        VllmEngine("0.1.0")


def test_the_export_says_which_release_it_was_checked_against(make_ctx):
    ctx = make_ctx()
    for version in ("0.26.0", "0.33.0"):
        engine = VllmEngine(version)
        text = engine.export(engine.defaults(ctx.model, ctx.hardware), ctx).files[
            "vllm_config.yaml"
        ]
        assert f"checked against vLLM {version}'s own (engines/vllm_options/{version}.json)" in text
        assert engine.versions() == {"vllm_options": version} and engine.label == f"vLLM {version}"


def test_export_trial_writes_the_release_into_the_manifest(tmp_path):
    from tuner.analysis.export import export_trial
    from tuner.spec import parse_spec
    from tuner.study.loop import run_study

    data = _spec(tmp_path, version="0.33.0").model_dump(mode="json")
    spec = parse_spec(
        {**data, "budget": {"trials": 2}, "workload": {"preset": "chat", "num_requests": 40}}
    )
    study = run_study(spec)
    result = export_trial(study, spec, tmp_path / "out")
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["options_checked_against"] == {"vllm_options": "0.33.0"}
    assert "(vLLM 0.33.0)" in (result.directory / "vllm_config.yaml").read_text()
