"""Replay ``vllm serve``'s parser construction over a source tree: which flags exist, and for
each its type, choices, default and boolean form, as ``get_kwargs`` and ``add_argument`` give it.

The three places flags come from are walked as vLLM runs them: ``make_arg_parser`` (explicit
flags, then ``FrontendArgs.add_cli_args``, then ``AsyncEngineArgs.add_cli_args``, which calls
``EngineArgs.add_cli_args``). Statements that edit the kwargs before ``add_argument``
(``vllm_kwargs["speculative_config"]["type"] = ...``, ``"default": None`` overrides) are applied.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from engines.vllm_options.source import Hint, Resolver, Sources, _base_name

_ENGINE = "vllm.engine.arg_utils"
_SERVE = "vllm.entrypoints.cli.serve"  # its make_arg_parser moved between releases
_JSON_TYPES = {"loads": "json", "union_dict_and_str": "json", "parse_dataclass": "json"}
_TYPES = {"int": "int", "float": "float", "str": "str", "human_readable_int": "int"}


def read_source(root: str | Path) -> dict[str, Any]:
    """``{"--flag": entry}`` for every option ``vllm serve`` takes, read from the tree at ``root``."""
    resolver = Resolver(Sources(Path(root)))
    options: dict[str, dict[str, Any]] = {}
    found = resolver.sources.lookup(_SERVE, "make_arg_parser")  # what `vllm serve` imports
    if found is None:
        raise FileNotFoundError(f"{root}: vllm/entrypoints/cli/serve.py imports no make_arg_parser")
    frontend, function = found
    _walk(resolver, frontend, function, options)
    _frontend_fields(resolver, frontend, options)
    for cls in ("EngineArgs", "AsyncEngineArgs"):
        method = _method(resolver, _ENGINE, cls, "add_cli_args")
        if method is not None:
            _walk(resolver, _ENGINE, method, options)
    return dict(sorted(options.items()))


def _method(resolver: Resolver, module: str, cls: str, name: str) -> ast.FunctionDef | None:
    found = resolver.sources.lookup(module, cls)
    if not found or not isinstance(found[1], ast.ClassDef):
        return None
    return next(
        (s for s in found[1].body if isinstance(s, ast.FunctionDef) and s.name == name), None
    )


def _walk(resolver: Resolver, module: str, func: ast.AST, options: dict) -> None:
    """Every ``add_argument`` call in ``func``, with the kwargs variables it unpacks resolved."""
    kwargs_vars, edits = _kwargs_vars(func)
    for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"):
            continue
        flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
        name = next((f for f in flags if isinstance(f, str) and f.startswith("--")), None)
        if name is None:
            continue  # a positional (model_tag)
        base, explicit = _unpacked(call, kwargs_vars)
        entry = _field_entry(resolver, module, base) if base else _bare_entry()
        for key, value in {**edits.get(base, {}), **explicit}.items():
            _apply(entry, key, value, resolver, module)
        entry["aliases"] = [f for f in flags if f != name]
        entry["dest"] = entry.pop("_dest", None) or name[2:].replace("-", "_")
        options[name] = entry


def _kwargs_vars(func: ast.AST) -> tuple[dict[str, tuple], dict[tuple, dict[str, ast.AST]]]:
    """``var = get_kwargs(Cls)`` and ``var = other["field"]`` bindings, and the edits made to
    them (``var["field"]["type"] = ...``), keyed by (class, field)."""
    bound: dict[str, tuple] = {}
    edits: dict[tuple, dict[str, ast.AST]] = {}
    for node in ast.walk(func):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            if _base_name(value.func) == "get_kwargs" and value.args:
                bound[target.id] = (_base_name(value.args[0]),)
        elif isinstance(target, ast.Name) and isinstance(value, ast.Subscript):
            ref = _field_ref(value, bound)
            if ref:
                bound[target.id] = ref
        elif isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
            ref = _field_ref(target.value, bound)
            if ref:
                edits.setdefault(ref, {})[target.slice.value] = value
    return bound, edits


def _field_ref(node: ast.AST, bound: dict[str, tuple]) -> tuple | None:
    """(class, field) for ``var["field"]`` with var bound by get_kwargs, or an alias of one."""
    if isinstance(node, ast.Name) and len(bound.get(node.id, ())) == 2:
        return bound[node.id]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and len(bound.get(node.value.id, ())) == 1
        and isinstance(node.slice, ast.Constant)
    ):
        return (bound[node.value.id][0], node.slice.value)
    return None


def _unpacked(call: ast.Call, bound: dict[str, tuple]) -> tuple[tuple | None, dict[str, ast.AST]]:
    base, explicit = None, {}
    for kw in call.keywords:
        if kw.arg is not None:
            explicit[kw.arg] = kw.value
        elif isinstance(kw.value, ast.Dict):  # **{**x["field"], "default": None}
            for key, value in zip(kw.value.keys, kw.value.values, strict=True):
                if key is None:
                    base = _field_ref(value, bound) or base
                elif isinstance(key, ast.Constant):
                    explicit[key.value] = value
        else:
            base = _field_ref(kw.value, bound) or base
    return base, explicit


def _bare_entry() -> dict[str, Any]:
    return {
        "type": "str",
        "choices": None,
        "default": None,
        "nullable": False,
        "boolean": False,
        "no_form": False,
    }


def _field_entry(resolver: Resolver, module: str, ref: tuple) -> dict[str, Any]:
    """The argparse kwargs ``get_kwargs(cls)[field]`` yields, from the field's hint and default."""
    cls, name = ref
    fields = resolver.class_fields(module, cls)
    if name not in fields:
        return {**_bare_entry(), "approximated": f"{cls}.{name} not found"}
    annotation, default_node, where = fields[name]
    hints = resolver.hints(annotation, where)
    default, why = resolver.default(default_node, where, resolver.class_constants(module, cls))
    entry = {**describe(hints), "default": default}
    if why:
        entry["approximated"] = f"default {why}"
    nested = next((h.cls for h in hints if h.kind == "dataclass"), None)
    if nested:
        entry["fields"] = nested_fields(resolver, *nested)
    return entry


def describe(hints: list[Hint]) -> dict[str, Any]:
    """Type, choices and boolean form for a union of hints, following ``_compute_kwargs``."""
    kinds = {h.kind for h in hints}
    nullable = "none" in kinds
    out: dict[str, Any] = {
        "choices": None,
        "nullable": nullable,
        "boolean": False,
        "no_form": False,
    }
    literal = next((h for h in hints if h.kind == "literal"), None)
    if "dataclass" in kinds:
        out["type"] = "json"
    elif kinds - {"none"} == {"bool", "str"}:
        out.update(type="bool|str", boolean=True)
    elif "bool" in kinds:
        out.update(type="bool", boolean=True, no_form=True, nullable=False)
    elif literal is not None:
        out["type"] = type(literal.values[0]).__name__ if literal.values else "str"
        if "str" not in kinds:
            out["choices"] = sorted(literal.values, key=str)
        else:
            out["values"] = sorted(literal.values, key=str)
    elif "list" in kinds:
        elems = next(h.values for h in hints if h.kind == "list")
        elem = next((e for e in elems if e in ("int", "float", "str")), "str")
        out["type"] = f"list[{elem}]"
    elif "int" in kinds or "float" in kinds:
        out["type"] = "int" if "int" in kinds else "float"
    elif "dict" in kinds:
        out["type"] = "json"
    else:
        out["type"] = "str"
    enum = next((h for h in hints if h.kind == "enum"), None)
    if enum is not None and "values" not in out:
        out["values"] = list(enum.values)
    return out


def nested_fields(resolver: Resolver, module: str, cls: str) -> dict[str, dict[str, Any]]:
    """The keys a JSON-valued option (``--speculative-config``) takes: its config class's fields."""
    consts = resolver.class_constants(module, cls)
    out = {}
    for name, (annotation, default_node, where) in resolver.class_fields(module, cls).items():
        if name.startswith("_"):
            continue
        entry = describe(resolver.hints(annotation, where))
        entry["default"], why = resolver.default(default_node, where, consts)
        if why:
            entry["approximated"] = f"default {why}"
        out[name] = {k: v for k, v in entry.items() if k not in ("no_form",)}
    return out


def _apply(entry: dict[str, Any], key: str, node: ast.AST, resolver: Resolver, module: str) -> None:
    """An explicit ``add_argument`` keyword (or a kwargs edit) over the field-derived entry."""
    if key == "type":
        entry["type"] = _explicit_type(node, entry)
    elif key == "action":
        action = _base_name(node) if not isinstance(node, ast.Constant) else node.value
        if action == "BooleanOptionalAction":
            entry.update(type="bool", boolean=True, no_form=True)
        elif action in ("store_true", "store_false"):
            entry.update(type="bool", boolean=True, no_form=False)
            entry.setdefault("default", action == "store_false")
            if entry["default"] is None:
                entry["default"] = action == "store_false"
        elif action == "append":
            entry["type"] = (
                f"list[{entry['type']}]" if "list" not in entry["type"] else entry["type"]
            )
    elif key == "choices":
        try:
            entry["choices"] = list(ast.literal_eval(node))
        except (ValueError, SyntaxError):
            entry["approximated"] = f"choices computed: {ast.unparse(node)[:60]}"
    elif key == "default":
        value, why = resolver.default(node, module, {})
        if why.startswith("enum member") and isinstance(node, ast.Attribute):
            value, why = _class_attr(resolver, module, node)
        entry["default"] = value
        if why:
            entry["approximated"] = f"default {why}"
    elif key == "nargs":
        value = node.value if isinstance(node, ast.Constant) else None
        if value in ("+", "*") and not entry["type"].startswith("list"):
            entry["type"] = f"list[{entry['type']}]"
    elif key == "dest" and isinstance(node, ast.Constant):
        entry["_dest"] = node.value


def _explicit_type(node: ast.AST, entry: dict[str, Any]) -> str:
    if isinstance(node, ast.Call):  # optional_type(json.loads), parse_type(int)
        entry["nullable"] = entry["nullable"] or _base_name(node.func) == "optional_type"
        return _explicit_type(node.args[0], entry) if node.args else entry["type"]
    name = _base_name(node)
    base = _JSON_TYPES.get(name) or _TYPES.get(name)
    if isinstance(node, ast.Lambda):
        entry["approximated"] = f"type is a lambda ({ast.unparse(node)[:50]})"
    if base is None:
        return entry["type"]
    # type= converts each element; nargs (kept from the field's list hint) still makes a list
    return f"list[{base}]" if entry["type"].startswith("list") and base != "json" else base


def _class_attr(resolver: Resolver, module: str, node: ast.Attribute) -> tuple[Any, str]:
    """``default=AsyncEngineArgs.enable_log_requests``: the class attribute's own default."""
    cls = _base_name(node.value)
    fields = resolver.class_fields(module, cls)
    if node.attr in fields:
        _, default_node, where = fields[node.attr]
        return resolver.default(default_node, where, resolver.class_constants(module, cls))
    return node.attr, f"enum member {ast.unparse(node)}"


def _frontend_fields(resolver: Resolver, frontend: str, options: dict) -> None:
    """``FrontendArgs.add_cli_args``: one flag per field (bases first), after the edits its
    ``_customize_cli_kwargs`` methods make (``frontend_kwargs["x"]["type"] = json.loads``)."""
    edits: dict[str, dict[str, ast.AST]] = {}
    for cls in ("BaseFrontendArgs", "FrontendArgs"):
        method = _method(resolver, frontend, cls, "_customize_cli_kwargs")
        for node in ast.walk(method) if method else ():
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Subscript)
                and isinstance(target.value.slice, ast.Constant)
                and isinstance(target.slice, ast.Constant)
            ):
                edits.setdefault(target.value.slice.value, {})[target.slice.value] = node.value
    for name in resolver.class_fields(frontend, "FrontendArgs"):
        entry = _field_entry(resolver, frontend, ("FrontendArgs", name))
        for key, value in edits.get(name, {}).items():
            if key != "metavar":
                _apply(entry, key, value, resolver, frontend)
        flag = "--" + name.replace("_", "-")
        options[flag] = {**entry, "aliases": [], "dest": name}
