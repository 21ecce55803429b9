"""SEV-SNP VCEK supply from AMD's Key Distribution Service (or a mirror), cached.

An agent normally sends the VCEK from the report's certificate table (extended report); when it
cannot, the operator fetches the VCEK for the report's CHIP_ID and REPORTED_TCB from
`<kds>/vcek/v1/<product>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..` (KDS's API), caches it
in memory and on disk (a VCEK is valid for years), and verification then treats it like one the
agent sent: it must chain to AMD's ARK and match the report's chip and TCB. With a KDS URL the
operator also fetches the product's CRL (`<kds>/vcek/v1/<product>/crl`, revoking ASKs/ASVKs),
kept until its nextUpdate; appraisal uses it only if the ARK signed it, under the policy's
revocation stance.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import aiohttp
from cryptography import x509

from cocoon.attestation import snp
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.verdict import Rejected

log = logging.getLogger(__name__)
Fetch = Callable[[str], Awaitable[bytes | None]]
AMD_KDS_URL = "https://kdsintf.amd.com"
_SPL_PARAMS = (
    ("blSPL", "bootloader"),
    ("teeSPL", "tee"),
    ("snpSPL", "snp"),
    ("ucodeSPL", "microcode"),
)


def products(report: snp.SnpReport) -> tuple[str, ...]:
    """The product a report comes from: its CPUID fields (report v3+), else Milan then Genoa."""
    family, model = report.raw[0x188], report.raw[0x189]
    if report.version >= 3 and family == 0x1A:
        return ("Turin",)
    if report.version >= 3 and family == 0x19:
        return ("Milan",) if model < 0x10 else ("Genoa",)
    return ("Milan", "Genoa")


def vcek_path(report: snp.SnpReport, product: str) -> str:
    tcb = snp.Tcb.parse(report.reported_tcb, product).components()
    hwid = report.chip_id[:8] if product == "Turin" else report.chip_id
    query = "&".join(f"{param}={tcb[name]}" for param, name in _SPL_PARAMS)
    if product == "Turin":
        query += f"&fmcSPL={tcb.get('fmc', 0)}"
    return f"/vcek/v1/{product}/{hwid.hex()}?{query}"


async def http_get(url: str) -> bytes | None:
    """The body of a 200, None for a 404 (KDS's answer for an unknown chip or product)."""
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status == 404:
            return None
        response.raise_for_status()
        return await response.read()


class VcekSupplier:
    """VCEKs by product, CHIP_ID and TCB, in memory and optionally in `directory`."""

    def __init__(self, directory: Path | None = None, fetch: Fetch = http_get) -> None:
        self.directory = directory
        self.fetch = fetch
        self.entries: dict[str, bytes] = {}
        self.fetches = 0

    def _key(self, report: snp.SnpReport, product: str) -> str:
        digest = hashlib.sha256(report.chip_id + report.reported_tcb).hexdigest()[:32]
        return f"vcek-{product}-{digest}"

    def _load(self, key: str) -> bytes | None:
        if key not in self.entries and self.directory is not None:
            path = self.directory / f"{key}.der"
            if path.is_file():
                self.entries[key] = path.read_bytes()
        return self.entries.get(key)

    def _store(self, key: str, der: bytes) -> None:
        self.entries[key] = der
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".{key}.der.tmp"
            temporary.write_bytes(der)
            os.replace(temporary, self.directory / f"{key}.der")

    async def crl(
        self, product: str, kds_url: str, now: datetime
    ) -> x509.CertificateRevocationList | None:
        """The product's CRL from the cache while fresh, else from KDS; None if unavailable."""
        key = f"crl-{product}"
        cached = self._load(key)
        if cached is not None:
            crl = x509.load_der_x509_crl(cached)
            if crl.next_update_utc is None or now < crl.next_update_utc:
                return crl
        self.fetches += 1
        try:
            der = await self.fetch(f"{kds_url.rstrip('/')}/vcek/v1/{product}/crl")
            if der is None:
                return None
            crl = x509.load_der_x509_crl(der)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("fetching the %s CRL failed: %s", product, exc)
            return None
        self._store(key, der)
        return crl

    async def crls(
        self, raw_report: bytes, kds_url: str | None, now: datetime
    ) -> tuple[x509.CertificateRevocationList, ...]:
        if not kds_url:
            return ()
        try:
            report = snp.parse_report(raw_report)
        except Rejected:
            return ()
        found = [await self.crl(product, kds_url, now) for product in products(report)]
        return tuple(crl for crl in found if crl is not None)

    async def vcek(self, raw_report: bytes, kds_url: str | None) -> bytes | None:
        """The VCEK (DER) for this report from the cache or KDS; None if neither has it."""
        try:
            report = snp.parse_report(raw_report)
        except Rejected:
            return None  # appraisal reports the malformed report
        for product in products(report):
            key = self._key(report, product)
            cached = self._load(key)
            if cached is not None:
                return cached
            if not kds_url:
                continue
            self.fetches += 1
            try:
                der = await self.fetch(kds_url.rstrip("/") + vcek_path(report, product))
                if der is None:
                    continue
                if snp.product_of(load_certificates(der, "KDS answer")[0]) != product:
                    raise ValueError(f"KDS answered a non-{product} certificate")
            except (aiohttp.ClientError, TimeoutError, ValueError, Rejected) as exc:
                log.warning("fetching the %s VCEK failed: %s", product, exc)
                continue
            self._store(key, der)
            return der
        return None
