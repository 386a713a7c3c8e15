"""Every study and trial attribute key is spelled in tuner/study/attrs.py only: a literal key
elsewhere in tuner/ or engines/ (``trial.user_attrs["config"]``, ``set_user_attr("spec", ...)``,
``enqueue_trial(..., user_attrs={"baseline": True})``, ``"result" in t.user_attrs``) fails here,
with the file and line, so a misspelt reader cannot silently read nothing."""

from __future__ import annotations

import ast
from pathlib import Path

from tuner.study import attrs

ROOT = Path(__file__).resolve().parents[3]
OWNED = {
    value
    for name, value in vars(attrs).items()
    if name.endswith("_ATTR") or name == "SEARCH_EXHAUSTED"
}


def _is_attrs(node: ast.AST) -> bool:
    """``X.user_attrs`` or ``X.attrs`` (a TrialRecord's copy of them)."""
    return isinstance(node, ast.Attribute) and node.attr in ("user_attrs", "attrs")


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def literal_keys(source: str) -> list[tuple[int, str]]:
    """(line, key) of every attribute key written as a literal in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and _is_attrs(node.value):
            key = _literal(node.slice)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (
                node.func.attr == "get"
                and _is_attrs(node.func.value)
                and node.args
                or node.func.attr == "set_user_attr"
                and node.args
            ):
                key = _literal(node.args[0])
            for keyword in node.keywords:
                if keyword.arg == "user_attrs" and isinstance(keyword.value, ast.Dict):
                    found += [(node.lineno, k) for k in map(_literal, keyword.value.keys) if k]
        elif isinstance(node, ast.Compare) and any(_is_attrs(c) for c in node.comparators):
            key = _literal(node.left)
        if key:
            found.append((node.lineno, key))
    return found


def test_no_module_but_attrs_spells_a_stored_key():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {key!r}"
        for folder in ("tuner", "engines")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "tuner" / "study" / "attrs.py"
        for line, key in literal_keys(path.read_text())
        if key in OWNED
    ]
    assert not offenders, "use the tuner.study.attrs constant:\n" + "\n".join(offenders)


def test_the_scan_finds_each_form_of_a_literal_key():
    source = (
        'trial.user_attrs["config"]\n'
        'record.attrs.get("result")\n'
        'study.set_user_attr("spec", 1)\n'
        'study.enqueue_trial({}, user_attrs={"baseline": True})\n'
        '"fail" in t.user_attrs\n'
        "trial.user_attrs[CONFIG_ATTR]\n"
    )
    assert [k for _, k in literal_keys(source)] == ["config", "result", "spec", "baseline", "fail"]


def test_the_keys_are_distinct():
    names = [name for name in vars(attrs) if name.endswith("_ATTR")]
    assert len({getattr(attrs, name) for name in names}) == len(names)


def test_the_study_package_resolves_every_name_it_lists():
    """tuner.study loads its names on first use: each one it lists resolves, from the module
    the map names, and an unknown one is an AttributeError, not a silent None."""
    from importlib import import_module

    import pytest

    import tuner.study as study

    assert sorted(study.__all__) == sorted(study._EXPORTS)
    for name in study.__all__:
        home = import_module(f"tuner.study.{study._EXPORTS[name]}")
        assert getattr(study, name) is getattr(home, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        study.nope  # noqa: B018
