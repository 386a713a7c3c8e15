from pathlib import Path

import pytest

from engines.errors import SpecError
from tuner.spec import load_spec, parse_spec

BASE = {"name": "t", "model": "Llama-3.1-8B", "hardware": {"gpu": "H100-SXM"}}


def test_catalogue_names_expand_and_defaults_fill_in():
    spec = parse_spec(BASE)
    assert spec.model.num_kv_heads == 8 and spec.model.hidden_size == 4096
    assert spec.hardware.gpu_info.compute_capability == 9.0
    assert [o.metric for o in spec.objectives] == ["output_tokens_per_s", "ttft_p99_ms"]
    assert spec.storage_url == "sqlite:///studies/t.db"


def test_objective_shorthands_and_directions():
    spec = parse_spec(
        {**BASE, "objectives": ["goodput_rps", {"e2e_p90_ms": "min"}, {"metric": "accuracy"}]}
    )
    assert [(o.metric, o.direction) for o in spec.objectives] == [
        ("goodput_rps", "maximize"),
        ("e2e_p90_ms", "minimize"),
        ("accuracy", "maximize"),
    ]


@pytest.mark.parametrize(
    ("patch", "field", "bad"),
    [
        ({"model": "Llama-9"}, "model", "Llama-9"),
        ({"hardware": {"gpu": "H900"}}, "hardware", "H900"),
        ({"hardware": {"gpu": "H100-SXM", "count": 0}}, "hardware.count", "0"),
        ({"budget": {"trials": -5}}, "budget.trials", "-5"),
        ({"budget": {"trials": None}}, "budget", "trials, minutes"),
        ({"objectives": ["speed"]}, "objectives.0", "speed"),
        ({"slos": {"ttft_p42_ms": 1}}, "slos", "ttft_p42_ms"),
        ({"engines": {"sglang": {}}}, "engines", "sglang"),
        (
            {"workload": {"input_tokens": {"kind": "uniform", "low": 9, "high": 3}}},
            "workload.input_tokens",
            "low",
        ),
        ({"workload": {"arrival": {"kind": "poisson"}}}, "workload.arrival", "rate"),
        ({"workload": "tweets"}, "workload", "tweets"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
        ({"seed": "abc"}, "seed", "abc"),
    ],
)
def test_bad_input_names_the_field_and_value(patch, field, bad):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **patch})
    message = str(err.value)
    assert field in message and bad in message
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(SpecError, match=r"line \d+ malformed YAML"):
        load_spec(path)


def test_missing_file_is_a_spec_error(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_hf_config_json_is_read(tmp_path: Path):
    (tmp_path / "config.json").write_text(
        '{"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,'
        ' "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256,'
        ' "max_position_embeddings": 131072}'
    )
    spec = parse_spec({**BASE, "model": {"config_json": str(tmp_path / "config.json")}})
    assert spec.model.params_b == pytest.approx(8.03, rel=0.01)
    assert spec.model.path == str(tmp_path)


def test_spec_hash_ignores_budget_but_not_workload():
    a = parse_spec(BASE)
    assert a.spec_hash() == parse_spec({**BASE, "budget": {"trials": 7}}).spec_hash()
    assert a.spec_hash() != parse_spec({**BASE, "workload": "summarization"}).spec_hash()


def test_shipped_study_specs_are_valid():
    for path in sorted(Path("studies").glob("*.yaml")):
        load_spec(path)


def test_stop_overloaded_reaches_the_engines_and_the_hash_only_when_set():
    plain, off = parse_spec(BASE), parse_spec({**BASE, "measurement": {"stop_overloaded": False}})
    on = parse_spec({**BASE, "measurement": {"stop_overloaded": True}})
    assert (
        on.measure_options()["stop_overloaded"] and not plain.measure_options()["stop_overloaded"]
    )
    assert plain.spec_hash() == off.spec_hash()  # studies made before the option keep their hash
    assert on.spec_hash() != plain.spec_hash()
