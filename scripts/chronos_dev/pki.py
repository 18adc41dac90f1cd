"""The local stack's key material: a CA, certificates it signs, and a token signing key.

``ensure_local_pki(directory)`` creates, once, what a secured local stack needs: a CA
that clients trust, a server certificate for 127.0.0.1 and localhost (the gRPC servers,
PostgreSQL, Kafka and Elasticsearch all present it), a client certificate (for mutual
TLS), an Ed25519 token signing key with its JWKS, and an Ed25519 key that signs the hash
chain's checkpoints with its JWKS. Files are written owner-only.
Nothing here is fit for production: a real deployment brings its own CA and identity
provider (docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chronos.security.tokens import jwks_document, new_signing_key, private_key_pem

LOCAL_HOSTS = ("127.0.0.1", "localhost")
VALIDITY_DAYS = 825


@dataclass(frozen=True, slots=True)
class LocalPki:
    """Paths of the local key material (all PEM but ``jwks``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    @property
    def signing_key(self) -> Path:
        return self.directory / "token-signing-key.pem"

    @property
    def jwks(self) -> Path:
        return self.directory / "jwks.json"

    @property
    def checkpoint_signing_key(self) -> Path:
        """The key the outbox poller's leader signs the chain checkpoints with."""
        return self.directory / "checkpoint-signing-key.pem"

    @property
    def checkpoint_jwks(self) -> Path:
        """The public half, as the JWKS `chronos verify` trusts."""
        return self.directory / "checkpoint-jwks.json"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Chronos local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(cert_path: Path, key_path: Path) -> None:
    """A self-signed CA certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("Chronos local CA"))
        .issuer_name(_name("Chronos local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def issue_certificate(
    ca_cert_path: Path,
    ca_key_path: Path,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    hosts: Sequence[str] = (),
    client: bool = False,
) -> None:
    """A certificate signed by the CA: for a server (``hosts`` as its names) or a client."""
    ca_certificate = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def ensure_local_pki(directory: Path) -> LocalPki:
    """Creates what is missing of the local key material under ``directory``."""
    pki = LocalPki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not (pki.ca_cert.is_file() and pki.ca_key.is_file()):
        create_ca(pki.ca_cert, pki.ca_key)
        for stale in (pki.server_cert, pki.client_cert):
            stale.unlink(missing_ok=True)
    if not (pki.server_cert.is_file() and pki.server_key.is_file()):
        issue_certificate(
            pki.ca_cert,
            pki.ca_key,
            pki.server_cert,
            pki.server_key,
            common_name="localhost",
            hosts=LOCAL_HOSTS,
        )
    if not (pki.client_cert.is_file() and pki.client_key.is_file()):
        issue_certificate(
            pki.ca_cert,
            pki.ca_key,
            pki.client_cert,
            pki.client_key,
            common_name="chronos-dev client",
            client=True,
        )
    for key_path, jwks_path in (
        (pki.signing_key, pki.jwks),
        (pki.checkpoint_signing_key, pki.checkpoint_jwks),
    ):
        if not (key_path.is_file() and jwks_path.is_file()):
            key = new_signing_key()
            _write_private(key_path, private_key_pem(key))
            jwks_path.write_text(json.dumps(jwks_document([key.public_key()]), indent=2) + "\n")
    return pki
