"""Intel TDX quotes through dcap-qvl, offline: collateral passed in, the Intel root pinned.

dcap-qvl checks the PCK chain, QE report, collateral signatures and TCB level; it reports the
TCB status and advisories as claims and leaves every TD policy decision (debug, reference
values, report_data, acceptable status) to appraisal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import dcap_qvl

from cocoon.attestation import roots
from cocoon.attestation.encoding import MALFORMED
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
        "certificate chain",
        "BadCertificateChain",
        "the PCK or collateral chain does not verify to the pinned Intel SGX Root CA at this "
        "time: fetch fresh collateral or check the verification time",
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
            "root": str(BuiltinRoot.INTEL_SGX_ROOT_CA),
        }


def _rejection(exc: Exception) -> Rejected:
    text = str(exc)
    for needle, reason, advice in _DCAP_REASONS:
        if needle.lower() in text.lower():
            return Rejected(reason, f"{text}: {advice}")
    return Rejected("QuoteVerificationFailed", f"{text}: the quote or its collateral is invalid")


def verify(
    quote: bytes, collateral_json: str | None, now: int, trusted: bool = True
) -> AuthenticTdx:
    """Verify with dcap-qvl at `now`; `trusted` False means the policy removed the Intel root."""
    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError) as exc:
        raise Rejected(MALFORMED, f"not a DCAP quote: {exc}") from None
    if not parsed.is_tdx():
        raise Rejected(MALFORMED, "this is an SGX quote, not a TDX quote")
    if not trusted:
        raise Rejected("UntrustedRoot", "the policy does not trust the Intel SGX Root CA")
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
    verifier = dcap_qvl.QuoteVerifier(roots.intel_root_der())
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
    )
