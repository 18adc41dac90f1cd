"""How the services authenticate to PostgreSQL, Kafka and Elasticsearch: secrets read
from a file or the environment, and the start-up error when a backend refuses them.

A secret never appears in a log line, an error message or a ``repr``: the dataclasses
holding one declare it ``repr=False``, and errors name the variable to check, not its
value.
"""

from __future__ import annotations

from collections.abc import Mapping

from chronos.errors import ChronosError
from chronos.settings import ConfigError, Setting


class BackendRefused(ChronosError):
    """A backend refused the credentials or the TLS settings at start (not an outage).

    Fatal: retrying cannot fix a wrong password. The message names the server, what it
    refused and the settings to check, and holds no secret.
    """


def read_secret(
    file_setting: Setting[str], value_setting: Setting[str], environ: Mapping[str, str]
) -> str:
    """The secret from the file ``file_setting`` names, else ``value_setting``'s value.

    Surrounding whitespace (a file's final newline) is dropped. Empty when neither is set.

    Raises:
        ConfigError: both are set, or the file cannot be read or is empty.
    """
    path = file_setting.read(environ)
    value = value_setting.read(environ)
    if path and value:
        raise ConfigError(f"set {file_setting.name} or {value_setting.name}, not both")
    if not path:
        return value.strip()
    try:
        with open(path, encoding="utf-8") as file:
            # A secret is short; the bound keeps a wrong path (a log file) harmless.
            content = file.read(64 * 1024).strip()
    except OSError as error:
        raise ConfigError(f"{file_setting.name}: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file_setting.name}: {path} is not UTF-8 text") from None
    if not content:
        raise ConfigError(f"{file_setting.name}: {path} is empty")
    return content
