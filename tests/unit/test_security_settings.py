"""Secure by default: what a server refuses to start with, and what it warns about."""

from __future__ import annotations

from pathlib import Path

import pytest

from chronos.config import ConfigError
from chronos.security.config import SecuritySettings, is_loopback
from chronos_dev.pki import ensure_local_pki

INSECURE = {"CHRONOS_INSECURE_NO_TLS": "1", "CHRONOS_INSECURE_NO_AUTH": "1"}


@pytest.fixture(scope="module")
def secure_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pki = ensure_local_pki(tmp_path_factory.mktemp("pki"))
    return {
        "CHRONOS_TLS_CERT_FILE": str(pki.server_cert),
        "CHRONOS_TLS_KEY_FILE": str(pki.server_key),
        "CHRONOS_AUTH_JWKS_FILE": str(pki.jwks),
    }


def test_tls_and_auth_configured_are_read(secure_env: dict[str, str]) -> None:
    settings = SecuritySettings.from_env("0.0.0.0:50051", secure_env)
    assert settings.tls is not None and settings.tls.client_ca_file is None
    assert settings.auth is not None and settings.auth.issuer == "chronos-local"
    assert settings.rate_limit_per_second == 0 and settings.warnings == ()


def test_tls_on_without_a_certificate_refuses_to_start(secure_env: dict[str, str]) -> None:
    env = {key: value for key, value in secure_env.items() if key != "CHRONOS_TLS_CERT_FILE"}
    with pytest.raises(ConfigError, match="CHRONOS_TLS_CERT_FILE is not set"):
        SecuritySettings.from_env("127.0.0.1:50051", env)


def test_auth_on_without_keys_refuses_to_start(secure_env: dict[str, str]) -> None:
    env = {key: value for key, value in secure_env.items() if key != "CHRONOS_AUTH_JWKS_FILE"}
    with pytest.raises(ConfigError, match="CHRONOS_AUTH_JWKS_FILE and CHRONOS_AUTH_OIDC_ISSUER"):
        SecuritySettings.from_env("127.0.0.1:50051", env)


def test_a_key_of_another_certificate_refuses_to_start(
    secure_env: dict[str, str], tmp_path: Path
) -> None:
    other = ensure_local_pki(tmp_path)
    env = secure_env | {"CHRONOS_TLS_KEY_FILE": str(other.server_key)}
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        SecuritySettings.from_env("127.0.0.1:50051", env)


def test_an_empty_jwks_refuses_to_start(secure_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "jwks.json"
    empty.write_text('{"keys": []}')
    with pytest.raises(ConfigError, match="no usable key"):
        SecuritySettings.from_env(
            "127.0.0.1:1", secure_env | {"CHRONOS_AUTH_JWKS_FILE": str(empty)}
        )


def test_a_plaintext_oidc_issuer_off_loopback_is_refused() -> None:
    env = {"CHRONOS_INSECURE_NO_TLS": "1", "CHRONOS_AUTH_OIDC_ISSUER": "http://idp.example"}
    with pytest.raises(ConfigError, match="https"):
        SecuritySettings.from_env("127.0.0.1:1", env)


@pytest.mark.parametrize("turned_off", ["CHRONOS_INSECURE_NO_TLS", "CHRONOS_INSECURE_NO_AUTH"])
def test_insecure_off_loopback_refuses_to_start(
    secure_env: dict[str, str], turned_off: str
) -> None:
    with pytest.raises(ConfigError, match=f"{turned_off} may only be used on a loopback"):
        SecuritySettings.from_env("0.0.0.0:50051", secure_env | {turned_off: "1"})


def test_insecure_off_loopback_with_allow_remote_warns() -> None:
    env = INSECURE | {"CHRONOS_INSECURE_ALLOW_REMOTE": "1"}
    settings = SecuritySettings.from_env("10.1.2.3:50051", env)
    assert settings.tls is None and settings.auth is None
    assert len(settings.warnings) == 1 and "INSECURE" in settings.warnings[0]


def test_insecure_on_loopback_is_allowed_quietly() -> None:
    settings = SecuritySettings.from_env("127.0.0.1:50051", INSECURE)
    assert settings.tls is None and settings.auth is None and settings.warnings == ()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("[::1]", True), ("127.8.0.1", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
