"""Fetching server distributions with Maven: strict checksums, cached behind a marker file.

Kafka and Elasticsearch are both described by a small pom next to this module; this
helper copies the pom's runtime dependencies into a directory once. A marker file
written after a successful copy records which pom produced the directory, so a later
``chronos-dev infra up`` needs neither Maven nor the network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from chronos_dev.stack import InfraError, tail_lines

# Written last, so its presence means the directory is complete.
MARKER_NAME = ".chronos-fetched"

# A cold fetch of Kafka is ~45 jars, Elasticsearch one ~100 MB zip; allow a slow mirror.
FETCH_TIMEOUT_SECONDS = 900.0


def pom_path(name: str) -> Path:
    """The pom shipped as package data of :mod:`chronos_dev.stack`, e.g. ``kafka-pom.xml``."""
    path = Path(__file__).resolve().parent / name
    assert path.is_file(), f"package data {name} is missing from chronos_dev.stack"
    return path


def is_fetched(pom: Path, output_dir: Path) -> bool:
    """True when ``output_dir`` holds a complete copy of what ``pom`` names."""
    marker = output_dir / MARKER_NAME
    return marker.is_file() and marker.read_text().strip() == _fingerprint(pom)


def fetch_dependencies(
    pom: Path,
    output_dir: Path,
    *,
    what: str,
    log_path: Path,
    include_scope: str = "runtime",
) -> None:
    """Copies the dependencies of ``pom`` into ``output_dir`` unless already there.

    Runs ``mvn -B -q -C dependency:copy-dependencies`` (``-C``: a checksum mismatch
    fails the download instead of warning). Maven's local repository is the user's
    default one, so artifacts are shared with other builds and survive
    ``chronos-dev infra down --purge``. The copy goes to a sibling directory first and is
    renamed into place, so an interrupted fetch never looks complete.

    Args:
        pom: the pom whose dependencies to copy.
        output_dir: where the jars/zips end up (created).
        what: a name for messages, e.g. ``"Kafka 4.4.0"``.
        log_path: Maven's output goes here.
        include_scope: the dependency scope to copy.

    Raises:
        InfraError: ``mvn`` is not installed, or the download failed.
    """
    if is_fetched(pom, output_dir):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            f"{what}: Maven (mvn) is not on PATH. It is needed once, to download the "
            f"server into {output_dir}. Install it (Debian: apt-get install maven) and "
            "run `chronos-dev infra up` again."
        )
    partial_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    partial_dir.mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-C",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial_dir}",
        f"-DincludeScope={include_scope}",
    ]
    _run_maven(command, what=what, log_path=log_path, partial_dir=partial_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    partial_dir.rename(output_dir)
    (output_dir / MARKER_NAME).write_text(_fingerprint(pom) + "\n")


def _run_maven(command: list[str], *, what: str, log_path: Path, partial_dir: Path) -> None:
    # Runs Maven with its output in log_path; on failure removes the partial copy.
    with log_path.open("wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=FETCH_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial_dir, ignore_errors=True)
            raise InfraError(
                f"{what}: the Maven download did not finish within "
                f"{FETCH_TIMEOUT_SECONDS:.0f} s; Maven's output: {log_path}"
            ) from None
    if completed.returncode != 0:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise InfraError(
            f"{what}: downloading with Maven failed (mvn exit code {completed.returncode}). "
            f"Is the package registry reachable? Maven's output ({log_path}) ends with:\n"
            + tail_lines(log_path)
        )


def _fingerprint(pom: Path) -> str:
    # The marker names the exact pom content, so editing a version refetches.
    return hashlib.sha256(pom.read_bytes()).hexdigest()
