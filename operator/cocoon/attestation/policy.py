"""The library's policy: plain frozen data derived from an AttestationPolicy spec.

`Policy.from_spec` resolves ConfigMap references through a callback (the controller reads the
API; tests pass a dict), checks extra roots against their pins, and builds the trust store, so
appraisal itself never does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from cocoon.api.attestationpolicy import AttestationPolicySpec, ConfigMapKeyRef, TdxCollateral
from cocoon.api.common import ConditionStatus
from cocoon.api.inferencepool import TeeType
from cocoon.attestation.chain import Anchor, sha256_der
from cocoon.attestation.collateral import Sources, parse_bundle
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.enums import Revocation, TdxTcbStatus
from cocoon.attestation.roots import TrustStore, is_simulated
from cocoon.attestation.verdict import Rejected, Tee

Resolver = Callable[[ConfigMapKeyRef], bytes]


class PolicyError(ValueError):
    """The spec cannot be turned into a policy (missing ConfigMap, root not matching its pin)."""


@dataclass(frozen=True)
class TdxReference:
    mr_td: frozenset[bytes]
    rtmrs: tuple[frozenset[bytes], frozenset[bytes], frozenset[bytes], frozenset[bytes]]
    mr_config_id: frozenset[bytes]
    accepted_statuses: frozenset[str]
    allowed_advisories: frozenset[str]
    collateral: Sources = dataclasses.field(default_factory=Sources)


@dataclass(frozen=True)
class SnpReference:
    measurements: frozenset[bytes]
    min_tcb: Mapping[str, int]
    allowed_vmpls: frozenset[int]
    allow_vlek: bool


@dataclass(frozen=True)
class GpuReference:
    required: bool
    min_count: int
    min_driver: tuple[int, ...] | None
    min_vbios: tuple[int, ...] | None
    rims: tuple[bytes, ...]
    require_rims: bool
    allowed_modes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    allowed_cpu: frozenset[Tee]
    allow_debug: bool
    tdx: TdxReference
    snp: SnpReference
    gpu: GpuReference
    revocation: Revocation
    crls: tuple[x509.CertificateRevocationList, ...]
    trust: TrustStore
    max_evidence_age: int
    verdict_lifetime: int

    @classmethod
    def default(cls) -> Policy:
        """Authenticity and binding to pinned vendor roots, debug rejected, no reference values."""
        return cls.from_spec(AttestationPolicySpec())

    @classmethod
    def from_spec(cls, spec: AttestationPolicySpec, resolve: Resolver | None = None) -> Policy:
        def fetch(ref: ConfigMapKeyRef) -> bytes:
            if resolve is None:
                raise PolicyError(f"ConfigMap {ref.name}/{ref.key} is referenced but no resolver")
            try:
                return resolve(ref)
            except (KeyError, OSError) as exc:
                raise PolicyError(f"cannot read ConfigMap {ref.name}/{ref.key}: {exc}") from None

        extra = []
        for root in spec.trusted_roots.extra_roots:
            data = root.pem.encode() if root.pem is not None else fetch(_ref(root.config_map_ref))
            try:
                cert = load_certificates(data, f"extra root {root.name}")[0]
            except Rejected as exc:
                raise PolicyError(exc.failure.message) from None
            if sha256_der(cert) != root.sha256.lower():
                raise PolicyError(
                    f"extra root {root.name} has SHA-256 {sha256_der(cert)}, not the pinned "
                    f"{root.sha256}"
                )
            if is_simulated(cert) and not spec.trusted_roots.allow_simulated:
                raise PolicyError(
                    f"extra root {root.name} is a simulated-TEE test root; set "
                    "trustedRoots.allowSimulated only on test clusters"
                )
            extra.append(Anchor(root.name, root.purpose, cert))
        builtin = spec.trusted_roots.builtin
        tdx, snp, gpu = spec.tdx, spec.snp, spec.gpu
        return cls(
            allowed_cpu=frozenset(
                Tee.TDX if t is TeeType.TDX else Tee.SNP for t in spec.allowed_tees
            ),
            allow_debug=spec.allow_debug,
            tdx=TdxReference(
                mr_td=_values(tdx.mr_td),
                rtmrs=(
                    _values(tdx.rtmr0),
                    _values(tdx.rtmr1),
                    _values(tdx.rtmr2),
                    _values(tdx.rtmr3),
                ),
                mr_config_id=_values(tdx.mr_config_id),
                accepted_statuses=frozenset(str(s) for s in tdx.accepted_tcb_statuses)
                - {str(TdxTcbStatus.REVOKED)},
                allowed_advisories=frozenset(tdx.allowed_advisory_ids),
                collateral=_collateral_sources(tdx.collateral, snp.kds_url, fetch),
            ),
            snp=SnpReference(
                measurements=_values(snp.measurements),
                min_tcb={
                    k: v for k, v in snp.min_reported_tcb.model_dump().items() if v is not None
                },
                allowed_vmpls=frozenset(snp.allowed_vmpls),
                allow_vlek=snp.allow_vlek,
            ),
            gpu=GpuReference(
                required=gpu.required,
                min_count=gpu.min_count,
                min_driver=version_tuple(gpu.min_driver_version, 10)
                if gpu.min_driver_version
                else None,
                min_vbios=version_tuple(gpu.min_vbios_version, 16)
                if gpu.min_vbios_version
                else None,
                rims=tuple(fetch(ref) for ref in gpu.rims),
                require_rims=gpu.require_rims,
                allowed_modes=frozenset(str(m) for m in gpu.allowed_modes),
            ),
            revocation=spec.revocation,
            crls=tuple(crl for ref in spec.crls for crl in _load_crls(fetch(ref), ref)),
            trust=TrustStore.build(builtin, extra, spec.trusted_roots.allow_simulated),
            max_evidence_age=spec.max_evidence_age_seconds,
            verdict_lifetime=spec.verdict_lifetime_seconds,
        )


def unpinned_measurements(spec: AttestationPolicySpec) -> list[str]:
    """What the policy lets through unmeasured: each allowed TEE without launch reference values,
    and required GPUs whose measurements no RIM is required to match. Empty: all pinned."""
    weak = []
    if TeeType.TDX in spec.allowed_tees and not spec.tdx.mr_td:
        weak.append("TDX: tdx.mrTd is empty, so any TD firmware and image is accepted")
    if TeeType.SEV_SNP in spec.allowed_tees and not spec.snp.measurements:
        weak.append(
            "SEV-SNP: snp.measurements is empty, so any guest launch measurement is accepted"
        )
    if spec.gpu.required and not spec.gpu.require_rims:
        weak.append("GPU: gpu.requireRims is false, so GPU firmware measurements are not compared")
    return weak


ANY_MEASUREMENT = "AnyMeasurementAccepted"


def measurement_condition(spec: AttestationPolicySpec) -> tuple[str, ConditionStatus, str, str]:
    """The policy's `AnyMeasurementAccepted` condition: True (abnormal) while something is let
    through unmeasured, so a weak policy is visible in `kubectl get ap` and an Event."""
    weak = unpinned_measurements(spec)
    if not weak:
        return (ANY_MEASUREMENT, ConditionStatus.FALSE, "MeasurementsPinned",
                "every allowed TEE and required GPU is held to reference measurements")  # fmt: skip
    return (
        ANY_MEASUREMENT,
        ConditionStatus.TRUE,
        "ReferenceValuesMissing",
        "; ".join(weak) + ". Pin the values of the images you approve (see docs/operations.md).",
    )


def _collateral_sources(
    spec: TdxCollateral, kds_url: str | None, fetch: Callable[[ConfigMapKeyRef], bytes]
) -> Sources:
    bundle = {}
    if spec.bundle is not None:
        try:
            bundle = parse_bundle(fetch(spec.bundle))
        except ValueError as exc:
            raise PolicyError(f"ConfigMap {spec.bundle.name}/{spec.bundle.key}: {exc}") from None
    return Sources(spec.pccs_url, bundle, spec.refresh_before_expiry_seconds, kds_url)


def _ref(ref: ConfigMapKeyRef | None) -> ConfigMapKeyRef:
    if ref is None:  # the model guarantees pem or configMapRef
        raise PolicyError("extra root without a source")
    return ref


def _values(hexes: list[str]) -> frozenset[bytes]:
    return frozenset(bytes.fromhex(h) for h in hexes)


def version_tuple(text: str, base: int) -> tuple[int, ...]:
    """'550.90.07' (base 10) or '96.00.9f.00.01' (base 16) as a comparable tuple."""
    try:
        return tuple(int(part, base) for part in text.strip().split("."))
    except ValueError:
        return ()


def _load_crls(data: bytes, ref: ConfigMapKeyRef) -> list[x509.CertificateRevocationList]:
    try:
        if b"-----BEGIN X509 CRL" in data:
            blocks = data.split(b"-----END X509 CRL-----")
            return [
                x509.load_pem_x509_crl(block + b"-----END X509 CRL-----")
                for block in blocks
                if b"-----BEGIN X509 CRL" in block
            ]
        return [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise PolicyError(f"ConfigMap {ref.name}/{ref.key} is not a CRL: {exc}") from None
