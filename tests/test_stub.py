"""The type stub ``_core.pyi`` against the compiled ``fusellm_fast._core``: the same
public names, the same kind of member, and the same parameters (name, kind, default)."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

from fusellm_fast import _core

STUB_PATH = Path(_core.__file__).with_name("_core.pyi")
STUB_SOURCE = STUB_PATH.read_text(encoding="utf-8")

# A stub parameter: (name, inspect kind, default expression or None).
Parameter = tuple[str, inspect._ParameterKind, object]
NO_DEFAULT = inspect.Parameter.empty


def is_public(name: str) -> bool:
    return not name.startswith("_")


def stub_members(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Names a stub body defines (imports excluded), with their defining node."""
    members: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            members[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = node
        elif isinstance(node, ast.Assign):
            members.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
    return members


def stub_parameters(function: ast.FunctionDef) -> list[Parameter]:
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params: list[Parameter] = []
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        positional_only = i < len(args.posonlyargs)
        kind = inspect.Parameter.POSITIONAL_ONLY if positional_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append((arg.arg, kind, default))
    if args.vararg:
        params.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
    keyword_only = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    params += [(a.arg, inspect.Parameter.KEYWORD_ONLY, d) for a, d in keyword_only]
    if args.kwarg:
        params.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
    return params


def compare_parameters(where: str, built: inspect.Signature, stub: list[Parameter]) -> list[str]:
    built_params = list(built.parameters.values())
    problems = []
    built_shape = [(p.name, p.kind) for p in built_params]
    stub_shape = [(name, kind) for name, kind, _ in stub]
    if built_shape != stub_shape:
        problems.append(f"{where}: parameters {built_shape} in the module, {stub_shape} in the stub")
        return problems
    for p, (_, _, stub_default) in zip(built_params, stub, strict=True):
        if (p.default is NO_DEFAULT) != (stub_default is None):
            problems.append(f"{where}({p.name}): a default on one side only")
        # PyO3 renders some defaults only as "...": compare the values it does render.
        elif stub_default is not None and p.default is not Ellipsis and p.default != ast.literal_eval(stub_default):
            problems.append(f"{where}({p.name}): default {p.default!r} in the module, "
                            f"{ast.unparse(stub_default)} in the stub")
    return problems


def is_property(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def compare_class(name: str, cls: type, node: ast.ClassDef) -> list[str]:
    stub = stub_members(node.body)
    problems = []
    if "__new__" not in stub:
        problems.append(f"{name}: the stub has no __new__")
    else:
        new = stub_parameters(stub["__new__"])
        if new[:1] and new[0][0] != "cls":
            problems.append(f"{name}.__new__: first parameter {new[0][0]!r}, not 'cls'")
        problems += compare_parameters(f"{name}.__new__", inspect.signature(cls), new[1:])
    built_names = {n for n in vars(cls) if is_public(n)}
    stub_names = {n for n in stub if is_public(n)}
    problems += [f"{name}.{n}: in the module, not in the stub" for n in sorted(built_names - stub_names)]
    problems += [f"{name}.{n}: in the stub, not in the module" for n in sorted(stub_names - built_names)]
    for member in sorted(built_names & stub_names):
        where, built, stub_node = f"{name}.{member}", vars(cls)[member], stub[member]
        if isinstance(built, types.GetSetDescriptorType):
            if not is_property(stub_node):
                problems.append(f"{where}: a property in the module, not in the stub")
        elif isinstance(built, types.MethodDescriptorType):
            if not isinstance(stub_node, ast.FunctionDef) or is_property(stub_node):
                problems.append(f"{where}: a method in the module, not in the stub")
                continue
            params = stub_parameters(stub_node)
            if params[:1] and params[0][0] != "self":
                problems.append(f"{where}: first parameter {params[0][0]!r}, not 'self'")
            built_signature = inspect.signature(built)
            built_signature = built_signature.replace(parameters=list(built_signature.parameters.values())[1:])
            problems += compare_parameters(where, built_signature, params[1:])
        else:
            problems.append(f"{where}: unexpected member type {type(built).__name__}")
    return problems


def stub_mismatches(source: str, module: types.ModuleType) -> list[str]:
    """Every difference between a stub and a built module, as readable lines."""
    stub = stub_members(ast.parse(source).body)
    built_names = {n for n in dir(module) if is_public(n)}
    stub_names = {n for n in stub if is_public(n)}
    problems = [f"{n}: in the module, not in the stub" for n in sorted(built_names - stub_names)]
    problems += [f"{n}: in the stub, not in the module" for n in sorted(stub_names - built_names)]
    for name in sorted(built_names & stub_names):
        built, node = getattr(module, name), stub[name]
        if isinstance(built, type):
            if isinstance(node, ast.ClassDef):
                problems += compare_class(name, built, node)
            else:
                problems.append(f"{name}: a class in the module, not in the stub")
        elif isinstance(built, types.BuiltinFunctionType):
            if isinstance(node, ast.FunctionDef):
                problems += compare_parameters(name, inspect.signature(built), stub_parameters(node))
            else:
                problems.append(f"{name}: a function in the module, not in the stub")
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if ast.literal_eval(node.value) != built:
                problems.append(f"{name}: {built!r} in the module, {ast.unparse(node.value)} in the stub")
        elif not isinstance(node, (ast.AnnAssign, ast.Assign)):
            problems.append(f"{name}: a constant in the module, not in the stub")
    return problems


def test_stub_matches_built_module():
    assert stub_mismatches(STUB_SOURCE, _core) == []


def test_stub_covers_every_name_the_module_exports():
    # A second view of the module's names: the `__all__` PyO3 keeps as names are added.
    assert set(_core.__all__) == {n for n in stub_members(ast.parse(STUB_SOURCE).body) if is_public(n)}


# Edits of the stub text that a correct comparison must report.
STUB_EDITS = {
    "renamed function parameter": ("def edit_distance(a: str, b: str)", "def edit_distance(a: str, other: str)"),
    "added function parameter": ("def edit_distance(a: str, b: str)", "def edit_distance(a: str, b: str, c: int)"),
    "keyword-only made positional": ("tokens: Sequence[str], *, family", "tokens: Sequence[str], family"),
    "changed rendered default": ("family: _Family | None = None, special_ids", 'family: _Family | None = "x", special_ids'),
    "removed default": ("special_ids: Sequence[int] = ...\n) -> list[bytes]", "special_ids: Sequence[int]\n) -> list[bytes]"),
    "renamed function": ("def token_bytes(", "def token_bytes_of("),
    "renamed method": ("def ensure_vocab_map(", "def build_vocab_map_now("),
    "renamed method parameter": ("onehot: Literal", "one_hot: Literal"),
    "property made a method": ("@property\n    def source_size", "def source_size"),
    "changed constant": ("STATUS_ONEHOT: Final = 2", "STATUS_ONEHOT: Final = 3"),
    "extra constant": ("STATUS_ONEHOT: Final = 2", "STATUS_ONEHOT: Final = 2\nSTATUS_OTHER: Final = 4"),
    "extra method": ("    def vocab_map(self)", "    def clear(self) -> None: ...\n    def vocab_map(self)"),
}


@pytest.mark.parametrize("old, new", STUB_EDITS.values(), ids=STUB_EDITS.keys())
def test_comparison_reports_an_edited_stub(old, new):
    assert STUB_SOURCE.count(old) == 1, "the edit no longer applies to the stub"
    assert stub_mismatches(STUB_SOURCE.replace(old, new), _core) != []


def test_comparison_reports_a_name_missing_from_the_stub():
    extended = types.ModuleType("extended_core")
    extended.__dict__.update({n: getattr(_core, n) for n in dir(_core) if is_public(n)})
    extended.STATUS_NEW = 7
    extended.new_function = _core.edit_distance
    assert stub_mismatches(STUB_SOURCE, extended) == [
        "STATUS_NEW: in the module, not in the stub",
        "new_function: in the module, not in the stub",
    ]
