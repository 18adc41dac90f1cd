"""End-to-end tests run the servers as they run in production: TLS and authentication on.

The local stack exports its key material (``chronos-dev infra env``: the servers'
certificate and JWKS, the clients' CA and token signing key), and every service these
tests start and every client they open (:mod:`chronos_dev.client`) takes it from the
environment. Where the servers come from elsewhere (Docker, or addresses given by hand)
and nothing is exported, this session makes its own key material, so that the tests
still run secured rather than fail at the servers' refusal to start insecure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chronos.security import config as security
from chronos_dev.pki import ensure_local_pki

# What a secured local stack exports for the servers and for their clients.
_KEY_MATERIAL = (
    security.TLS_CERT_FILE,
    security.TLS_KEY_FILE,
    security.AUTH_JWKS_FILE,
    security.TLS_CA_FILE,
    security.AUTH_SIGNING_KEY_FILE,
)


@pytest.fixture(scope="session", autouse=True)
def key_material(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment's key material, or this session's own when it names none."""
    if any(setting.read() for setting in _KEY_MATERIAL):
        yield
        return
    pki = ensure_local_pki(tmp_path_factory.mktemp("pki"))
    paths = (pki.server_cert, pki.server_key, pki.jwks, pki.ca_cert, pki.signing_key)
    with pytest.MonkeyPatch.context() as patch:
        for setting, path in zip(_KEY_MATERIAL, paths, strict=True):
            patch.setenv(setting.name, str(path))
        yield
