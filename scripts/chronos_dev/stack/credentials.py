"""The local stack's secrets: generated passwords and the key material, under the stack.

Passwords are generated once per stack directory into ``<stack>/secrets/`` (one file per
account, owner-only) and never appear in a command line, a log or an environment
variable: clients get the path of the file (libpq's ``passfile``, the
``CHRONOS_*_PASSWORD_FILE`` settings). The CA, the server certificate the three servers
present and the token signing key are :func:`chronos_dev.pki.ensure_local_pki`'s, in
``<stack>/pki/``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from chronos_dev.pki import LocalPki, ensure_local_pki

SECRETS_DIR_NAME = "secrets"
PKI_DIR_NAME = "pki"
# 32 random bytes, URL-safe base64: no character needs quoting in a pgpass line, a JAAS
# string or an HTTP basic-auth header.
PASSWORD_BYTES = 32


def stack_pki(stack_dir: Path) -> LocalPki:
    """The stack's key material, created where missing."""
    return ensure_local_pki(stack_dir / PKI_DIR_NAME)


def password_path(stack_dir: Path, account: str) -> Path:
    """Where the password of ``account`` (e.g. ``"kafka-chronos"``) is kept."""
    return stack_dir / SECRETS_DIR_NAME / f"{account}.password"


def password(stack_dir: Path, account: str) -> str:
    """The password of ``account``, generated (and written owner-only) the first time."""
    path = password_path(stack_dir, account)
    if not path.is_file():
        write_private(path, secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
    value = path.read_text().strip()
    assert value, f"{path} is empty"
    return value


def write_private(path: Path, content: str) -> None:
    """Writes ``content`` to ``path``, readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
    temporary.replace(path)
