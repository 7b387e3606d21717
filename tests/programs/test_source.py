"""What a program may contain, and how big it is."""

from __future__ import annotations

import pytest

from samecurve.programs.source import (
    ProgramRejected,
    check_source,
    program_size,
    table_entries,
    trusted_function,
)

GOOD = "def f(a, b):\n    return int((a + b) % 113 < 56)\n"


def test_a_plain_function_passes_and_runs() -> None:
    check_source(GOOD)
    assert trusted_function(GOOD)(50, 1) == 1 and trusted_function(GOOD)(60, 0) == 0


@pytest.mark.parametrize(("source", "what"), [
    ("import os\ndef f(a, b):\n    return 0\n", "Import"),
    ("def f(a, b):\n    return open('/etc/passwd')\n", "'open'"),
    ("def f(a, b):\n    return a.__class__\n", ".__class__"),
    ("def f(a, b):\n    return __import__('os')\n", "'__import__'"),
    ("def f(a, b):\n    try:\n        return 0\n    except Exception:\n        return 1\n", "try"),
    ("class C:\n    pass\n", "ClassDef"),
    ("def g(a, b):\n    return 0\n", "no function 'f'"),
    ("def f(a, b)\n    return 0\n", "not valid Python"),
    ("print('hi')\ndef f(a, b):\n    return 0\n", "top-level expression"),
])
def test_forbidden_constructs_are_refused_with_their_line(source: str, what: str) -> None:
    with pytest.raises(ProgramRejected, match=r"line|no function") as err:
        check_source(source)
    assert what in str(err.value)


def test_size_counts_nodes_and_every_table_entry() -> None:
    # def f(a, b): return int((a + b) % 113 < 56) -> Module, FunctionDef, arguments,
    # arg a, arg b, Return, Call, Name int, Compare, BinOp %, BinOp +, Name a, Name b,
    # Constant 113, Constant 56 = 15 nodes (operator tokens and contexts aside)
    assert program_size(GOOD) == 15
    table = "T = [" + ", ".join(["1"] * 100) + "]\ndef f(a, b):\n    return T[a]\n"
    assert program_size(table) > 100 and table_entries(table) == 100
    string = "T = '" + "01" * 64 + "'\ndef f(a, b):\n    return int(T[a])\n"
    assert table_entries(string) == 128 and program_size(string) >= 128 // 8
    assert table_entries(GOOD) == 0
