"""The Elasticsearch clients of every process, built in one place.

JSON goes through orjson instead of the standard library's ``json``: profiles of the
projector under load showed ``json.loads`` of bulk answers and ``json.dumps`` of bulk
bodies as a large share of its CPU, and with orjson its CPU per bulk fell markedly (the
query server's small ``mget`` answers gain less: the HTTP client is most of their
cost). orjson is a compiled, widely used implementation with the same output for the
types the read model sends (str, int, bool, None, lists and dicts; timestamps are
formatted by ``chronos.read_model.documents`` before they get here).

Security (``CHRONOS_ES_*``: a CA file, and a user with a password or an API key) is
applied here too, so every client of every process authenticates the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from elastic_transport import TlsError
from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    AuthenticationException,
    AuthorizationException,
    Elasticsearch,
    TransportError,
)
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

from chronos.backend_access import BackendRefused, read_secret
from chronos.config import (
    ES_API_KEY,
    ES_API_KEY_FILE,
    ES_CA_FILE,
    ES_PASSWORD,
    ES_PASSWORD_FILE,
    ES_USERNAME,
    ConfigError,
)

_logger = logging.getLogger(__name__)

LOGIN_CHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ElasticsearchSecurity:
    """How a client authenticates to Elasticsearch and verifies it (``CHRONOS_ES_*``)."""

    ca_file: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ElasticsearchSecurity:
        """Reads the ``CHRONOS_ES_*`` security settings (default: the process's).

        Raises:
            ConfigError: a file is unreadable, a user has no password, or both a user
                and an API key are set.
        """
        environ = os.environ if environ is None else environ
        username = ES_USERNAME.read(environ)
        password = read_secret(ES_PASSWORD_FILE, ES_PASSWORD, environ)
        api_key = read_secret(ES_API_KEY_FILE, ES_API_KEY, environ)
        if username and api_key:
            raise ConfigError(f"set {ES_USERNAME.name} or {ES_API_KEY_FILE.name}, not both")
        if username and not password:
            raise ConfigError(
                f"{ES_USERNAME.name} is set without a password: set {ES_PASSWORD_FILE.name}"
            )
        return cls(
            ca_file=ES_CA_FILE.read(environ),
            username=username,
            password=password,
            api_key=api_key,
        )

    def client_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments of the Elasticsearch clients of ``url`` for this security.

        Raises:
            ConfigError: a CA file is set for a URL that is not https (TLS would be off).
        """
        if self.ca_file and not url.lower().startswith("https://"):
            raise ConfigError(
                f"{ES_CA_FILE.name} is set but the Elasticsearch URL {url} is not https://: "
                f"use https, or unset {ES_CA_FILE.name}"
            )
        options: dict[str, Any] = {}
        if self.ca_file:
            options["ca_certs"] = self.ca_file
        if self.username:
            options["basic_auth"] = (self.username, self.password)
        elif self.api_key:
            options["api_key"] = self.api_key
        return options

    @property
    def credentials_settings(self) -> str:
        """The settings to check when Elasticsearch refuses these credentials."""
        if self.api_key:
            return f"{ES_API_KEY_FILE.name} (or {ES_API_KEY.name})"
        return f"{ES_USERNAME.name} and {ES_PASSWORD_FILE.name} (or {ES_PASSWORD.name})"


class _Orjson:
    """orjson in place of the standard library's json; first among the bases, so that
    these two methods win over the client's serializers' own."""

    # The client's fallback for what orjson cannot encode (from the serializer bases).
    default: Callable[[Any], Any]

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class _OrjsonJson(_Orjson, JsonSerializer):
    """Request and answer bodies."""


class _OrjsonNdjson(_Orjson, NdjsonSerializer):
    """Bulk bodies: one orjson-encoded line per operation."""


def _serializers() -> dict[str, Any]:
    # The client maps its compatibility media types (application/vnd.elasticsearch+json,
    # what 8.x servers answer with) to these two as well.
    return {
        JsonSerializer.mimetype: _OrjsonJson(),
        NdjsonSerializer.mimetype: _OrjsonNdjson(),
    }


def elasticsearch_client(
    url: str, security: ElasticsearchSecurity | None = None, **options: Any
) -> Elasticsearch:
    """A blocking client for ``url`` with ``security`` (default: read from the
    environment); ``options`` go to ``Elasticsearch``."""
    if security is None:
        security = ElasticsearchSecurity.from_env()
    return Elasticsearch(url, serializers=_serializers(), **security.client_options(url), **options)


def async_elasticsearch_client(
    url: str, security: ElasticsearchSecurity | None = None, **options: Any
) -> AsyncElasticsearch:
    """An asyncio client for ``url`` with ``security`` (default: read from the
    environment); ``options`` go to ``AsyncElasticsearch``."""
    if security is None:
        security = ElasticsearchSecurity.from_env()
    return AsyncElasticsearch(
        url, serializers=_serializers(), **security.client_options(url), **options
    )


def check_elasticsearch_login(url: str, security: ElasticsearchSecurity) -> None:
    """Checks at start that Elasticsearch accepts the credentials and the TLS settings.

    An unreachable Elasticsearch is not an error here (the services report it per call
    or wait for it, as before); only an answer that retrying cannot change is.

    Raises:
        BackendRefused: Elasticsearch refused the credentials (401), the user lacks the
            right to read the cluster's health (403), or TLS failed (certificate).
    """
    client = elasticsearch_client(url, security, request_timeout=LOGIN_CHECK_SECONDS, max_retries=0)
    who = f"user {security.username!r}" if security.username else "the API key"
    try:
        client.cluster.health()
    except AuthenticationException:
        raise BackendRefused(
            f"Elasticsearch refused the credentials of {who} at {url}: check "
            f"{security.credentials_settings}"
        ) from None
    except AuthorizationException:
        raise BackendRefused(
            f"Elasticsearch at {url} accepted {who} but refused it the cluster's health: "
            "give it the rights the read model needs"
        ) from None
    except TlsError as error:
        raise BackendRefused(
            f"TLS with Elasticsearch at {url} failed ({error.message}): check "
            f"{ES_CA_FILE.name} and the URL's host name"
        ) from None
    except (TransportError, ApiError) as error:
        _logger.warning("Elasticsearch at %s did not answer at start (%s); carrying on", url, error)
    finally:
        client.close()
