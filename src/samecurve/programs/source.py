"""What a program may contain, checked on its syntax tree before it ever runs,
and how big it is. Allowed: function definitions, constant tables at top level,
arithmetic, comparisons, branches, loops, comprehensions and a short list of
pure builtins. Refused: imports, dunder names, attribute access beyond a few
list and dict methods, classes, exceptions, I/O and anything that reaches the
interpreter (eval, open, getattr...)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

# The builtins a program may call; nothing that reads, writes or introspects.
SAFE_BUILTINS: dict[str, Any] = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in (
        "abs", "all", "any", "bool", "divmod", "enumerate", "filter", "float", "int", "len",
        "list", "map", "max", "min", "pow", "range", "reversed", "round", "set", "sorted",
        "sum", "tuple", "zip", "dict",
    )
}
METHODS = frozenset({"append", "pop", "index", "count", "get", "keys", "values", "items",
                     "extend", "insert"})
ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign,
    ast.AnnAssign, ast.For, ast.While, ast.Break, ast.Continue, ast.If, ast.Pass, ast.Expr,
    ast.IfExp, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword,
    ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Subscript, ast.Slice,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Lambda,
    ast.Attribute, ast.Starred, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop,
    ast.boolop,
)
TOP_LEVEL = (ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Expr)
# A literal longer than this is a lookup table: every entry counts in the size.
TABLE_THRESHOLD = 16
MAX_SOURCE_CHARS = 2_000_000


class ProgramRejected(ValueError):
    """A program that may not run: the message names the line and what to change."""


def _refuse(node: ast.AST, what: str) -> ProgramRejected:
    line = getattr(node, "lineno", "?")
    return ProgramRejected(
        f"line {line}: {what} is not allowed in a program; write one pure function over "
        "ints, floats and lists (no imports, I/O, dunders or attribute access)"
    )


def check_source(source: str, entry: str = "f") -> ast.Module:
    """The parsed program, or ProgramRejected naming the first thing it may not do."""
    if not isinstance(source, str):
        raise ProgramRejected(f"a program's source must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise ProgramRejected(f"program is {len(source)} characters, over the "
                              f"{MAX_SOURCE_CHARS} limit; shorten its tables")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProgramRejected(f"line {exc.lineno}: not valid Python ({exc.msg}); fix the syntax") from exc
    for stmt in tree.body:
        if not isinstance(stmt, TOP_LEVEL):
            raise _refuse(stmt, f"a top-level {type(stmt).__name__}")
        if isinstance(stmt, ast.Expr) and not isinstance(stmt.value, ast.Constant):
            raise _refuse(stmt, "a top-level expression other than a docstring")
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            raise _refuse(node, type(node).__name__.lower())
        if isinstance(node, ast.Name) and (node.id.startswith("__") or node.id in FORBIDDEN_NAMES):
            raise _refuse(node, f"the name {node.id!r}")
        if isinstance(node, ast.arg) and node.arg.startswith("__"):
            raise _refuse(node, f"the argument {node.arg!r}")
        if isinstance(node, ast.Attribute) and node.attr not in METHODS:
            raise _refuse(node, f"the attribute .{node.attr}")
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise _refuse(node, "a decorator")
    defined = {s.name for s in tree.body if isinstance(s, ast.FunctionDef)}
    if entry not in defined:
        raise ProgramRejected(f"the program defines no function {entry!r}; define "
                              f"`def {entry}(...)` at top level")
    return tree


FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "dir", "type", "object", "input", "print", "breakpoint", "help", "memoryview",
    "super", "classmethod", "staticmethod", "property", "exit", "quit", "id", "hash",
})


def program_size(source: str) -> int:
    """Syntax-tree nodes (contexts and operator tokens aside), with every entry of
    a literal table and every 8 characters of a long string counted: a program
    that embeds the network's answers is as big as the answers."""
    tree = ast.parse(source)
    size = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.expr_context | ast.operator | ast.unaryop | ast.cmpop | ast.boolop):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            size += max(1, math.ceil(len(node.value) / 8))
            continue
        size += 1
    return size


def table_entries(source: str) -> int:
    """Entries in literal tables longer than TABLE_THRESHOLD, plus the characters
    of long strings (docstrings aside): how much of the program is lookup, not logic."""
    tree = ast.parse(source)
    docstrings = {
        id(s.body[0].value) for s in ast.walk(tree)
        if isinstance(s, ast.Module | ast.FunctionDef) and s.body
        and isinstance(s.body[0], ast.Expr) and isinstance(s.body[0].value, ast.Constant)
    }
    n = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set) and len(node.elts) > TABLE_THRESHOLD:
            n += len(node.elts)
        elif isinstance(node, ast.Dict) and len(node.keys) > TABLE_THRESHOLD:
            n += len(node.keys)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and len(node.value) > TABLE_THRESHOLD and id(node) not in docstrings):
            n += len(node.value)
    return n


def trusted_function(source: str, entry: str = "f") -> Callable[..., Any]:
    """Our own hidden programs, run in this process (they label training data):
    still checked and given only the safe builtins, so the answer key obeys the
    same rules as any submission."""
    check_source(source, entry)
    scope: dict[str, Any] = {"__builtins__": dict(SAFE_BUILTINS)}
    exec(compile(source, "<hidden program>", "exec"), scope)
    return scope[entry]
