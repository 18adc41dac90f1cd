"""The console's HTTP server: the static page, ``/api/config`` and one JSON endpoint per
read RPC (:mod:`query_server.console.api`). GET only; every other method is 405."""

from __future__ import annotations

import json
import logging
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import grpc

from query_server.console.api import ApiError, answer_body, parse_request, refusal
from query_server.console.query_client import QueryClient

_logger = logging.getLogger("query_server.console")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "events.js": "text/javascript; charset=utf-8",
    "widgets.js": "text/javascript; charset=utf-8",
}
# Everything the page loads comes from this server: no CDN, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ConsoleServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the query client and the page's settings."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], client: QueryClient, trace_url_template: str
    ) -> None:
        super().__init__(address, ConsoleHandler)
        self.client = client
        self.trace_url_template = trace_url_template

    def allowed_hosts(self) -> set[str]:
        """``Host`` headers this server answers: its loopback names with its port."""
        port = self.server_address[1]
        return {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}


class ConsoleHandler(BaseHTTPRequestHandler):
    server: ConsoleServer
    server_version = "chronos-console"
    sys_version = ""

    def do_GET(self) -> None:
        # A page on another site may resolve its own name to 127.0.0.1 (DNS rebinding)
        # and read what this server answers with its token; such a request carries that
        # other name in Host, so only this server's own names are answered.
        if self.headers.get("Host", "") not in self.server.allowed_hosts():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain", b"unknown host\n")
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/api/"):
            self._api(url.path.removeprefix("/api/"), url.query)
        else:
            self._static(url.path)

    def _method_not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"read-only: GET only\n")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _method_not_allowed

    def _api(self, method: str, query: str) -> None:
        if method == "config":
            body = json.dumps({"trace_url_template": self.server.trace_url_template}).encode()
            self._send(HTTPStatus.OK, "application/json", body)
            return
        try:
            parameters = urllib.parse.parse_qs(query, keep_blank_values=True)
            request = parse_request(method, parameters)
            body = answer_body(self.server.client.call(method, request))
        except ApiError as error:
            self._send(error.status, "application/json", error.body())
        except grpc.RpcError as error:
            refused = refusal(error)
            self._send(refused.status, "application/json", refused.body())
        except (OSError, ValueError) as error:
            # The token file: its path may be named, never its content.
            _logger.warning("console token unreadable: %s", error)
            refused = ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "CONSOLE_TOKEN_UNREADABLE",
                "the console cannot read its token file; see its log",
            )
            self._send(refused.status, "application/json", refused.body())
        except Exception:
            # A fault of the console itself: logged here, and the page told only that.
            _logger.exception("console request %s failed", method)
            refused = ApiError(
                HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL", "CONSOLE_FAULT", "console fault"
            )
            self._send(refused.status, "application/json", refused.body())
        else:
            self._send(HTTPStatus.OK, "application/json", body)

    def _static(self, path: str) -> None:
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        content_type = STATIC_TYPES.get(name)
        if content_type is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
            return
        body = resources.files("query_server.console").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, content_type, body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Query strings name accounts and principals: the access log keeps them at debug.
        _logger.debug("%s " + format, self.address_string(), *args)
