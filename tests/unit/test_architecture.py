"""Dependencies point inward: the domain imports no driver and no generated code."""

import ast
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "chronos" / "domain"
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


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_domain_imports_no_driver_or_adapter() -> None:
    files = sorted(DOMAIN.glob("*.py"))
    assert len(files) >= 5, "the domain package moved; update this test"
    offenders = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    }
    assert offenders == set()
