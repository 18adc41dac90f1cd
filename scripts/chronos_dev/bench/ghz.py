"""Closed-loop gRPC stages with ghz (https://ghz.sh), a load generator written in Go.

ghz is preferred over the Python client because it needs several times less CPU per
call, and on a small machine the client shares the cores with the servers it measures.
Install it through the Go module proxy::

    go install github.com/bojand/ghz/cmd/ghz@v0.120.0

which puts it in ``$(go env GOPATH)/bin`` (``~/go/bin``); the bench looks there and on
``PATH``, or takes ``--ghz PATH``.

The Python servers' reflection cannot resolve method symbols for ghz, so ghz reads the
schema itself: ``--proto protos/chronos/v1/<file>.proto --import-paths protos`` for the
Chronos services, and for the empty call (``grpc.health.v1.Health/Check``) a protoset
written from the descriptor compiled into ``grpcio-health-checking`` (the package ships
no ``.proto`` file).

ghz is secured like every other client (:mod:`chronos_dev.client`): with a CA it checks
the server's certificate against it (``--cacert``), otherwise it speaks plaintext
(``--insecure``); a token goes into every call's metadata. Both are written to files
(:func:`security_arguments`), so that the token never shows on a command line.

ghz runs ``-z <duration>`` with ``--duration-stop=wait`` (calls in flight at the end
finish and count, instead of failing as "transport is closing") and writes its JSON
report, whose ``details`` hold every call's latency and status. Those latencies go into
the load test's :class:`~chronos_dev.loadtest.stats.LatencyHistogram`, so every percentile
of the bench is computed the same way, whichever client produced it. Throughput is OK
answers divided by ghz's ``total`` (the wall time of the run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from chronos.codegen import googleapis_proto_root
from chronos_dev.bench.clients import ThroughputResult
from chronos_dev.bench.resources import BenchError
from chronos_dev.client import ClientSecurity
from chronos_dev.launcher import PROJECT_ROOT
from chronos_dev.loadtest.stats import LatencyHistogram

GHZ_INSTALL_COMMAND = "go install github.com/bojand/ghz/cmd/ghz@v0.120.0"
PROTOS_DIR = PROJECT_ROOT / "protos"
# ghz's own bound on the run is -z; this covers start-up, the final wait and the report.
RUN_TIMEOUT_MARGIN_SECONDS = 180.0
_VERSION_TIMEOUT_SECONDS = 10.0


def find_ghz(explicit: str | None) -> str | None:
    """The ghz executable: ``explicit``, else on PATH, else in the Go bin directory."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("ghz")
    if on_path:
        return on_path
    go_path = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidate = Path(go_path) / "bin" / "ghz"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def ghz_version(ghz_path: str) -> str:
    """ghz's version; a ``go install`` build says "dev", so then ask Go's build info."""
    completed = subprocess.run(
        [ghz_path, "--version"],
        capture_output=True,
        text=True,
        timeout=_VERSION_TIMEOUT_SECONDS,
        check=False,
    )
    version = (completed.stdout or completed.stderr).strip()
    go = shutil.which("go")
    if version != "dev" or go is None:
        return version
    build_info = subprocess.run(
        [go, "version", "-m", ghz_path],
        capture_output=True,
        text=True,
        timeout=_VERSION_TIMEOUT_SECONDS,
        check=False,
    )
    for line in build_info.stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", "github.com/bojand/ghz"] and len(fields) >= 3:
            return fields[2]
    return version


def write_health_protoset(path: Path) -> Path:
    """Writes a FileDescriptorSet of ``grpc/health/v1/health.proto`` (no imports)."""
    files = descriptor_pb2.FileDescriptorSet()
    files.file.add().MergeFromString(health_pb2.DESCRIPTOR.serialized_pb)
    assert not files.file[0].dependency, "health.proto was expected to import nothing"
    path.write_bytes(files.SerializeToString())
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class GhzCall:
    """What ghz sends: the method, where its schema comes from and the request data."""

    # Fully qualified, e.g. "chronos.v1.CommandService/TransferFunds".
    method: str
    # "--proto ... --import-paths ..." or "--protoset ...".
    schema_arguments: tuple[str, ...]
    # A JSON array of requests, used round-robin (None: ``data`` for every call).
    data_file: Path | None = None
    data: str = "{}"

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]


def chronos_schema(proto_file: str) -> tuple[str, ...]:
    """ghz arguments for a file under ``protos/chronos/v1`` (commands.proto imports
    google/rpc/status.proto)."""
    return (
        "--proto",
        str(PROTOS_DIR / "chronos" / "v1" / proto_file),
        "--import-paths",
        f"{PROTOS_DIR},{googleapis_proto_root()}",
    )


def _write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return path


def security_arguments(security: ClientSecurity, work_dir: Path) -> tuple[str, ...]:
    """ghz's transport and metadata arguments for ``security``; the CA and the token's
    metadata are written under ``work_dir`` (owner-only)."""
    if security.ca_pem is None:
        arguments: Sequence[str] = ("--insecure",)
    else:
        ca_file = _write_private(work_dir / "ghz-ca.pem", security.ca_pem)
        arguments = ("--cacert", str(ca_file))
    if security.token is None:
        return tuple(arguments)
    metadata = json.dumps(dict(security.metadata())).encode()
    metadata_file = _write_private(work_dir / "ghz-metadata.json", metadata)
    return (*arguments, "--metadata-file", str(metadata_file))


def run_ghz(
    ghz_path: str,
    call: GhzCall,
    *,
    security: ClientSecurity,
    target: str,
    concurrency: int,
    connections: int,
    duration_seconds: float,
    rpc_timeout_seconds: float,
    report_path: Path,
) -> ThroughputResult:
    """Runs ghz closed loop for ``duration_seconds``; see the module docstring.

    The raw report (every call's details) is deleted once read: it grows with the
    number of calls and everything the bench needs is in the returned result.

    Raises:
        BenchError: ghz failed or wrote no report.
    """
    data_arguments = (
        ("--data-file", str(call.data_file)) if call.data_file else ("--data", call.data)
    )
    command = [
        ghz_path,
        *security_arguments(security, report_path.parent),
        *call.schema_arguments,
        "--call",
        call.method,
        *data_arguments,
        "--concurrency",
        str(concurrency),
        "--connections",
        str(min(connections, concurrency)),
        "--duration",
        f"{duration_seconds:g}s",
        "--duration-stop",
        "wait",
        "--timeout",
        f"{rpc_timeout_seconds:g}s",
        "--format",
        "json",
        "--output",
        str(report_path),
        target,
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration_seconds + RUN_TIMEOUT_MARGIN_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"ghz {call.method} did not finish in time") from error
    if completed.returncode != 0 or not report_path.is_file():
        raise BenchError(
            f"ghz {call.method} failed with status {completed.returncode}: "
            f"{(completed.stderr or completed.stdout)[-2000:]}"
        )
    try:
        report = json.loads(report_path.read_text())
    finally:
        report_path.unlink(missing_ok=True)
    return _result(report, call, target, concurrency, min(connections, concurrency))


def _result(
    report: dict[str, object],
    call: GhzCall,
    target: str,
    concurrency: int,
    connections: int,
) -> ThroughputResult:
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    ok = 0
    details = report.get("details") or []
    assert isinstance(details, list), "ghz report without a details list"
    for detail in details:
        status = str(detail.get("status", ""))
        if status == "OK":
            ok += 1
            histogram.record_seconds(int(detail["latency"]) / 1e9)
        else:
            errors[status or "UNKNOWN"] = errors.get(status or "UNKNOWN", 0) + 1
    total_nanoseconds = report.get("total")
    assert isinstance(total_nanoseconds, int | float), "ghz report without a total"
    return ThroughputResult(
        tool="ghz",
        rpc=call.rpc,
        target=target,
        concurrency=concurrency,
        connections=connections,
        elapsed_seconds=float(total_nanoseconds) / 1e9,
        ok=ok,
        failed=sum(errors.values()),
        errors=errors,
        histogram=histogram,
        extra={
            "ghz_rps": round(float(str(report.get("rps", 0.0))), 1),
            "latency_includes_errors": False,
        },
    )
