"""uvicorn as `sead serve` runs it: with bounds on slow and idle clients, a cap on connections, and
a drain period that ends. Imports uvicorn: load it only once the 'serve' extra is known present.

uvicorn times out only an idle keep-alive connection, and only after a first response: a client
that connects and sends nothing, or its headers a byte at a time, is held for ever. Here every
request's headers must arrive within header_timeout (from connecting, or from the last response)
and in at most max_header_bytes (h11 bounds this itself; httptools does not). Past
max_connections open, a new connection is answered 503 and closed at once: uvicorn's own
limit_concurrency answers only once a request has arrived, so idle connections are never capped.
A body's own deadline is the app's (body_timeout).

On SIGTERM the server stops accepting connections and gives requests in flight drain_seconds;
then Service.stop() cancels what is left in the runtime and answers its clients 503 (or a last
fatal record). uvicorn's own deadline, GRACE later, is a backstop that cancels tasks outright.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServeConfig

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn; h11 always comes with it
    HttpToolsProtocol = None

GRACE = 3.0  # seconds after the drain period for the 503s to go out


def _reply(status: str, code: str, message: str) -> bytes:
    """A whole HTTP response, for a connection that the app never sees."""
    body = json.dumps({"error": code, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\nretry-after: 1\r\n\r\n").encode() + body


class HttpConfig(uvicorn.Config):
    """uvicorn's Config, plus the bounds that the protocol below reads from it."""

    def __init__(self, app, *, header_timeout: float, max_connections: int, max_header_bytes: int, **kwargs):
        self.header_timeout, self.max_connections, self.max_header_bytes = header_timeout, max_connections, max_header_bytes
        super().__init__(app, h11_max_incomplete_event_size=max_header_bytes, **kwargs)


class _Guard:
    """Mixed in before uvicorn's protocol class: the header deadline and the connection cap."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = None
        self._waiting = None  # the request that was current when the header deadline was armed
        self._received = False  # any bytes since then
        self._in_headers, self._header_bytes = False, 0
        if len(self.connections) > self.config.max_connections:
            transport.write(_reply("503 Service Unavailable", "unavailable",
                                   f"the server has {self.config.max_connections} connections open, its limit"))
            transport.close()
            return
        self._await_headers()

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._waiting, self._received = self.cycle, False
        self._header_timer = self.loop.call_later(self.config.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting and not self.transport.is_closing():  # no request has begun since
            if self._received:  # a request was on its way; an idle connection is just closed
                self.transport.write(_reply("408 Request Timeout", "timeout", "the request's headers did not "
                                            f"arrive within {self.config.header_timeout:g} s (sead serve --header-timeout)"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._received = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:  # not with one pipelined
            self._await_headers()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)


class GuardedH11(_Guard, H11Protocol):
    """h11 bounds header bytes itself (h11_max_incomplete_event_size)."""


if HttpToolsProtocol is not None:
    class GuardedHttpTools(_Guard, HttpToolsProtocol):
        """httptools keeps every header it is sent: count the bytes of a request's head."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._header_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_headers and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > self.config.max_header_bytes:
                    self.transport.write(_reply("431 Request Header Fields Too Large", "too_large",
                                                f"the request's headers pass {self.config.max_header_bytes} bytes"))
                    self.transport.close()

    PROTOCOL = GuardedHttpTools
else:
    PROTOCOL = GuardedH11


class Server(uvicorn.Server):
    """uvicorn's Server, with the drain period's end (Service.stop) and an exit 0 after SIGTERM."""

    def __init__(self, config: HttpConfig, service, drain_seconds: float):
        super().__init__(config)
        self.service, self.drain_seconds = service, drain_seconds

    @contextlib.contextmanager
    def capture_signals(self):
        """uvicorn's, less the end: after a graceful shutdown it re-raises the signal, so the
        process would die by SIGTERM; a drained `sead serve` exits 0 instead."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets=None) -> None:
        stop = asyncio.get_running_loop().call_later(self.drain_seconds, self.service.stop)
        try:
            await super().shutdown(sockets)
        finally:
            stop.cancel()


def make_server(config: ServeConfig, app, log_level: str = "info") -> Server:
    """The uvicorn server for an app made by create_app(config)."""
    return Server(HttpConfig(
        app, host=config.host, port=config.port, http=PROTOCOL, access_log=False, log_level=log_level,
        timeout_keep_alive=config.keep_alive_timeout, timeout_graceful_shutdown=config.drain_seconds + GRACE,
        header_timeout=config.header_timeout, max_connections=config.max_connections,
        max_header_bytes=config.max_header_bytes), app.state.service, config.drain_seconds)
