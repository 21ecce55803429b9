"""Receipts as responses arrive: checked against the pinned key of the connection that served
them, matched to this request and response, then stored.

Unary responses carry the receipt in the `Cocoon-Receipt` header: its signature, key and
request hash are checked before the caller sees the response, the body hash when the body has
been read. Streams (`text/event-stream`) end with an `event: cocoon.receipt` event whose
`responseSha256` covers every byte of the stream before that event. Hashes are over the bytes
on the wire (before any Content-Encoding is undone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cocoon.client.errors import ReceiptRefused
from cocoon.client.store import ReceiptStore
from cocoon.client.verify import PinnedEndpoint
from cocoon.meter import receipts
from cocoon.meter.receipts import SignedReceipt

MAX_EVENT_BYTES = 1 << 20


class ReceiptCapture:
    """Feed it the response bytes in order, then `finish()`; raises ReceiptRefused."""

    def __init__(self, pinned: PinnedEndpoint, request_body: bytes, header: str | None,
                 content_type: str, *, store: ReceiptStore | None = None, required: bool = False,
                 on_refusal: Callable[[str], None] = lambda _reason: None) -> None:
        self.pinned = pinned
        self.store = store
        self.required = required
        self._on_refusal = on_refusal
        self.receipt: SignedReceipt | None = None
        self._request_sha256 = receipts.digest(request_body)
        self._hash = hashlib.sha256()
        self._stream = content_type.split(";", maxsplit=1)[0].strip().lower() == "text/event-stream"
        self._pending = b""
        if header is not None:
            try:
                signed = receipts.decode_header(header)
            except receipts.ReceiptError as exc:
                raise self._refuse("MalformedReceipt", str(exc)) from None
            self.receipt = self._check(signed)

    def feed(self, chunk: bytes) -> None:
        if not self._stream:
            self._hash.update(chunk)
            return
        self._pending += chunk
        while True:
            cut = _event_end(self._pending)
            if cut is None:
                break
            event, self._pending = self._pending[:cut], self._pending[cut:]
            self._event(event)
        if len(self._pending) > MAX_EVENT_BYTES:
            self._hash.update(self._pending)
            self._pending = b""

    def finish(self) -> SignedReceipt | None:
        """The verified receipt (stored), or None when the response carried none."""
        if self._stream and self._pending:
            self._event(self._pending)
        if self.receipt is None:
            if self.required:
                raise self._refuse("NoReceipt", "the meter answered a metered call without a "
                                   "receipt: the charge cannot be checked")
            return None
        if self.receipt.receipt.response_sha256 != self._hash.hexdigest():
            raise self._refuse("ResponseNotReceipted", "the receipt's responseSha256 is not the "
                               "hash of the response received")
        if self.store is not None:
            self.store.add(self.receipt, self.pinned.receipt_public_key, self.pinned.origin)
        return self.receipt

    def _event(self, event: bytes) -> None:
        if self.receipt is not None:
            raise self._refuse("DataAfterReceipt", "the stream went on after its receipt")
        lines = event.replace(b"\r\n", b"\n").split(b"\n")
        if b"event: " + receipts.SSE_EVENT.encode() not in lines and (
                b"event:" + receipts.SSE_EVENT.encode() not in lines):
            self._hash.update(event)
            return
        data = b"\n".join(
            line.removeprefix(b"data:").removeprefix(b" ") for line in lines
            if line.startswith(b"data:"))
        try:
            signed = SignedReceipt.model_validate_json(data)
        except ValueError as exc:
            raise self._refuse("MalformedReceipt", str(exc)) from None
        self.receipt = self._check(signed)

    def _check(self, signed: SignedReceipt) -> SignedReceipt:
        try:
            receipts.verify(signed, self.pinned.receipt_public_key)
        except receipts.ReceiptError as exc:
            raise self._refuse("BadReceipt", str(exc)) from None
        if signed.receipt.request_sha256 != self._request_sha256:
            raise self._refuse("RequestNotReceipted", "the receipt's requestSha256 is not the "
                               "hash of the request sent")
        if int(signed.receipt.cost_nanoton) > int(signed.receipt.cumulative_nanoton):
            raise self._refuse("CumulativeBelowCost", "the receipt's cumulative total is below "
                               "its own cost")
        return signed

    def _refuse(self, reason: str, message: str) -> ReceiptRefused:
        self._on_refusal(reason)
        return ReceiptRefused(reason, message, endpoint=self.pinned.origin)


def _event_end(buffer: bytes) -> int | None:
    """The end (separator included) of the first complete SSE event, if any."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(ends) if ends else None
