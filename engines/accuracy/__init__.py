"""Accuracy measured through the OpenAI-compatible API every engine serves.

Four measures, each usable as a study objective or constraint: perplexity on a bundled corpus
(:mod:`.perplexity`), agreement and top-k KL with a full-precision reference config
(:mod:`.agreement`), task accuracy on a JSONL eval set (:mod:`.evalset`) and lm-evaluation-harness
tasks (:mod:`.harness`). :mod:`.suite` runs the one a study asks for after each trial's load
run. See docs/accuracy.md for definitions and what has been verified.
"""

from engines.accuracy._client import CompletionsClient, Cost, Position
from engines.accuracy.agreement import AgreementResult, greedy, measure_agreement, topk_kl
from engines.accuracy.evalset import EvalItem, EvalResult, load_evalset, run_evalset
from engines.accuracy.harness import HarnessResult, lm_eval_argv, parse_results, run_lm_eval
from engines.accuracy.perplexity import (
    PerplexityResult,
    measure_perplexity,
    perplexity,
    read_corpus,
)
from engines.accuracy.suite import (
    MEASURED_ONLY,
    PROVIDES,
    AccuracyReport,
    AccuracySettings,
    collect_reference_outputs,
    reference_config,
    run_suite,
)

__all__ = [
    "MEASURED_ONLY",
    "PROVIDES",
    "AccuracyReport",
    "AccuracySettings",
    "AgreementResult",
    "CompletionsClient",
    "Cost",
    "EvalItem",
    "EvalResult",
    "HarnessResult",
    "PerplexityResult",
    "Position",
    "collect_reference_outputs",
    "greedy",
    "lm_eval_argv",
    "load_evalset",
    "measure_agreement",
    "measure_perplexity",
    "parse_results",
    "perplexity",
    "read_corpus",
    "reference_config",
    "run_evalset",
    "run_lm_eval",
    "run_suite",
    "topk_kl",
]
