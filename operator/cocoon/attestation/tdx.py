"""Intel TDX quotes through dcap-qvl, offline: collateral passed in, the root from the policy.

The root is the policy's Intel SGX anchor whose name issued the quote's PCK chain: the pinned
Intel SGX Root CA, or a simulated test root a policy lists with allowSimulated; dcap-qvl then
verifies everything against that one root, so a simulated quote takes the production path.
dcap-qvl checks the PCK chain, QE report, collateral signatures and TCB level; it reports the
TCB status and advisories as claims and leaves every TD policy decision (debug, reference
values, report_data, acceptable status) to appraisal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import dcap_qvl
from cryptography import x509

from cocoon.attestation import roots
from cocoon.attestation.chain import Anchor
from cocoon.attestation.encoding import MALFORMED, der
from cocoon.attestation.enums import BuiltinRoot
from cocoon.attestation.verdict import Rejected

TD_ATTRIBUTES_DEBUG = 0x01

_DCAP_REASONS = (
    (
        "No matching TCB level found",
        "NoMatchingTcbLevel",
        "the platform's TCB is below every level Intel lists: update the firmware/microcode",
    ),
    (
        "expired",
        "CollateralExpired",
        "the collateral is not valid at this time: fetch fresh collateral from the PCCS",
    ),
    (
        "in the future",
        "CollateralNotYetValid",
        "the collateral is not valid yet at this time: check the verification time",
    ),
    (
        "Debug mode",
        "DebugEnabled",
        "the TD has the DEBUG attribute set, so the host can read its memory: launch it "
        "without debug",
    ),
    (
        "certificate chain",
        "BadCertificateChain",
        "the PCK or collateral chain does not verify to the trusted root at this time: fetch "
        "fresh collateral or check the verification time",
    ),
    (
        "CRL",
        "BadCertificateChain",
        "the collateral's CRLs are not signed by the trusted root's CAs: collateral from "
        "another PCCS or platform",
    ),
    ("signature", "BadSignature", "a quote or collateral signature does not verify"),
)


@dataclass(frozen=True)
class AuthenticTdx:
    """A quote dcap-qvl accepted, with the TD report fields policy needs."""

    version: int
    tcb_status: str
    advisory_ids: tuple[str, ...]
    fmspc: str
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    mr_config_id: bytes
    mr_owner: bytes
    mr_seam: bytes
    td_attributes: bytes
    report_data: bytes
    collateral_expires: int
    root: str = str(BuiltinRoot.INTEL_SGX_ROOT_CA)
    simulated: bool = False

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    def claims(self) -> dict[str, object]:
        return {
            "version": self.version,
            "tcbStatus": self.tcb_status,
            "advisoryIds": list(self.advisory_ids),
            "fmspc": self.fmspc,
            "mrTd": self.mr_td.hex(),
            "rtmr0": self.rtmrs[0].hex(),
            "rtmr1": self.rtmrs[1].hex(),
            "rtmr2": self.rtmrs[2].hex(),
            "rtmr3": self.rtmrs[3].hex(),
            "mrConfigId": self.mr_config_id.hex(),
            "mrSeam": self.mr_seam.hex(),
            "tdAttributes": self.td_attributes.hex(),
            "debug": self.debug,
            "reportData": self.report_data.hex(),
            "collateralExpires": self.collateral_expires,
            "root": self.root,
            "simulated": self.simulated,
        }


def _rejection(exc: Exception) -> Rejected:
    text = str(exc)
    for needle, reason, advice in _DCAP_REASONS:
        if needle.lower() in text.lower():
            return Rejected(reason, f"{text}: {advice}")
    return Rejected("QuoteVerificationFailed", f"{text}: the quote or its collateral is invalid")


def _anchor(parsed_chain: bytes, anchors: Sequence[Anchor]) -> Anchor:
    """The trusted root that issued a certificate of the quote's PCK chain."""
    if not anchors:
        raise Rejected(
            "UntrustedRoot", "the policy trusts no Intel SGX root (trustedRoots.builtin)"
        )
    try:
        chain = x509.load_pem_x509_certificates(parsed_chain)
    except ValueError:
        return anchors[0]  # no readable embedded chain: dcap-qvl decides against the first
    issuers = {cert.issuer for cert in chain}
    for anchor in anchors:
        if anchor.cert.subject in issuers:
            return anchor
    raise Rejected(
        "UntrustedRoot",
        f"the quote's PCK chain ends at {chain[-1].issuer.rfc4514_string()}, which the policy "
        "does not trust: a simulated TEE's root needs trustedRoots.extraRoots and allowSimulated",
    )


def verify(
    quote: bytes,
    collateral_json: str | None,
    now: int,
    anchors: Sequence[Anchor] | None = None,
) -> AuthenticTdx:
    """Verify with dcap-qvl at `now` against the policy's Intel SGX `anchors` (default: the
    pinned Intel root)."""
    if anchors is None:
        anchors = [roots.builtin_anchor(BuiltinRoot.INTEL_SGX_ROOT_CA)]
    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError) as exc:
        raise Rejected(MALFORMED, f"not a DCAP quote: {exc}") from None
    if not parsed.is_tdx():
        raise Rejected(MALFORMED, "this is an SGX quote, not a TDX quote")
    try:
        embedded = bytes(dcap_qvl.Quote.parse(quote).cert_chain_pem_bytes())
    except (ValueError, TypeError, RuntimeError):
        embedded = b""
    anchor = _anchor(embedded, anchors)
    if collateral_json is None:
        raise Rejected(
            "CollateralMissing",
            "TDX verification needs the quote's collateral (TCB info, QE identity, CRLs): "
            "fetch it from a PCCS and pass it in",
        )
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except (ValueError, TypeError) as exc:
        raise Rejected(MALFORMED, f"the TDX collateral is not valid collateral: {exc}") from None
    verifier = dcap_qvl.QuoteVerifier(der(anchor.cert))
    try:
        result = verifier.verify_with_policy(
            quote, collateral, now, dcap_qvl.QuotePolicy.claims_only(now)
        )
        claims = json.loads(result.to_json())
    except (ValueError, RuntimeError) as exc:
        raise _rejection(exc) from None
    report = parsed.report
    tcb = claims.get("tcb", {})
    return AuthenticTdx(
        version=parsed.header.version,
        tcb_status=str(tcb.get("status", "")),
        advisory_ids=tuple(str(a) for a in tcb.get("advisory_ids", [])),
        fmspc=bytes(claims.get("platform", {}).get("pck", {}).get("fmspc", [])).hex(),
        mr_td=bytes(report.mr_td),
        rtmrs=(
            bytes(report.rt_mr0),
            bytes(report.rt_mr1),
            bytes(report.rt_mr2),
            bytes(report.rt_mr3),
        ),
        mr_config_id=bytes(report.mr_config_id),
        mr_owner=bytes(report.mr_owner),
        mr_seam=bytes(report.mr_seam),
        td_attributes=bytes(report.td_attributes),
        report_data=bytes(report.report_data),
        collateral_expires=min(
            int(claims.get("earliest_expiration_date", now)),
            int(claims.get("qe_iden_earliest_expiration_date", now)),
        ),
        root=anchor.name,
        simulated=anchor.simulated,
    )
