"""Generates the protobuf and gRPC Python code for ``protos/`` into ``chronos/v1``.

The generated modules are not committed: ``scripts/setup`` runs this module, so
the code always matches the ``.proto`` files it came from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.rpc import status_pb2
from grpc_tools import protoc

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PROJECT_ROOT / "protos"


def googleapis_proto_root() -> Path:
    """Where ``google/rpc/*.proto`` are: googleapis-common-protos ships them next to
    their generated code."""
    return Path(status_pb2.__file__).resolve().parent.parent.parent


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "chronos" / "v1").glob("*.proto"))


def generate() -> None:
    """Runs protoc for every ``.proto`` under ``protos/chronos/v1``.

    Raises:
        RuntimeError: protoc rejected a file.
    """
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    files = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"-I{googleapis_proto_root()}",
        f"--python_out={PROJECT_ROOT}",
        f"--pyi_out={PROJECT_ROOT}",
        f"--grpc_python_out={PROJECT_ROOT}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {files}")


if __name__ == "__main__":
    try:
        generate()
    except RuntimeError as error:
        print(f"chronos codegen: {error}", file=sys.stderr)
        sys.exit(1)
