"""Versions recorded with every study and export, so a number can be traced to what made it."""

from __future__ import annotations

import platform
from importlib import metadata


def tool_versions() -> dict[str, str]:
    """servetune, Optuna and Python versions."""
    out = {"python": platform.python_version()}
    for package in ("servetune", "optuna"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out
