"""User overrides of an engine's search space, checked against the engine's own options.

A study spec can narrow or widen any bound, replace a choice list, or pin an option to one
value; an option the engine does not have is an error that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from engines.base import Param
from engines.errors import SpecError

_RANGE_KEYS = {"low", "high", "step", "log"}
Explain = Callable[[str, list[str]], str]


def _unknown(name: str, known: list[str], explain: Explain | None) -> str:
    if explain is not None:
        return explain(name, known)
    return f"not an option of this engine; options: {', '.join(known)}"


def apply_overrides(
    space: list[Param], overrides: Mapping[str, Any], where: str, explain: Explain | None = None
) -> list[Param]:
    """Return ``space`` with ``overrides`` applied; ``where`` prefixes error messages and
    ``explain(name, known)`` says why an unknown name is not an option (the engine's words)."""
    by_name = {p.name: p for p in space}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: {_unknown(unknown[0], list(by_name), explain)}")
    return [
        _override(p, overrides[p.name], f"{where}.{p.name}") if p.name in overrides else p
        for p in space
    ]


def _override(param: Param, value: Any, where: str) -> Param:
    if not isinstance(value, Mapping):
        value = {"value": value}
    keys = set(value)
    if "value" in keys:
        if keys != {"value"}:
            raise SpecError(f"{where}: 'value' pins the option and takes no other key")
        return replace(param, kind="categorical", choices=(value["value"],), default=value["value"])
    if "choices" in keys:
        choices = value["choices"]
        if keys != {"choices"} or not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}: 'choices' must be a non-empty list and stand alone")
        return replace(param, kind="categorical", choices=tuple(choices))
    if param.kind == "categorical":
        raise SpecError(
            f"{where}: categorical option takes 'choices' or 'value', got {sorted(keys)}"
        )
    bad = keys - _RANGE_KEYS
    if bad:
        raise SpecError(
            f"{where}: unknown key {sorted(bad)[0]!r}; use low/high/step/log, choices or value"
        )
    merged = replace(param, **{k: value[k] for k in keys})
    if merged.low is None or merged.high is None or merged.low > merged.high:
        raise SpecError(f"{where}: low ({merged.low}) must not exceed high ({merged.high})")
    if merged.log and merged.low <= 0:
        raise SpecError(f"{where}: log scale needs low > 0, got {merged.low}")
    return merged


def on_step(value: float, step: float | None) -> float:
    """``value`` rounded to the decimals of ``step`` (0.8700000000000001 -> 0.87 for step 0.01):
    Optuna's stepped floats are ``low + k * step`` in binary floating point, and the noise
    reached exported YAML, commands and tables. Without a step, 12 significant digits."""
    if not step:
        return float(f"{value:.12g}")
    decimals = max(0, -Decimal(repr(float(step))).normalize().as_tuple().exponent)
    return round(value, int(decimals))


def tidy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with float noise removed (12 significant digits): for configs stored before
    :func:`on_step` was applied at suggestion time."""
    return {k: on_step(v, None) if isinstance(v, float) else v for k, v in config.items()}


def space_defaults(space: list[Param]) -> dict[str, Any]:
    """The engine defaults that the (possibly overridden) space still allows.

    An option whose default was overridden out of range is left out, so the sampler picks it.
    """
    chosen: dict[str, Any] = {}
    for param in space:
        if param.applies(chosen):
            chosen.update(_default_of(param))
    return chosen


def _default_of(param: Param) -> dict[str, Any]:
    """``{name: default}`` when the space still allows the default (or pins one value), else {}."""
    value = param.default
    if param.kind == "categorical":
        if value in param.choices:
            return {param.name: value}
        return {param.name: param.choices[0]} if len(param.choices) == 1 else {}
    if value is not None and param.low <= value <= param.high:  # type: ignore[operator]
        return {param.name: value}
    return {}


def pinned_overrides(space: list[Param], keep: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides that pin every option of ``space`` to its default except the ``keep`` ones
    (given as overrides themselves): a narrow study over a few options, the rest as shipped."""
    out: dict[str, Any] = {p.name: {"value": p.default} for p in space if p.name not in keep}
    out.update(keep)
    return out


def named_config(
    space: list[Param], named: Mapping[str, Any], where: str, explain: Explain | None = None
) -> dict[str, Any]:
    """The config a user names (e.g. the one in production today, as a study's baseline): the
    ``named`` options, the rest as :func:`space_defaults` picks them. Every named option must be
    one the searched space offers, with a value it allows, and active under the others (an
    Optuna trial can only be enqueued inside its distributions); ``where`` prefixes errors."""
    names = list(dict.fromkeys(p.name for p in space))  # in the space's order, for the message
    unknown = sorted(set(named) - set(names))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: {_unknown(unknown[0], names, explain)}")
    chosen: dict[str, Any] = {}
    used: set[str] = set()
    for param in space:
        if not param.applies(chosen):
            continue
        if param.name in named:
            value = named[param.name]
            if not _allows(param, value):
                raise SpecError(
                    f"{where}.{param.name}: {value!r} is outside the searched space "
                    f"({_describe(param)}); widen the option under engines: to include it"
                )
            chosen[param.name] = value
            used.add(param.name)
        else:
            chosen.update(_default_of(param))
    inactive = sorted(set(named) - used)
    if inactive:
        raise SpecError(f"{where}.{inactive[0]}: does not apply with the other options named")
    return chosen


def _allows(param: Param, value: Any) -> bool:
    if param.kind == "categorical":
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if param.kind == "int" and int(value) != value:
        return False
    return param.low <= value <= param.high  # type: ignore[operator]


def _describe(param: Param) -> str:
    if param.kind == "categorical":
        return "choices " + ", ".join(repr(c) for c in param.choices)
    return f"{param.kind} from {param.low:g} to {param.high:g}"
