"""Which credentials are valid and how much each payment channel may spend.

The meter never reads Secrets: it learns only SHA-256 hashes of caller credentials and each
channel's credit limit from a `CreditSource`. The file-backed source reads a JSON document that
the operator writes (a ConfigMap mounted into the pod) and reloads it when it changes:

    {"channels": [{"channel": "ns/name", "credentialSha256": "<64 hex>",
                   "creditLimitNanoton": "1000000000"}]}

An entry with a non-empty `refusal` names a channel this meter must not serve (its price is
above the channel's maxPrice): callers get 409 with that text instead of being charged.

`creditLimitNanoton` is the cumulative amount this meter may charge the channel over its
journal's lifetime; the operator raises it as the channel is funded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cocoon.api.common import NANOTON_PATTERN

log = logging.getLogger(__name__)


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChannelCredit:
    channel: str
    limit_nanoton: int
    refusal: str = ""  # non-empty: the channel may not be served here, and why


class CreditSource(Protocol):
    """Where credentials and credit limits come from (a file now, a Kubernetes watch later)."""

    def lookup(self, credential_sha256: str) -> ChannelCredit | None:
        """The channel a credential hash belongs to, or None when unknown."""
        ...

    async def run(self) -> None:
        """Keep the view current until cancelled."""
        ...


class _Entry(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    channel: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    credential_sha256: str = Field(alias="credentialSha256", pattern=r"^[0-9a-f]{64}$")
    credit_limit_nanoton: str = Field(alias="creditLimitNanoton", pattern=NANOTON_PATTERN)
    refusal: str = Field(default="", max_length=400)


class CreditFile(BaseModel):
    """The JSON document the file-backed source reads."""

    model_config = ConfigDict(extra="ignore")
    channels: list[_Entry] = Field(default_factory=list)


def parse_credit_file(text: str) -> dict[str, ChannelCredit]:
    document = CreditFile.model_validate_json(text)
    return {
        e.credential_sha256: ChannelCredit(e.channel, int(e.credit_limit_nanoton), e.refusal)
        for e in document.channels
    }


class StaticCreditSource:
    """A fixed table: for tests and for a meter run by hand."""

    def __init__(self, table: dict[str, ChannelCredit]) -> None:
        self.table = table

    def lookup(self, credential_sha256: str) -> ChannelCredit | None:
        return self.table.get(credential_sha256)

    async def run(self) -> None:
        await asyncio.Event().wait()


class FileCreditSource:
    """Reads the credit file, then polls its identity (works across ConfigMap symlink swaps).

    A file that fails to parse is logged and ignored: the last good table stays in force, so a
    bad write by the operator never locks every caller out.
    """

    def __init__(self, path: Path, poll_seconds: float = 1.0) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._table: dict[str, ChannelCredit] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.reload()

    def lookup(self, credential_sha256: str) -> ChannelCredit | None:
        return self._table.get(credential_sha256)

    def reload(self) -> bool:
        """Re-read the file if it changed; True when a new table was loaded."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning("credit file disappeared; keeping the last table", extra={
                    "path": str(self.path)})
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._table = parse_credit_file(self.path.read_text())
        except (OSError, ValidationError, ValueError) as exc:
            log.error(
                "credit file unreadable; keeping the last table",
                extra={"path": str(self.path), "error": type(exc).__name__},
            )
            return False
        log.info("credit file loaded", extra={"path": str(self.path), "channels": len(
            {c.channel for c in self._table.values()})})
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.reload()
