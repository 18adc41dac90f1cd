"""The servers' TLS files: re-read when they change or on request (SIGHUP), and a
half-done rotation (a key of another certificate) keeps the previous pair."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from chronos.config import ConfigError
from chronos.security.tls import CertificateFiles, TlsFiles
from chronos_dev.pki import ensure_local_pki


def served(tmp_path: Path) -> TlsFiles:
    pki = ensure_local_pki(tmp_path / "pki")
    directory = tmp_path / "served"
    directory.mkdir()
    for path in (pki.server_cert, pki.server_key):
        shutil.copy(path, directory / path.name)
    files = TlsFiles(
        cert_file=directory / pki.server_cert.name,
        key_file=directory / pki.server_key.name,
        client_ca_file=None,
    )
    return files


def test_unchanged_files_keep_the_configuration(tmp_path: Path) -> None:
    certificates = CertificateFiles(served(tmp_path))
    assert certificates.fetch() is None
    certificates.request_reload()
    assert certificates.fetch() is not None, "SIGHUP reads the files again"
    assert certificates.fetch() is None


def test_a_rotated_pair_is_loaded_and_a_mismatched_one_is_not(tmp_path: Path) -> None:
    files = served(tmp_path)
    certificates = CertificateFiles(files)
    rotated = ensure_local_pki(tmp_path / "rotated")
    shutil.copy(rotated.server_key, files.key_file)  # the key first: a mismatched pair
    os.utime(files.key_file, ns=(1, 1))
    assert certificates.fetch() is None, "a key of another certificate was served"
    shutil.copy(rotated.server_cert, files.cert_file)
    assert certificates.fetch() is not None


def test_a_missing_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    files = served(tmp_path)
    files.key_file.unlink()
    with pytest.raises(ConfigError, match="TLS files"):
        CertificateFiles(files)
