"""How the tooling secures its clients: the lines ``chronos-dev services`` prints, ghz's
arguments, the load generators' metadata and the bench's security ratios (the
launcher's secured and insecure sets: test_launcher.py). Pure parts only; the e2e tests
run them for real."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chronos.security import config as security
from chronos_dev.bench.ghz import security_arguments
from chronos_dev.bench.report import ratios, targets
from chronos_dev.client import ClientSecurity
from chronos_dev.foreground import security_summary, try_it_lines
from chronos_dev.launcher import (
    INSECURE_SETTINGS,
    PLAINTEXT,
)
from chronos_dev.loadtest.channels import call_metadata
from chronos_dev.pki import LocalPki, ensure_local_pki

ADDRESS = "127.0.0.1:50051"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return ensure_local_pki(tmp_path_factory.mktemp("pki"))


def stack_environment(pki: LocalPki) -> dict[str, str]:
    """What the local stack exports: the servers' and the clients' key material."""
    return {
        security.TLS_CERT_FILE.name: str(pki.server_cert),
        security.TLS_KEY_FILE.name: str(pki.server_key),
        security.AUTH_JWKS_FILE.name: str(pki.jwks),
        security.TLS_CA_FILE.name: str(pki.ca_cert),
        security.AUTH_SIGNING_KEY_FILE.name: str(pki.signing_key),
    }


def test_secured_servers_get_a_token_line_and_a_refused_line(pki: LocalPki) -> None:
    env = stack_environment(pki)
    lines = try_it_lines(env, ADDRESS)
    assert len(lines) == 2
    with_token, without = lines
    assert with_token.startswith(f"grpcurl -cacert {pki.ca_cert} ")
    assert f"{security.AUTH_SIGNING_KEY_FILE.name}={pki.signing_key} " in with_token
    assert "token issue --subject you --scope admin)" in with_token
    assert with_token.endswith(f'" {ADDRESS} list')
    assert without.startswith(f"grpcurl -cacert {pki.ca_cert} {ADDRESS} list")
    assert "UNAUTHENTICATED" in without
    assert security_summary(env) == "TLS, bearer tokens required"


def test_paths_under_the_working_directory_are_shown_relative(
    pki: LocalPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pki.directory.parent)
    line = try_it_lines(stack_environment(pki), ADDRESS)[0]
    assert f"-cacert {pki.directory.name}/ca.pem " in line


def test_insecure_servers_get_a_plaintext_line(pki: LocalPki) -> None:
    env = {**stack_environment(pki), **INSECURE_SETTINGS}
    assert try_it_lines(env, ADDRESS) == [f"grpcurl -plaintext {ADDRESS} list"]
    assert security_summary(env) == "plaintext, no authentication"


def test_tokens_from_an_identity_provider_are_a_placeholder(pki: LocalPki) -> None:
    env = stack_environment(pki)
    del env[security.AUTH_SIGNING_KEY_FILE.name]
    env[security.TLS_CLIENT_CA_FILE.name] = str(pki.ca_cert)
    assert "Bearer <a token from your identity provider>" in try_it_lines(env, ADDRESS)[0]
    assert security_summary(env) == "mutual TLS, bearer tokens required"


def test_ghz_speaks_plaintext_without_a_ca(tmp_path: Path) -> None:
    assert security_arguments(PLAINTEXT, tmp_path) == ("--insecure",)
    assert list(tmp_path.iterdir()) == []


def test_ghz_gets_the_ca_and_the_token_from_owner_only_files(tmp_path: Path) -> None:
    token = "header.payload.signature"
    arguments = security_arguments(ClientSecurity(ca_pem=b"CA PEM", token=token), tmp_path)
    assert arguments[0::2] == ("--cacert", "--metadata-file")
    ca_file, metadata_file = Path(arguments[1]), Path(arguments[3])
    assert ca_file.read_bytes() == b"CA PEM"
    assert json.loads(metadata_file.read_text()) == {"authorization": f"Bearer {token}"}
    assert stat.S_IMODE(os.stat(metadata_file).st_mode) == 0o600
    # Never on the command line, where any user of the machine can read it.
    assert not any(token in argument for argument in arguments)


def test_load_generators_send_the_token_as_call_metadata() -> None:
    assert call_metadata(PLAINTEXT) == ()
    assert call_metadata(ClientSecurity(ca_pem=None, token="t")) == (("authorization", "Bearer t"),)


def test_the_bench_reports_security_on_over_off() -> None:
    results = {
        "transfer_funds": {"throughput_per_second": 900.0},
        "transfer_funds_security_off": {"throughput_per_second": 1000.0},
        "get_account": {"throughput_per_second": 800.0},
        "get_account_security_off": {"throughput_per_second": 1000.0},
    }
    found = ratios(results)
    assert found["transfer_funds_security_on_over_off"] == 0.9
    assert found["get_account_security_on_over_off"] == 0.8
    verdicts = {target.name: target.met for target in targets(results)}
    assert verdicts["TransferFunds, TLS + authentication on / off (b/b-off)"] is True
    assert verdicts["GetAccount, TLS + authentication on / off (d/d-off)"] is False


def test_without_the_second_set_the_ratios_are_unknown() -> None:
    found = ratios({"transfer_funds": {"throughput_per_second": 900.0}})
    assert found["transfer_funds_security_on_over_off"] is None
