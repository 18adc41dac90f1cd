"""The servers' TLS credentials, re-read when the files change: certificates rotate
without a restart.

gRPC asks :meth:`CertificateFiles.fetch` for the configuration before each new
connection's handshake; it answers None (keep the current one) unless the files' size or
modification time changed, or SIGHUP asked for a reload. A half-written rotation (a
certificate that does not match its key) is refused and the previous pair kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chronos.config import ConfigError

_logger = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Where a server's certificate, key and (for mutual TLS) client CA are."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None


class CertificateFiles:
    """The certificate, key and client CA files of ``files``, as gRPC configurations."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._paths = [files.cert_file, files.key_file]
        if files.client_ca_file is not None:
            self._paths.append(files.client_ca_file)
        self._lock = threading.Lock()
        self._stamp: _Stamp = ()
        self._reload_requested = False
        try:
            self._stamp, self.initial = self._load()
        except (OSError, ValueError) as error:
            raise ConfigError(f"TLS files: {error}") from error

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that call :meth:`fetch` for each new connection."""
        return grpc.dynamic_ssl_server_credentials(
            self.initial,
            self.fetch,
            require_client_authentication=self._files.client_ca_file is not None,
        )

    def request_reload(self) -> None:
        """Makes the next handshake read the files again (SIGHUP)."""
        self._reload_requested = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed, else None (gRPC's contract).

        Never raises: gRPC calls it from its own thread, and a failure there would
        refuse the connection; a bad rotation keeps serving the previous certificate.
        """
        with self._lock:
            try:
                stamp = self._read_stamp()
                if stamp == self._stamp and not self._reload_requested:
                    return None
                self._reload_requested = False
                self._stamp, configuration = self._load()
            except (OSError, ValueError) as error:
                _logger.error("TLS files not reloaded, keeping the previous ones: %s", error)
                return None
            except Exception:
                _logger.exception("TLS files not reloaded, keeping the previous ones")
                return None
        _logger.info("TLS certificate reloaded from %s", self._files.cert_file)
        return configuration

    def _read_stamp(self) -> _Stamp:
        return tuple(
            (stat.st_mtime_ns, stat.st_size) for stat in (path.stat() for path in self._paths)
        )

    def _load(self) -> tuple[_Stamp, grpc.ServerCertificateConfiguration]:
        stamp = self._read_stamp()
        chain = self._files.cert_file.read_bytes()
        key = self._files.key_file.read_bytes()
        _check_pair(chain, key)
        client_ca = (
            None if self._files.client_ca_file is None else self._files.client_ca_file.read_bytes()
        )
        if client_ca is not None:
            x509.load_pem_x509_certificates(client_ca)
        configuration = grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=client_ca
        )
        return stamp, configuration


def _check_pair(chain: bytes, key_pem: bytes) -> None:
    """Raises ValueError unless ``key_pem`` is the private key of the chain's first
    certificate (files caught mid-rotation, or a wrong pair)."""
    certificate = x509.load_pem_x509_certificates(chain)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise ValueError("the TLS key does not belong to the certificate")
