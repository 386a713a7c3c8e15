"""Read ``vllm serve``'s option table from a vLLM release's own source, without importing it.

vLLM builds its parser at run time: ``EngineArgs.add_cli_args`` (``vllm/engine/arg_utils.py``)
calls ``add_argument("--name", **get_kwargs(SomeConfig)["field"])``, and ``get_kwargs`` turns each
config dataclass field's type hint and default into argparse kwargs (``_compute_kwargs``: a bool
becomes ``BooleanOptionalAction``, a ``Literal`` becomes ``choices``, a nested config dataclass a
JSON string...). The frontend (``vllm/entrypoints/openai/cli_args.py``) adds every field of
``FrontendArgs`` the same way, plus a few explicit flags in ``make_arg_parser``.

This module replays that with :mod:`ast` over the source tree, following imports between vLLM's
own modules to resolve type aliases and defaults. What it cannot see (defaults read from the
environment, computed expressions, types from outside vLLM) is listed in the table's
``approximated`` entries rather than guessed silently.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BUILTINS = {"int", "float", "str", "bool", "dict", "list", "set", "tuple", "Any", "object"}
_ALIASES = {"List": "list", "Dict": "dict", "Set": "set", "Tuple": "tuple", "Mapping": "dict"}
_TRANSPARENT = {"Annotated", "SkipValidation", "InitVar", "Required", "NotRequired"}
_SOURCES = ("vllm/engine/arg_utils.py", "vllm/entrypoints/openai/cli_args.py")


@dataclass
class Hint:
    """One member of a field's type union, as ``_compute_kwargs`` sees it."""

    kind: str  # int float str bool none dict list literal dataclass enum other
    values: tuple[Any, ...] = ()  # literal values, enum member names or list element kinds
    cls: tuple[str, str] | None = None  # (module, class) of a nested config dataclass


@dataclass
class Sources:
    """The parsed modules of one vLLM source tree (``root`` holds the ``vllm`` package)."""

    root: Path
    modules: dict[str, ast.Module] = field(default_factory=dict)

    def module(self, name: str) -> ast.Module | None:
        if name not in self.modules:
            base = self.root / name.replace(".", "/")
            path = next(
                (p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None
            )
            self.modules[name] = ast.parse(path.read_text()) if path else None  # type: ignore[assignment]
        return self.modules[name]

    def lookup(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """The top-level definition ``name`` refers to in ``module``, following vLLM's imports."""
        tree = self.module(module)
        if tree is None or depth > 8:
            return None
        for node in _top_level(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
                return module, node
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return module, node.value
            if isinstance(node, ast.AnnAssign) and _is_name(node.target, name) and node.value:
                return module, node.value
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        source = _absolute(module, node)
                        if source.startswith("vllm"):
                            found = self.lookup(source, alias.name, depth + 1)
                            return found or self._submodule(source, alias.name)
        return None

    def _submodule(self, package: str, name: str) -> tuple[str, ast.AST] | None:
        tree = self.module(f"{package}.{name}")
        return (f"{package}.{name}", tree) if tree is not None else None


def _top_level(tree: ast.Module):
    """Top-level statements, including those under ``if TYPE_CHECKING:`` and try/except."""
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            yield from node.body
            yield from getattr(node, "orelse", [])
            for handler in getattr(node, "handlers", []):
                yield from handler.body
        else:
            yield node


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts[: len(parts) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _base_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


class Resolver:
    """Turns annotations and default expressions of one source tree into table values."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def hints(self, node: ast.AST | None, module: str, depth: int = 0) -> list[Hint]:
        """The flattened union a type annotation stands for (``_compute_kwargs``'s type_hints)."""
        if node is None or depth > 12:
            return [Hint("other")]
        if isinstance(node, ast.Constant):
            if node.value is None:
                return [Hint("none")]
            if isinstance(node.value, str):  # a quoted annotation
                return self.hints(ast.parse(node.value, mode="eval").body, module, depth + 1)
            return [Hint("other")]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.hints(node.left, module, depth + 1) + self.hints(
                node.right, module, depth + 1
            )
        if isinstance(node, ast.Subscript):
            return self._subscript(node, module, depth)
        name = _base_name(node)
        if name in _BUILTINS or name in _ALIASES:
            kind = _ALIASES.get(name, name)
            return [Hint("other" if kind in ("Any", "object") else kind)]
        found = self.sources.lookup(module, name) if isinstance(node, ast.Name) else None
        if found is None:
            return [Hint("other")]
        where, target = found
        if isinstance(target, ast.ClassDef):
            return [self._class_hint(where, target)]
        if isinstance(target, ast.Module | ast.FunctionDef):
            return [Hint("other")]
        return self.hints(target, where, depth + 1)

    def _subscript(self, node: ast.Subscript, module: str, depth: int) -> list[Hint]:
        base = _base_name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base in _TRANSPARENT:
            return self.hints(args[0], module, depth + 1)
        if base in ("Optional",):
            return self.hints(args[0], module, depth + 1) + [Hint("none")]
        if base == "Union":
            return [h for a in args for h in self.hints(a, module, depth + 1)]
        if base == "Literal":
            return [Hint("literal", tuple(self._literal_values(args, module, depth)))]
        kind = _ALIASES.get(base, base)
        if kind in ("list", "tuple", "set", "Sequence"):
            elems = [h.kind for h in self.hints(args[0], module, depth + 1)]
            return [Hint("list", tuple(elems))]
        if kind == "dict":
            return [Hint("dict")]
        return [Hint("other")]

    def _literal_values(self, args: list[ast.AST], module: str, depth: int) -> list[Any]:
        values: list[Any] = []
        for arg in args:
            if isinstance(arg, ast.Constant):
                values.append(arg.value)
                continue
            for hint in self.hints(arg, module, depth + 1):  # a nested Literal alias
                values.extend(hint.values if hint.kind == "literal" else ())
        return values

    def _class_hint(self, module: str, node: ast.ClassDef) -> Hint:
        bases = {_base_name(b) for b in node.bases}
        if bases & {"Enum", "IntEnum", "StrEnum"} or any(b.endswith("Enum") for b in bases):
            members = [
                t.id
                for s in node.body
                if isinstance(s, ast.Assign)
                for t in s.targets
                if isinstance(t, ast.Name) and not t.id.startswith("_")
            ]
            return Hint("enum", tuple(members))
        decorators = {
            _base_name(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list
        }
        if decorators & {"config", "dataclass"} or bases & {"BaseModel"}:
            return Hint("dataclass", cls=(module, node.name))
        return Hint("other")

    def class_fields(
        self, module: str, name: str
    ) -> dict[str, tuple[ast.AST, ast.AST | None, str]]:
        """``{field: (annotation, default expr, defining module)}`` of a config class, bases first."""
        found = self.sources.lookup(module, name)
        if not found or not isinstance(found[1], ast.ClassDef):
            return {}
        where, node = found
        out: dict[str, tuple[ast.AST, ast.AST | None, str]] = {}
        for base in node.bases:
            if isinstance(base, ast.Name):
                out.update(self.class_fields(where, base.id))
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if _base_name(getattr(stmt.annotation, "value", stmt.annotation)) in (
                    "ClassVar",
                    "InitVar",
                ):
                    continue
                out[stmt.target.id] = (stmt.annotation, stmt.value, where)
        return out

    def class_constants(self, module: str, name: str) -> dict[str, ast.AST]:
        found = self.sources.lookup(module, name)
        if not found or not isinstance(found[1], ast.ClassDef):
            return {}
        return {
            s.target.id: s.value
            for s in found[1].body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value
        }

    def default(
        self, node: ast.AST | None, module: str, consts: dict[str, ast.AST]
    ) -> tuple[Any, str]:
        """A field's default and, when it had to be approximated, why (else "")."""
        if node is None:
            return None, "no default in the class (required or set at run time)"
        if isinstance(node, ast.Call) and _base_name(node.func) in ("Field", "field"):
            kw = {k.arg: k.value for k in node.keywords}
            if "default" in kw:
                return self.default(kw["default"], module, consts)
            if node.args:
                return self.default(node.args[0], module, consts)
            if "default_factory" in kw:
                return self._factory(kw["default_factory"])
            return None, "Field() without a default"
        try:
            return ast.literal_eval(node), ""
        except (ValueError, SyntaxError, TypeError):
            pass
        if isinstance(node, ast.Name) and node.id in consts:
            return self.default(consts[node.id], module, consts)
        if isinstance(node, ast.Name):
            found = self.sources.lookup(module, node.id)
            if found and not isinstance(found[1], ast.ClassDef | ast.Module | ast.FunctionDef):
                return self.default(found[1], found[0], {})
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "envs":
                return None, f"read from the environment ({node.attr})"
            return self._member(node, module)
        if isinstance(node, ast.BinOp):  # 16 * 1024 * 1024
            left, why_l = self.default(node.left, module, consts)
            right, why_r = self.default(node.right, module, consts)
            if (
                not (why_l or why_r)
                and isinstance(left, int | float)
                and isinstance(right, int | float)
            ):
                ops = {
                    ast.Mult: lambda a, b: a * b,
                    ast.Add: lambda a, b: a + b,
                    ast.Sub: lambda a, b: a - b,
                    ast.Pow: lambda a, b: a**b,
                }
                if type(node.op) in ops:
                    return ops[type(node.op)](left, right), ""
        return None, f"computed: {ast.unparse(node)[:60]}"

    def _member(self, node: ast.Attribute, module: str) -> tuple[Any, str]:
        """``OptimizationLevel.O2``: the enum member's value when the source gives it as a literal."""
        found = self.sources.lookup(module, _base_name(node.value))
        if found and isinstance(found[1], ast.ClassDef):
            for stmt in found[1].body:
                if isinstance(stmt, ast.Assign) and any(
                    _is_name(t, node.attr) for t in stmt.targets
                ):
                    try:
                        return ast.literal_eval(stmt.value), ""
                    except (ValueError, SyntaxError):
                        break
        return node.attr, f"enum member {ast.unparse(node)} (its name)"

    @staticmethod
    def _factory(node: ast.AST) -> tuple[Any, str]:
        name = _base_name(node)
        if name in ("dict", "list", "set"):
            return ({} if name == "dict" else []), ""
        if isinstance(node, ast.Lambda):
            try:
                return ast.literal_eval(node.body), ""
            except (ValueError, SyntaxError, TypeError):
                return None, f"factory {ast.unparse(node)[:60]}"
        return {}, f"factory {name}() (a nested config: its own defaults)"
