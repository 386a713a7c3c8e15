"""Accuracy through the completions API: every figure checked against one computed by hand from
the stand-in's known logprobs (``token_logprob``, ``position_logprobs``)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from engines.accuracy import (
    AccuracySettings,
    CompletionsClient,
    collect_reference_outputs,
    lm_eval_argv,
    load_evalset,
    measure_agreement,
    measure_perplexity,
    parse_results,
    perplexity,
    run_evalset,
    run_lm_eval,
    run_suite,
    topk_kl,
)
from engines.accuracy.perplexity import chunk_words, read_corpus
from engines.errors import EngineError, SpecError
from engines.metrics import LatencyStats, Measurement
from engines.standin import REPO_ROOT, STANDIN_COMMAND
from engines.standin.openai_server import position_logprobs, token_logprob

NOISE = 0.6


# ---------------------------------------------------------------- pure math
def test_perplexity_skips_the_first_token():
    assert perplexity([None, -1.0, -3.0]) == pytest.approx(math.exp(2.0))
    assert math.isnan(perplexity([None]))


def test_topk_kl_by_hand():
    # union {a, b, c}; p lacks c -> fill log .25; q lacks b -> fill log .25
    p = {"a": math.log(0.5), "b": math.log(0.25)}
    q = {"a": math.log(0.25), "c": math.log(0.25)}
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 2 * 0.25 * math.log(0.25 / (1 / 3))
    assert topk_kl(p, q) == pytest.approx(expected)
    assert topk_kl(p, p) == pytest.approx(0.0)


def test_corpus_is_bundled_and_chunked():
    text = read_corpus()
    assert text.startswith("In Congress, July 4, 1776.") and "#" not in text.splitlines()[0]
    assert 2000 < len(text.split()) < 3000
    chunks = chunk_words(text, 64)
    assert all(len(c.split()) <= 32 for c in chunks)
    assert " ".join(chunks).split() == text.split()


# ---------------------------------------------------------------- against the stand-in
def _hand_perplexity(chunks: list[str]) -> float:
    values = [token_logprob(w) for chunk in chunks for w in chunk.split()[1:]]
    return math.exp(-sum(values) / len(values))


def test_perplexity_matches_the_standins_logprobs(standin):
    text = read_corpus()
    with CompletionsClient(standin.base_url, "standin") as client:
        result = measure_perplexity(client, text, context_tokens=64, budget_tokens=200)
        spent = client.cost
    chunks = chunk_words(text, 64)[: result.chunks]
    assert result.chunks == 7  # 32-word chunks until 200 prompt tokens are spent
    assert result.tokens == sum(len(c.split()) - 1 for c in chunks)
    assert result.perplexity == pytest.approx(_hand_perplexity(chunks), rel=1e-9)
    assert spent.requests == 7 and spent.prompt_tokens == 7 * 32


def _hand_greedy(top: dict[str, float]) -> str:
    best = max(top.values())
    return sorted(t for t, v in top.items() if v == best)[0]


def _hand_kl(p: dict[str, float], q: dict[str, float]) -> float:
    union = set(p) | set(q)
    pw = {t: math.exp(p.get(t, min(p.values()))) for t in union}
    qw = {t: math.exp(q.get(t, min(q.values()))) for t in union}
    zp, zq = sum(pw.values()), sum(qw.values())
    return sum(pw[t] / zp * math.log((pw[t] / zp) / (qw[t] / zq)) for t in union)


def _hand_agreement(texts: list[str], k: int, noise: float) -> tuple[float, float]:
    same, kl, n = 0, 0.0, 0
    for text in texts:
        words = text.split()
        for prev, word in zip(words, words[1:], strict=False):
            ref = position_logprobs(prev, word, k, 0.0)
            trial = position_logprobs(prev, word, k, noise)
            same += _hand_greedy(ref) == _hand_greedy(trial)
            kl += _hand_kl(ref, trial)
            n += 1
    return same / n, kl / n


def test_agreement_and_kl_against_a_perturbed_standin(standin_factory):
    reference_server = standin_factory("--ttft-ms", "1", "--itl-ms", "0")
    perturbed = standin_factory("--ttft-ms", "1", "--itl-ms", "0", "--precision-noise", str(NOISE))
    settings = AccuracySettings(metric="agreement", prompts=3, prompt_words=20, gen_tokens=6)
    reference = collect_reference_outputs(reference_server.base_url, "standin", settings)
    assert len(reference["texts"]) == 3 and reference["texts"][0].endswith(" t0 t1 t2 t3 t4 t5")

    with CompletionsClient(reference_server.base_url, "standin") as client:
        itself = measure_agreement(client, reference)
    assert itself.token_agreement == 1.0 and itself.kl_divergence == pytest.approx(0.0)
    assert itself.positions == 3 * (20 + 6 - 1)

    with CompletionsClient(perturbed.base_url, "standin") as client:
        drift = measure_agreement(client, reference)
    agreement, kl = _hand_agreement(reference["texts"], settings.top_k, NOISE)
    assert 0 < drift.token_agreement < 1 and drift.kl_divergence > 0
    assert drift.token_agreement == pytest.approx(agreement, abs=1e-12)
    assert drift.kl_divergence == pytest.approx(kl, rel=1e-3)  # stored logprobs are rounded


def test_quantization_flags_set_the_standins_noise(standin_factory):
    fp8 = standin_factory("--quantization", "fp8", "--kv-cache-dtype", "fp8")
    with CompletionsClient(fp8.base_url, "standin") as client:
        top = client.score("alpha beta gamma", top_k=5)[2].top
    assert top == position_logprobs("beta", "gamma", 5, 0.6 + 0.3)


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_evalset_scores_by_hand(standin, tmp_path):
    # the stand-in answers " t0 t1 ..." (max_tokens words); choices score sum(token_logprob)
    best = max(["alpha", "beta"], key=token_logprob)
    worst = "beta" if best == "alpha" else "alpha"
    rows = [
        {"prompt": "say something", "expected": "t0", "match": "exact", "max_tokens": 1},
        {"prompt": "say more", "expected": "t3", "match": "contains", "max_tokens": 2},
        {"prompt": "pattern", "expected": r"t\d t\d", "match": "regex", "max_tokens": 2},
        {"prompt": "pick one", "choices": [" alpha", " beta"], "answer": f" {best}"},
        {"prompt": "pick again", "choices": [" alpha", " beta"], "answer": f" {worst}"},
        {"prompt": "upper", "expected": "T1", "match": "contains", "ignore_case": True},
    ]
    items = load_evalset(_write(tmp_path / "e.jsonl", rows))
    with CompletionsClient(standin.base_url, "standin") as client:
        result = run_evalset(client, items, budget_tokens=10_000)
    assert (result.correct, result.items, result.total) == (4, 6, 6)
    assert result.accuracy == pytest.approx(4 / 6)


def test_the_sample_evalset_loads():
    items = load_evalset()
    assert len(items) == 20
    assert {i.match for i in items} == {"exact", "contains", "regex", "choice"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "expected an object"),
        ('{"prompt": "x", "match": "exact"}', "needs 'expected'"),
        ('{"prompt": "x", "expected": "(", "match": "regex"}', "not a valid regex"),
        ('{"prompt": "x", "choices": [" a", " b"], "answer": 5}', "not an index"),
        ('{"prompt": "x", "expected": "y", "colour": 1}', "colour"),
    ],
)
def test_malformed_evalsets_name_the_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", ['{"prompt": "ok", "expected": "y"}', line])
    with pytest.raises(SpecError) as err:
        load_evalset(path)
    text = str(err.value)
    assert "\n" not in text and f"{path} line 2" in text and message in text


# ---------------------------------------------------------------- suite and measurement
def _measurement(**fields) -> Measurement:
    stats = LatencyStats(1.0, 1.0, 1.0, 1.0)
    return Measurement(1, 1, 1.0, 1.0, 1.0, 1.0, 1.0, stats, stats, stats, stats, **fields)


def test_suite_reports_how_and_at_what_cost(standin):
    settings = AccuracySettings(metric="perplexity", budget_tokens=100, chunk_tokens=64)
    report = run_suite(standin.base_url, "standin", settings, context_tokens=4096)
    measured = report.apply(_measurement(accuracy=0.99, accuracy_estimated=True))
    assert measured.accuracy is None and not measured.accuracy_estimated
    assert measured.accuracy_metric.startswith("perplexity on us-founding-documents.txt")
    record = measured.extra["accuracy"]
    assert record["cost"]["requests"] == 4 and record["cost"]["tokens"] > 100
    assert record["cost"]["seconds"] > 0
    chunks = chunk_words(read_corpus(), 64)[:4]
    assert measured.metrics()["perplexity"] == pytest.approx(_hand_perplexity(chunks))
    assert "accuracy" not in measured.metrics()


# ---------------------------------------------------------------- lm-evaluation-harness
RECORDED = {  # the shape lm-eval 0.4 writes to <output_path>/<model>/results_<date>.json
    "results": {
        "arc_easy": {
            "alias": "arc_easy",
            "acc,none": 0.75,
            "acc_stderr,none": 0.0433,
            "acc_norm,none": 0.7,
            "acc_norm_stderr,none": 0.046,
        },
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": "N/A",
            "exact_match,flexible-extract": 0.3,
        },
    },
    "config": {"model": "local-completions", "model_args": "base_url=..."},
}


def test_lm_eval_argv_is_exact():
    argv = lm_eval_argv(
        "http://127.0.0.1:8000/", "m", ["arc_easy", "gsm8k"], "out", tokenizer="tok", limit=50
    )
    assert argv == [
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        "base_url=http://127.0.0.1:8000/v1/completions,model=m,tokenizer=tok,"
        "num_concurrent=8,max_retries=3,tokenized_requests=False",
        "--tasks",
        "arc_easy,gsm8k",
        "--output_path",
        "out",
        "--seed",
        "0",
        "--limit",
        "50",
    ]


def test_lm_eval_results_are_parsed(tmp_path):
    folder = tmp_path / "out" / "m"
    folder.mkdir(parents=True)
    (folder / "results_2025-01-01T00-00-00.json").write_text(json.dumps(RECORDED))
    result = parse_results(tmp_path / "out")
    assert result.tasks["arc_easy"] == {
        "acc": 0.75,
        "acc_stderr": 0.0433,
        "acc_norm": 0.7,
        "acc_norm_stderr": 0.046,
    }
    assert result.tasks["gsm8k"]["exact_match,strict-match"] == 0.25
    assert result.mean("acc") == 0.75


def test_lm_eval_runs_as_a_subprocess(tmp_path, monkeypatch):
    """A fake ``lm_eval`` on PATH (the real one needs the network for its data sets)."""
    fake = tmp_path / "bin" / "lm_eval"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'while [ "$1" != "--output_path" ]; do shift; done\n'
        'mkdir -p "$2/m" && cat > "$2/m/results_1.json" <<EOF\n' + json.dumps(RECORDED) + "\nEOF\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = run_lm_eval(lm_eval_argv("http://h:1", "m", ["arc_easy"], tmp_path / "o"))
    assert result.mean("acc") == 0.75
    with pytest.raises(EngineError) as err:
        run_lm_eval(lm_eval_argv("http://h:1", "m", ["x"], "o", executable="no-such-lm-eval"))
    assert err.value.reason == "lm_eval_missing"


# ---------------------------------------------------------------- the study
BASE = {
    "name": "s",
    "model": "Llama-3.1-8B",
    "hardware": {"gpu": "H100-SXM"},
    "runner": "real",
}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"objectives": ["perplexity"]}, "comes from an accuracy run"),
        ({"objectives": ["accuracy"]}, "needs an accuracy: section"),
        ({"runner": "sim", "accuracy": {"metric": "evalset"}}, "runner: real"),
        (
            {"objectives": ["token_agreement"], "accuracy": {"metric": "perplexity"}},
            "does not report token_agreement",
        ),
    ],
)
def test_spec_checks_accuracy_metrics(extra, message):
    from tuner.spec import parse_spec

    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **extra})


def test_spec_rejects_a_malformed_evalset_naming_the_line(tmp_path):
    from tuner.spec import parse_spec

    path = _write(tmp_path / "bad.jsonl", ['{"prompt": "ok", "expected": "y"}', "{oops"])
    with pytest.raises(SpecError, match=f"{path} line 2: not JSON"):
        parse_spec({**BASE, "accuracy": {"metric": "evalset", "evalset": str(path)}})


def test_accuracy_is_a_third_objective_end_to_end(tmp_path):
    """studies/accuracy-standin.yaml: real runner, the stand-in as ``vllm serve``."""
    from tuner.spec import load_spec
    from tuner.study.loop import run_study

    spec = load_spec(
        REPO_ROOT / "studies" / "accuracy-standin.yaml", storage=f"sqlite:///{tmp_path}/a.db"
    )
    options = {
        **spec.options,
        "server_command": STANDIN_COMMAND,
        "env": {"PYTHONPATH": str(REPO_ROOT)},
        "workdir": str(tmp_path / "runs"),
    }
    spec = spec.model_copy(update={"options": options})
    study = run_study(spec)
    reference = study.user_attrs["accuracy_reference"]
    assert reference["trial"] == "reference (vllm defaults)" and reference["positions"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == spec.budget.trials
    by_noise = {}
    for trial in done:
        m = trial.user_attrs["result"]["measurement"]
        assert len(trial.values) == 3 and trial.values[2] == m["accuracy"]
        assert m["accuracy_estimated"] is False
        assert m["accuracy_metric"].startswith("greedy-token agreement vs reference (vllm")
        record = m["extra"]["accuracy"]
        assert record["reference"]["fingerprint"] == reference["fingerprint"]
        assert record["cost"]["tokens"] > 0 and record["cost"]["seconds"] > 0
        config = trial.user_attrs["config"]
        noisy = config.get("quantization") == "fp8" or config.get("kv_cache_dtype") == "fp8"
        by_noise.setdefault(noisy, set()).add(m["accuracy"])
    assert by_noise[False] == {1.0}  # bf16 configs agree with the bf16 reference exactly
    assert all(value < 1.0 for value in by_noise.get(True, ()))


@pytest.mark.parametrize(
    ("lossy", "mode"), [(False, "enforce"), (True, "enforce"), (True, "report")]
)
def test_speculative_decoding_must_keep_the_references_greedy_outputs(tmp_path, lossy, mode):
    """n-gram speculation at the reference's precision: its greedy continuations must be the
    reference's text for text; a drafter that changes them (the stand-in's --lossy-speculation)
    fails the trial as lossy_output instead of being ranked by speed, unless the study's
    ``accuracy.lossless`` is ``report``: then the trial stands and says how many matched."""
    from tuner.spec import load_spec, parse_spec
    from tuner.study.loop import fail_reason, run_study

    spec = load_spec(
        REPO_ROOT / "studies" / "accuracy-standin.yaml", storage=f"sqlite:///{tmp_path}/s.db"
    )
    data = spec.model_dump(mode="json")
    data["engines"]["vllm"] = {
        "quantization": {"value": None},
        "kv_cache_dtype": {"value": "auto"},
        "max_num_seqs": {"value": 64},
        "max_num_batched_tokens": {"value": 4096},
        "max_model_len": {"value": 4096},
        "gpu_memory_utilization": {"value": 0.9},
        "enable_chunked_prefill": {"value": True},
        "enable_prefix_caching": {"value": True},
        "enforce_eager": {"value": False},
        "block_size": {"value": 16},
        "dtype": {"value": "bfloat16"},
        "speculative_method": {"choices": [None, "ngram"]},
        "num_speculative_tokens": {"value": 3},
        "prompt_lookup_max": {"value": 4},
        "prompt_lookup_min": {"value": 2},
    }
    data.update(sampler="grid", budget={"trials": 2, "trial_timeout_s": 60}, baseline=False)
    data["accuracy"]["lossless"] = mode
    data["options"] = {
        **spec.options,
        "server_command": STANDIN_COMMAND,
        "env": {"PYTHONPATH": str(REPO_ROOT)},
        "workdir": str(tmp_path / "runs"),
        "vllm_args": {"lossy-speculation": True} if lossy else {},
    }
    study = run_study(parse_spec(data))
    ran = [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")]
    trials = {t.user_attrs["config"]["speculative_method"]: t for t in ran}
    assert len(ran) == 2 and set(trials) == {None, "ngram"}
    assert trials[None].state.name == "COMPLETE"
    speculative = trials["ngram"]
    record = (speculative.user_attrs.get("result") or {}).get("measurement", {}).get("extra", {})
    if lossy and mode == "report":
        assert speculative.state.name == "COMPLETE"
        assert record["accuracy"]["lossless"] == {
            "options": ["speculative_method"], "continuations": 4, "identical": 0, "lossy": True,
        }  # fmt: skip
    elif lossy:
        assert speculative.state.name == "FAIL" and fail_reason(speculative) == "lossy_output"
        assert "0 of 4 continuations" in speculative.user_attrs["fail"]["detail"]
    else:
        assert speculative.state.name == "COMPLETE"
        assert record["accuracy"]["lossless"] == {
            "options": ["speculative_method"], "continuations": 4, "identical": 4, "lossy": False,
        }  # fmt: skip
