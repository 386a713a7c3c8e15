"""Loads the facts servetune reasons with: GPUs, model shapes and named workloads.

The numbers live in YAML files under ``engines/data`` with a source for each entry, so that they
can be checked and refitted without touching code.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from engines.errors import SpecError


@cache
def load_data(name: str) -> dict[str, Any]:
    """Return one data file of ``engines/data`` (``gpus``, ``models``, ``workloads``...) as a dict."""
    text = resources.files("engines").joinpath("data", f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SpecError(f"engines/data/{name}.yaml: expected a mapping at top level")
    return data


def catalog_entry(kind: str, name: str) -> dict[str, Any]:
    """Look one entry up by name (case-insensitive) or fail naming the known ones."""
    entries = load_data(kind)[kind]
    for key, value in entries.items():
        if key.lower() == name.lower():
            return {"name": key, **value}
    known = ", ".join(sorted(entries))
    raise SpecError(f"unknown {kind[:-1]} {name!r}; known: {known}")


def catalog_names(kind: str) -> list[str]:
    """Names of every entry of one catalogue, sorted."""
    return sorted(load_data(kind)[kind])
