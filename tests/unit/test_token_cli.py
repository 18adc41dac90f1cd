"""`chronos token issue`: prints only a token the servers accept; clear errors otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chronos.cli import main
from chronos.security.keys import JwksFileKeys
from chronos.security.verify import TokenVerifier
from chronos_dev.pki import ensure_local_pki


def test_issue_prints_a_token_the_servers_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = ensure_local_pki(tmp_path)
    monkeypatch.setenv("CHRONOS_AUTH_SIGNING_KEY_FILE", str(pki.signing_key))
    code = main(
        ["token", "issue", "--subject", "ops", "--scope", "ledger:read,funds:write admin",
         "--accounts", "a1,a2", "--ttl-seconds", "60"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 1
    verifier = TokenVerifier(
        JwksFileKeys(pki.jwks),
        issuer="chronos-local",
        audience="chronos-ledger",
        clock_skew_seconds=0,
        cache_max=0,
    )
    caller = asyncio.run(verifier.verify("Bearer " + out.strip()))
    assert caller.subject == "ops"
    assert caller.scopes == {"ledger:read", "funds:write", "admin"}
    assert caller.accounts == {"a1", "a2"}


@pytest.mark.parametrize(
    ("arguments", "key_set", "message"),
    [
        (["--scope", "admin"], False, "CHRONOS_AUTH_SIGNING_KEY_FILE is not set"),
        (["--scope", "admin,root"], True, "unknown scope 'root'"),
        (["--scope", "admin", "--ttl-seconds", "0"], True, "--ttl-seconds"),
    ],
)
def test_issue_refuses_with_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    key_set: bool,
    message: str,
) -> None:
    monkeypatch.delenv("CHRONOS_AUTH_SIGNING_KEY_FILE", raising=False)
    if key_set:
        monkeypatch.setenv(
            "CHRONOS_AUTH_SIGNING_KEY_FILE", str(ensure_local_pki(tmp_path).signing_key)
        )
    assert main(["token", "issue", "--subject", "ops", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "Traceback" not in captured.err
