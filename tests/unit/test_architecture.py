"""Dependencies point inward: the domain imports no driver and no generated code, and the
product (``chronos/`` and the four services) never imports the development tooling."""

import ast
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "chronos" / "domain"
PRODUCT_PACKAGES = ("chronos", "command_server", "query_server", "outbox_poller", "projector")
FORBIDDEN = (
    "grpc",
    "google",
    "psycopg",
    "psycopg_pool",
    "confluent_kafka",
    "elasticsearch",
    "chronos.v1",
    "chronos.event_store",
    "opentelemetry",
    "prometheus_client",
)
# The tooling distribution (scripts/chronos_dev), and the names it had inside chronos/.
TOOLING = ("chronos_dev", "chronos.infra", "chronos.bench", "chronos.loadtest")
_MODULE_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def imported_modules(path: Path) -> set[str]:
    """The modules ``path`` imports, and every string literal shaped like a module name
    (so an ``importlib.import_module("...")`` counts as an import too)."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_NAME.fullmatch(node.value)
        ):
            modules.add(node.value)
    return modules


def forbidden_imports(paths: Iterable[Path], forbidden: Iterable[str]) -> set[str]:
    """``"<file>: <module>"`` for every import in ``paths`` of a module in ``forbidden``
    (or below one)."""
    prefixes = tuple(forbidden)
    return {
        f"{path}: {module}"
        for path in paths
        for module in imported_modules(path)
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)
    }


def product_files() -> list[Path]:
    return sorted(path for package in PRODUCT_PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_domain_imports_no_driver_or_adapter() -> None:
    files = sorted(DOMAIN.glob("*.py"))
    assert len(files) >= 5, "the domain package moved; update this test"
    assert forbidden_imports(files, FORBIDDEN) == set()


def test_product_does_not_import_the_tooling() -> None:
    files = product_files()
    assert len(files) >= 40, "the product packages moved; update this test"
    assert forbidden_imports(files, TOOLING) == set()


def test_the_tooling_is_not_inside_the_product() -> None:
    for name in ("infra", "bench", "loadtest"):
        # Globbing for sources: a checkout may keep an old __pycache__ directory there.
        assert not list((ROOT / "chronos" / name).rglob("*.py")), f"chronos/{name} is tooling"
    assert (ROOT / "scripts" / "chronos_dev" / "launcher.py").is_file()


def test_the_import_scan_catches_an_offending_import(tmp_path: Path) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text(
        '"""Mentions chronos_dev.launcher in prose only."""\n'
        "import chronos.domain\n"
        "from chronos.errors import ChronosError\n"
        "from . import sibling\n"
        'HINT = "run `chronos-dev infra env`"\n'
    )
    offending = tmp_path / "offending.py"
    offending.write_text(
        "import importlib\n"
        "import chronos_dev\n"
        "from chronos_dev.launcher import Services\n"
        "from chronos.bench import stages\n"
        "import chronos.loadtest.cli as loadtest\n"
        'importlib.import_module("chronos.infra.cli")\n'
    )
    assert forbidden_imports([clean], TOOLING) == set()
    assert forbidden_imports([offending], TOOLING) == {
        f"{offending}: chronos_dev",
        f"{offending}: chronos_dev.launcher",
        f"{offending}: chronos.bench",
        f"{offending}: chronos.loadtest.cli",
        f"{offending}: chronos.infra.cli",
    }
    driver = tmp_path / "driver.py"
    driver.write_text("from psycopg import sql\n")
    assert forbidden_imports([driver], FORBIDDEN) == {f"{driver}: psycopg"}
