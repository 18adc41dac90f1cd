"""What ``chronos-dev infra env`` hands to clients of a secured local stack: every
setting they need, as paths, and never a secret itself."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from chronos.kafka_client import KafkaSecurity
from chronos.read_model.client import ElasticsearchSecurity
from chronos_dev.stack.credentials import SECRETS_DIR_NAME
from chronos_dev.stack.stack import Stack
from chronos_dev.stack.state import LAYOUT_VERSION

PORTS = {
    "postgres": {"port": 15432},
    "kafka": {"port": 19092, "controller_port": 19093},
    "elasticsearch": {"port": 19200, "transport_port": 19300},
}


def _stack(tmp_path: Path) -> Stack:
    servers = {name: {"ports": ports} for name, ports in PORTS.items()}
    (tmp_path / "state.json").write_text(
        json.dumps({"layout_version": LAYOUT_VERSION, "servers": servers})
    )
    return Stack(tmp_path, environ={})


def test_the_environment_carries_the_security_settings(tmp_path: Path) -> None:
    values = _stack(tmp_path).environment()
    dsn = conninfo_to_dict(values["CHRONOS_PG_DSN"])
    assert dsn["sslmode"] == "verify-full"
    assert Path(str(dsn["sslrootcert"])).is_file()
    assert "password" not in dsn
    assert values["CHRONOS_ES_URL"].startswith("https://")
    kafka = KafkaSecurity.from_env(values)
    assert (kafka.protocol, kafka.mechanism, kafka.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "chronos",
    )
    assert kafka.password and Path(kafka.ca_file).is_file()
    elasticsearch = ElasticsearchSecurity.from_env(values)
    assert elasticsearch.username == "chronos" and elasticsearch.password
    for name in (
        "CHRONOS_TLS_CERT_FILE",
        "CHRONOS_TLS_KEY_FILE",
        "CHRONOS_TLS_CA_FILE",
        "CHRONOS_AUTH_JWKS_FILE",
        "CHRONOS_AUTH_SIGNING_KEY_FILE",
    ):
        assert Path(values[name]).is_file(), name


def test_no_secret_is_in_the_environment_and_the_secret_files_are_owner_only(
    tmp_path: Path,
) -> None:
    values = _stack(tmp_path).environment()
    secret_files = sorted((tmp_path / SECRETS_DIR_NAME).glob("*.password"))
    assert len(secret_files) >= 2
    shown = "\n".join(values.values())
    for path in secret_files:
        assert path.read_text().strip() not in shown, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
