"""One file, one job: no product module past 400 lines, no function past 70.

A module that grows past the bound is usually two things (a codec, a cache, a query
builder, a scheduler) and is split at that seam; a function past 70 lines (TigerBeetle's
bound) likewise. The tooling (scripts/chronos_dev) and the generated protobuf code are
not product code and are not measured.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("chronos", "command_server", "query_server", "outbox_poller", "projector")
GENERATED = ROOT / "chronos" / "v1"
MODULE_LINES_MAX = 400
FUNCTION_LINES_MAX = 70


def product_modules() -> list[Path]:
    return sorted(
        path
        for package in PRODUCT_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if GENERATED not in path.parents
    )


def long_functions(source: str, lines_max: int) -> list[tuple[str, int]]:
    """(name, length in lines) of every function or method longer than ``lines_max``."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > lines_max:
                found.append((node.name, length))
    return found


def test_the_product_packages_are_measured() -> None:
    modules = product_modules()
    assert len(modules) > 50, "the product packages moved; update this test"
    assert not any("chronos_dev" in path.parts for path in modules)


def test_no_product_module_is_over_the_bound() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in product_modules()
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES_MAX
    }
    assert too_long == {}


def test_no_product_function_is_over_the_bound() -> None:
    too_long = {
        f"{path.relative_to(ROOT)}:{name}": length
        for path in product_modules()
        for name, length in long_functions(path.read_text(), FUNCTION_LINES_MAX)
    }
    assert too_long == {}


def test_the_function_measure_finds_a_long_function() -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(80))
    source = f"def short():\n    return 1\n\nasync def long():\n{body}\n"
    assert long_functions(source, FUNCTION_LINES_MAX) == [("long", 81)]
