"""The shape the training code keeps: no function of ``lm/training/`` over 80 lines (a
newcomer reads each at once), and the loop without nested functions (its parts are
objects and functions with names, not closures sharing state)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[1] / "lm" / "training"
MAX_LINES = 80


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", sorted(TRAINING.glob("*.py")), ids=lambda p: p.name)
def test_no_training_function_is_longer_than_80_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = {
        f"{f.name} (line {f.lineno})": f.end_lineno - f.lineno + 1
        for f in _functions(tree)
        if f.end_lineno - f.lineno + 1 > MAX_LINES
    }
    assert not long, f"{path.name}: functions over {MAX_LINES} lines: {long}"


def test_the_loop_has_no_nested_function():
    tree = ast.parse((TRAINING / "loop.py").read_text(encoding="utf-8"))
    nested = [
        f"{inner.name} in {outer.name}"
        for outer in _functions(tree)
        for inner in _functions(outer)
        if inner is not outer
    ]
    lambdas = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    assert not nested and not lambdas, (nested, lambdas)
