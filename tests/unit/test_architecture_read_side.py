"""The read model's query modules speak Elasticsearch only; gRPC and protobuf stay in the
query server, which maps documents to messages at its edge."""

import ast
from pathlib import Path

READ_MODEL = Path(__file__).resolve().parents[2] / "chronos" / "read_model"
QUERY_MODULES = ("queries.py", "watermark_cache.py", "coalesce.py")
FORBIDDEN = ("grpc", "google", "chronos.v1", "chronos.rpc", "query_server")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_read_model_queries_import_no_grpc_or_protobuf() -> None:
    offenders = {
        f"{name}: {module}"
        for name in QUERY_MODULES
        for module in imported_modules(READ_MODEL / name)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    }
    assert offenders == set()
