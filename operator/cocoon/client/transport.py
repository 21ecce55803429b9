"""httpx transports that send only over attested, pinned connections and keep receipts.

    verifier = Verifier(policy.load(Path("policy.yaml")))
    client = httpx2.Client(transport=VerifiedTransport(verifier, store=ReceiptStore()))
    openai.OpenAI(base_url=..., http_client=client)

They are httpx's own transports with the connection pool's network backend replaced by the
verifying one (`cocoon.client.network`), so pooling, timeouts and error mapping stay httpx's.
Plain `http://` URLs are refused. Each response's receipt is checked against the receipt key
pinned for the connection that served it (`capture.ReceiptCapture`); a successful answer on a
metered route (`METERED`) without a receipt is refused once its body has been read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import httpcore2
import httpx2

from cocoon.client.capture import ReceiptCapture
from cocoon.client.errors import EvidenceUnavailable, PlaintextRefused
from cocoon.client.network import (
    AsyncVerifiedStream,
    AsyncVerifyingBackend,
    VerifiedStream,
    VerifyingBackend,
)
from cocoon.client.store import ReceiptStore
from cocoon.client.verify import PinnedEndpoint, Verifier
from cocoon.meter import receipts

EXTENSION = "cocoon.endpoint"  # response.extensions[EXTENSION]: the PinnedEndpoint that served it
DEFAULT_LIMITS = httpx2.Limits(max_connections=20)
# Successful answers on these paths are charged, so they must carry a receipt.
METERED = re.compile(
    r"^/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)$"
    r"|^/v1/(chat/completions|completions|embeddings|responses)$"
)
RECEIPT = "cocoon.receipt"  # response.extensions[RECEIPT]: the ReceiptCapture of the response


def _require_https(request: httpx2.Request) -> None:
    if request.url.scheme != "https":
        raise PlaintextRefused(
            "PlaintextRefused", f"{request.url.scheme}:// would send the request unencrypted "
            "through the provider's network: use https:// to the meter",
            endpoint=str(request.url.netloc.decode()))


def _pinned(response: httpx2.Response) -> PinnedEndpoint:
    stream = response.extensions.get("network_stream")
    pinned = stream.pinned if isinstance(stream, VerifiedStream | AsyncVerifiedStream) else None
    if pinned is None:  # cannot happen through these transports; never accept it silently
        raise EvidenceUnavailable("NotVerified", "the response came over an unverified "
                                  "connection")
    return pinned


def _capture(request: httpx2.Request, response: httpx2.Response, body: bytes,
             verifier: Verifier, store: ReceiptStore | None) -> ReceiptCapture:
    metered = response.is_success and METERED.match(request.url.path) is not None
    return ReceiptCapture(_pinned(response), body, response.headers.get(receipts.HEADER),
                          response.headers.get("content-type", ""), store=store,
                          required=metered, on_refusal=verifier.refused)


DRAIN_BYTES = 1 << 20


class _Tap:
    """Feeds the receipt capture, once to its end. A reader that stops early (the OpenAI SDK
    stops at `data: [DONE]`, and the receipt follows it) still gets the receipt checked: closing
    reads the rest of the stream, at most DRAIN_BYTES, and a metered answer without a receipt
    is refused there. A capture that already refused is not judged twice."""

    def __init__(self, capture: ReceiptCapture) -> None:
        self._capture = capture
        self.finished = False
        self.drained = 0

    def feed(self, chunk: bytes) -> None:
        try:
            self._capture.feed(chunk)
        except BaseException:
            self.finished = True
            raise

    def drain(self, chunk: bytes) -> bool:
        """Feed a chunk read on close; False once DRAIN_BYTES are read."""
        self.feed(chunk)
        self.drained += len(chunk)
        return self.drained <= DRAIN_BYTES

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._capture.finish()


class _ReceiptStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, capture: ReceiptCapture) -> None:
        self._inner = inner
        self._tap = _Tap(capture)
        self._chunks: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._chunks = iter(self._inner)
        for chunk in self._chunks:
            self._tap.feed(chunk)
            yield chunk
        self._tap.finish()

    def close(self) -> None:
        try:
            if self._chunks is not None and not self._tap.finished:
                for chunk in self._chunks:
                    if not self._tap.drain(chunk):
                        break
                self._tap.finish()
        finally:
            self._inner.close()


class _AsyncReceiptStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, capture: ReceiptCapture) -> None:
        self._inner = inner
        self._tap = _Tap(capture)
        self._chunks: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._chunks = self._inner.__aiter__()
        async for chunk in self._chunks:
            self._tap.feed(chunk)
            yield chunk
        self._tap.finish()

    async def aclose(self) -> None:
        try:
            if self._chunks is not None and not self._tap.finished:
                async for chunk in self._chunks:
                    if not self._tap.drain(chunk):
                        break
                self._tap.finish()
        finally:
            await self._inner.aclose()


class VerifiedTransport(httpx2.HTTPTransport):
    def __init__(self, verifier: Verifier, *, store: ReceiptStore | None = None,
                 limits: httpx2.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(verify=verifier.ssl_context, trust_env=False, limits=limits)
        self.verifier = verifier
        self.store = store
        self._pool = httpcore2.ConnectionPool(
            ssl_context=verifier.ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=True, http2=False,
            network_backend=VerifyingBackend(verifier))

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        _require_https(request)
        body = request.read()
        response = super().handle_request(request)
        try:
            capture = _capture(request, response, body, self.verifier, self.store)
        except BaseException:
            response.close()
            raise
        assert isinstance(response.stream, httpx2.SyncByteStream)
        return httpx2.Response(
            response.status_code, headers=response.headers,
            stream=_ReceiptStream(response.stream, capture),
            extensions={**response.extensions, EXTENSION: capture.pinned, RECEIPT: capture})


class AsyncVerifiedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, verifier: Verifier, *, store: ReceiptStore | None = None,
                 limits: httpx2.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(verify=verifier.ssl_context, trust_env=False, limits=limits)
        self.verifier = verifier
        self.store = store
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=verifier.ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=True, http2=False,
            network_backend=AsyncVerifyingBackend(verifier))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        _require_https(request)
        body = await request.aread()
        response = await super().handle_async_request(request)
        try:
            capture = _capture(request, response, body, self.verifier, self.store)
        except BaseException:
            await response.aclose()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code, headers=response.headers,
            stream=_AsyncReceiptStream(response.stream, capture),
            extensions={**response.extensions, EXTENSION: capture.pinned, RECEIPT: capture})
