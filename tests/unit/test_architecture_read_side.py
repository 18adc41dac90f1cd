"""The read model's query modules speak Elasticsearch only; gRPC and protobuf stay in the
query server, which maps documents to messages at its edge."""

from pathlib import Path

from tests.unit.test_architecture import imported_modules

READ_MODEL = Path(__file__).resolve().parents[2] / "chronos" / "read_model"
QUERY_MODULES = ("queries.py", "watermark_cache.py", "coalesce.py", "event_queries.py")
FORBIDDEN = ("grpc", "google", "chronos.v1", "chronos.rpc", "query_server")


def test_read_model_queries_import_no_grpc_or_protobuf() -> None:
    offenders = {
        f"{name}: {module}"
        for name in QUERY_MODULES
        for module in imported_modules(READ_MODEL / name)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    }
    assert offenders == set()
