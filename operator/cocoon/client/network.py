"""httpcore network backends whose TLS handshake ends only on a verified, pinned key.

`start_tls` completes the handshake with `client_context()`, then looks the peer's key up among
the pins. An unpinned key is attested on that same connection, before httpcore writes any of the
caller's request: from the RA-TLS certificate if its evidence is fresh, else by fetching
evidence for a fresh nonce. Any refusal closes the connection and raises, so no request byte
ever leaves on an unverified connection.
"""

# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore's network-stream interface

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2

from cocoon.client.errors import EvidenceUnavailable, Refused
from cocoon.client.verify import EvidenceExchange, PinnedEndpoint, Verifier

_READ = 64 << 10
# what connecting and attesting raise when the endpoint cannot be reached or speaks no TLS 1.3
UNREACHABLE = (httpcore2.NetworkError, httpcore2.TimeoutException, httpcore2.ProtocolError,
               OSError)


def _peer_certificate(stream: httpcore2.NetworkStream | httpcore2.AsyncNetworkStream,
                      origin: str) -> bytes:
    der = None
    for info in ("socket", "ssl_object"):  # the sync backend's SSLSocket, anyio's SSLObject
        tls = stream.get_extra_info(info)
        if isinstance(tls, ssl.SSLSocket | ssl.SSLObject):
            der = tls.getpeercert(binary_form=True)
            break
    if not der:
        raise EvidenceUnavailable("NoCertificate", "the server presented no certificate",
                                  endpoint=origin)
    return bytes(der)


def _reused_or_refused(exchange: EvidenceExchange, origin: str) -> None:
    if not exchange.reusable:
        raise EvidenceUnavailable(
            "ConnectionNotReusable",
            "the endpoint closed the connection after serving evidence; a Cocoon meter keeps "
            "it open so the verified connection carries the request", endpoint=origin)


def _check_pin(pinned: PinnedEndpoint | None, verifier: Verifier, origin: str) -> None:
    """Nothing is written on an unverified connection, nor on one whose verdict has lapsed:
    the pool then takes a new connection (ConnectionNotAvailable), which attests again."""
    if pinned is None:
        raise EvidenceUnavailable("NotVerified", "refusing to send on an unverified connection",
                                  endpoint=origin)
    if pinned.expires_at <= verifier.now():
        raise httpcore2.ConnectionNotAvailable(f"{origin}: the endpoint's verdict lapsed")


class VerifiedStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream, verifier: Verifier, origin: str,
                 pinned: PinnedEndpoint | None = None) -> None:
        self._inner = inner
        self._verifier = verifier
        self.origin = origin
        self.pinned = pinned

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _check_pin(self.pinned, self._verifier, self.origin)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> VerifiedStream:
        tls = self._inner.start_tls(self._verifier.ssl_context, server_hostname, timeout)
        try:
            der = _peer_certificate(tls, self.origin)
            pinned = (self._verifier.pinned(self.origin, der)
                      or self._verifier.from_certificate(self.origin, der))
            if pinned is None:
                exchange = EvidenceExchange(self.origin)
                tls.write(exchange.request(), timeout)
                while not exchange.feed(tls.read(_READ, timeout)):
                    pass
                _reused_or_refused(exchange, self.origin)
                pinned = self._verifier.from_document(
                    self.origin, der, exchange.document(), exchange.nonce)
        except BaseException as exc:
            if isinstance(exc, Refused):
                self._verifier.refused(exc.reason)
            tls.close()
            raise
        return VerifiedStream(tls, self._verifier, self.origin, pinned)


class VerifyingBackend(httpcore2.NetworkBackend):
    def __init__(self, verifier: Verifier, inner: httpcore2.NetworkBackend | None = None) -> None:
        self.verifier = verifier
        self._inner = inner or httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> VerifiedStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return VerifiedStream(stream, self.verifier, f"{host}:{port}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> VerifiedStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return VerifiedStream(stream, self.verifier, f"unix:{path}")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncVerifiedStream(httpcore2.AsyncNetworkStream):
    def __init__(self, inner: httpcore2.AsyncNetworkStream, verifier: Verifier, origin: str,
                 pinned: PinnedEndpoint | None = None) -> None:
        self._inner = inner
        self._verifier = verifier
        self.origin = origin
        self.pinned = pinned

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _check_pin(self.pinned, self._verifier, self.origin)
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncVerifiedStream:
        tls = await self._inner.start_tls(self._verifier.ssl_context, server_hostname, timeout)
        try:
            der = _peer_certificate(tls, self.origin)
            pinned = (self._verifier.pinned(self.origin, der)
                      or self._verifier.from_certificate(self.origin, der))
            if pinned is None:
                exchange = EvidenceExchange(self.origin)
                await tls.write(exchange.request(), timeout)
                while not exchange.feed(await tls.read(_READ, timeout)):
                    pass
                _reused_or_refused(exchange, self.origin)
                pinned = self._verifier.from_document(
                    self.origin, der, exchange.document(), exchange.nonce)
        except BaseException as exc:
            if isinstance(exc, Refused):
                self._verifier.refused(exc.reason)
            await tls.aclose()
            raise
        return AsyncVerifiedStream(tls, self._verifier, self.origin, pinned)


class AsyncVerifyingBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, verifier: Verifier,
                 inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        self.verifier = verifier
        self._inner = inner or httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncVerifiedStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address,
                                               socket_options)
        return AsyncVerifiedStream(stream, self.verifier, f"{host}:{port}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> AsyncVerifiedStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return AsyncVerifiedStream(stream, self.verifier, f"unix:{path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def attest(verifier: Verifier, host: str, port: int, *,
           timeout: float | None = 30.0) -> PinnedEndpoint:
    """Connect, verify and pin the endpoint, and hang up: no request is sent."""
    stream = VerifyingBackend(verifier).connect_tcp(host, port, timeout)
    tls = stream.start_tls(verifier.ssl_context, host, timeout)
    tls.close()
    if tls.pinned is None:  # start_tls returns only verified streams
        raise EvidenceUnavailable("NotVerified", "no pin after the handshake",
                                  endpoint=f"{host}:{port}")
    return tls.pinned
