"""``chronos token issue``: prints a token signed with the local key, for development
and operations (production tokens usually come from an identity provider)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from chronos.config import ConfigError
from chronos.security import config
from chronos.security.scopes import ALL_SCOPES
from chronos.security.tokens import (
    TTL_SECONDS_DEFAULT,
    TTL_SECONDS_MAX,
    issue_token,
    load_signing_key,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = subparsers.add_parser("token", help="bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser(
        "issue",
        help="print a token signed with CHRONOS_AUTH_SIGNING_KEY_FILE",
        description="Prints only the token on stdout, for "
        '`grpcurl -H "authorization: Bearer $(chronos token issue ...)"`.',
    )
    issue.add_argument("--subject", required=True, help="the principal (the token's sub)")
    issue.add_argument(
        "--scope",
        required=True,
        help=f"scopes, comma- or space-separated, of: {', '.join(ALL_SCOPES)}",
    )
    issue.add_argument(
        "--accounts", help="restrict the token to these account ids (comma-separated)"
    )
    issue.add_argument(
        "--ttl-seconds",
        type=int,
        default=TTL_SECONDS_DEFAULT,
        help=f"validity (1 to {TTL_SECONDS_MAX}; default {TTL_SECONDS_DEFAULT})",
    )
    issue.set_defaults(func=_run_issue)


def _run_issue(args: argparse.Namespace) -> int:
    try:
        token = _issue(args)
    except ConfigError as error:
        print(f"chronos token issue: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _issue(args: argparse.Namespace) -> str:
    scopes = [scope for scope in re.split(r"[,\s]+", args.scope) if scope]
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if not scopes or unknown:
        raise ConfigError(
            f"--scope: unknown scope {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known: {', '.join(ALL_SCOPES)}"
        )
    accounts = None
    if args.accounts is not None:
        accounts = [account for account in re.split(r"[,\s]+", args.accounts) if account]
    if not 0 < args.ttl_seconds <= TTL_SECONDS_MAX:
        raise ConfigError(f"--ttl-seconds must be between 1 and {TTL_SECONDS_MAX}")
    if not args.subject.strip():
        raise ConfigError("--subject must not be empty")
    key_file = config.AUTH_SIGNING_KEY_FILE.read()
    if not key_file:
        raise ConfigError(
            f"{config.AUTH_SIGNING_KEY_FILE.name} is not set: it names the Ed25519 private "
            "key (PEM) tokens are signed with"
        )
    try:
        key = load_signing_key(Path(key_file))
    except (OSError, ValueError) as error:
        # The error names the file and what is wrong with it, never the key's bytes.
        raise ConfigError(
            f"{config.AUTH_SIGNING_KEY_FILE.name}: cannot load {key_file} "
            f"({type(error).__name__}: {error})"
        ) from None
    return issue_token(
        key,
        subject=args.subject,
        scopes=scopes,
        issuer=config.AUTH_ISSUER.read(),
        audience=config.AUTH_AUDIENCE.read(),
        accounts=accounts,
        ttl_seconds=args.ttl_seconds,
    )
