"""Evidence supply: TDX collateral (ConfigMap bundle, PCCS or Intel PCS, cache) and SNP VCEKs.

The one attestation module that does I/O; appraisal stays pure and receives the collateral in the
evidence. Collateral is per platform type (FMSPC and PCK CA), signed by Intel and checked by
dcap-qvl, so a cached or fetched copy needs no more trust than the agent's. We still prefer our
own sources over the agent's: an agent could send older collateral that is still valid but
predates a TCB recovery. Cached entries live in memory and, when a directory is configured, on
disk (one JSON file per platform type, written atomically), so a restart does not refetch; an
entry is refetched once it is within `refresh_before` seconds of its nextUpdate, both when a quote
needs it and by `refresh_due`, which the operator runs in the background so that a node's
attestation never waits on the PCCS for a routine renewal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.x509.oid import NameOID

from cocoon.attestation.encoding import MALFORMED
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.kds import VcekSupplier
from cocoon.attestation.verdict import Rejected, Tee

log = logging.getLogger(__name__)
Fetch = Callable[[str, bytes], Awaitable[str]]
DEFAULT_REFRESH_BEFORE = 86400


def key_of_quote(quote: bytes) -> str:
    """`tdx-<FMSPC>-<ca>`: which collateral a quote needs, read from its embedded PCK chain."""
    try:
        parsed = dcap_qvl.Quote.parse(quote)
        return f"tdx-{parsed.fmspc().upper()}-{parsed.ca().lower()}"
    except (ValueError, TypeError, RuntimeError) as exc:
        raise Rejected(MALFORMED, f"cannot read the quote's FMSPC / PCK CA: {exc}") from None


def key_of_collateral(collateral: str) -> str:
    """The same key, read from the collateral: the TCB info's FMSPC and the PCK CRL's issuer."""
    document = json.loads(collateral)
    fmspc = str(json.loads(document["tcb_info"])["fmspc"]).upper()
    issuer = x509.load_pem_x509_certificates(document["pck_crl_issuer_chain"].encode())[0]
    common_name = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    ca = "processor" if "Processor" in str(common_name) else "platform"
    return f"tdx-{fmspc}-{ca}"


def expires_at(collateral: str) -> int:
    """The earliest nextUpdate of the TCB info and the QE identity (Unix seconds)."""
    document = json.loads(collateral)
    return min(
        int(datetime.fromisoformat(json.loads(document[part])["nextUpdate"]).timestamp())
        for part in ("tcb_info", "qe_identity")
    )


def parse_bundle(data: bytes) -> dict[str, str]:
    """An air-gapped bundle: one collateral JSON object, or a list of them (ConfigMap key)."""
    try:
        document = json.loads(data)
        items = document if isinstance(document, list) else [document]
        entries = [json.dumps(item) for item in items]
        return {key_of_collateral(entry): entry for entry in entries}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(
            f"the TDX collateral bundle is not a collateral JSON object or list of them: {exc!r}"
        ) from None


async def pccs_fetch(url: str, quote: bytes) -> str:
    """Collateral for this quote from a PCCS or Intel PCS at `url` (PCS v4 API)."""
    collateral = await dcap_qvl.get_collateral(url, quote)
    return str(collateral.to_json())


class CollateralCache:
    """Collateral by platform type, in memory and optionally in `directory`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.entries: dict[str, str] = {}
        if directory is not None and directory.is_dir():
            for path in sorted(directory.glob("tdx-*.json")):
                try:
                    text = path.read_text()
                    expires_at(text)
                    self.entries[path.stem] = text
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("ignoring unreadable cached collateral %s: %s", path.name, exc)

    def get(self, key: str, now: int, margin: int = 0) -> str | None:
        """The entry if it is still valid `margin` seconds from now."""
        entry = self.entries.get(key)
        return entry if entry is not None and now + margin < expires_at(entry) else None

    def put(self, key: str, collateral: str) -> None:
        self.entries[key] = collateral
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{key}.json.tmp"
        temporary.write_text(collateral)
        os.replace(temporary, self.directory / f"{key}.json")


@dataclass(frozen=True)
class Sources:
    """Where a policy (or the chart's default) says collateral comes from."""

    pccs_url: str | None = None
    bundle: Mapping[str, str] = dataclasses.field(default_factory=dict)
    refresh_before: int = DEFAULT_REFRESH_BEFORE
    kds_url: str | None = None


class CollateralSupplier:
    """TDX: bundle, then fresh cache, then PCCS, then a stale but unexpired cached copy.
    SNP: the agent's VCEK, else one from KDS (`kds`)."""

    def __init__(
        self, cache: CollateralCache, fetch: Fetch = pccs_fetch, kds: VcekSupplier | None = None
    ) -> None:
        self.cache = cache
        self.fetch = fetch
        self.fetches = 0
        self.kds = kds or VcekSupplier(cache.directory)
        self.renewable: dict[str, tuple[bytes, Sources]] = {}
        """Per platform type: the last quote that needed it and where it was fetched from."""

    async def collateral(self, quote: bytes, sources: Sources, now: int) -> tuple[str, str] | None:
        """(collateral JSON, where it came from), or None when no source has a valid copy."""
        key = key_of_quote(quote)
        if sources.pccs_url:
            self.renewable[key] = (quote, sources)
        bundled = sources.bundle.get(key)
        if bundled is not None and now < expires_at(bundled):
            return bundled, "bundle"
        fresh = self.cache.get(key, now, sources.refresh_before)
        if fresh is not None:
            return fresh, "cache"
        fetched = await self._fetch(key, quote, sources)
        if fetched is not None:
            return fetched, "pccs"
        stale = self.cache.get(key, now)
        return (stale, "cache") if stale is not None else None

    async def _fetch(self, key: str, quote: bytes, sources: Sources) -> str | None:
        if not sources.pccs_url:
            return None
        self.fetches += 1
        try:
            fetched = await self.fetch(sources.pccs_url, quote)
            if key_of_collateral(fetched) != key:
                raise ValueError("the PCCS answered with collateral for another platform")
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            log.warning("fetching TDX collateral for %s failed: %s", key, exc)
            return None
        self.cache.put(key, fetched)
        return fetched

    async def refresh_due(self, now: int) -> list[str]:
        """Refetch every platform type fetched before whose cached copy is missing or within
        its `refresh_before` of nextUpdate; the keys renewed. A failure keeps the old copy and
        is retried on the next call."""
        renewed = []
        for key, (quote, sources) in list(self.renewable.items()):
            if self.cache.get(key, now, sources.refresh_before) is not None:
                continue
            if await self._fetch(key, quote, sources) is not None:
                renewed.append(key)
        return renewed

    async def crls(
        self, evidence: NodeEvidence, sources: Sources, now: int
    ) -> tuple[x509.CertificateRevocationList, ...]:
        """Revocation data to add to the policy's: AMD's CRL for an SNP node's product."""
        if evidence.cpu.tee is not Tee.SNP:
            return ()
        return await self.kds.crls(
            evidence.cpu.report, sources.kds_url, datetime.fromtimestamp(now, UTC)
        )

    async def supply(self, evidence: NodeEvidence, sources: Sources, now: int) -> NodeEvidence:
        """The evidence with our collateral for a TDX quote (the agent's only as a last resort),
        or with a VCEK for an SNP report that came without one."""
        cpu = evidence.cpu
        if cpu.tee is Tee.SNP and not cpu.certificates.strip():
            vcek = await self.kds.vcek(cpu.report, sources.kds_url)
            if vcek is None:
                return evidence
            return dataclasses.replace(evidence, cpu=dataclasses.replace(cpu, certificates=vcek))
        if cpu.tee is not Tee.TDX:
            return evidence
        found = await self.collateral(cpu.report, sources, now)
        if found is None:
            return evidence
        return dataclasses.replace(evidence, cpu=dataclasses.replace(cpu, collateral=found[0]))
