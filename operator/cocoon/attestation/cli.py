"""`cocoon attest verify tdx|snp|nvgpu`: verify saved evidence offline at an explicit time.

Without --policy the contract is authenticity (vendor chain, signature, Intel's TCB verdict for
TDX), binding (--report-data / --nonce when given) and debug off; VMPL, measurements and
versions are reported as claims, not judged. With --policy, the AttestationPolicy spec decides,
defaults included (e.g. `snp.allowedVmpls: [0]`).

Exit 0 verified, 1 rejected, 2 bad usage or unreadable input. `--json` prints one object
{"verified", "tee", "reason", "message", "claims", "devices"}; otherwise one line per device and
a verdict line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec, ConfigMapKeyRef
from cocoon.attestation import appraisal, encoding
from cocoon.attestation.policy import Policy, PolicyError
from cocoon.attestation.verdict import Failure, Rejected, Tee, Verdict, combine

EXIT_VERIFIED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Unreadable files, bad hex on the command line, an invalid policy: exit 2."""


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="attest_command", required=True, metavar="COMMAND")
    verify = sub.add_parser("verify", help="verify evidence offline at a given time")
    tees = verify.add_subparsers(dest="tee", required=True, metavar="TEE")

    tdx = tees.add_parser("tdx", help="an Intel TDX quote (dcap-qvl, collateral passed in)")
    tdx.add_argument("--quote", type=Path, required=True, help="the quote (binary or hex)")
    tdx.add_argument("--collateral", type=Path, help="collateral JSON as fetched from a PCCS")
    _common(tdx, report_data=True)
    tdx.set_defaults(handler=_handle(_verify_tdx))

    snp = tees.add_parser("snp", help="an AMD SEV-SNP attestation report")
    snp.add_argument("--report", type=Path, required=True, help="the report (binary or hex)")
    snp.add_argument(
        "--vcek", type=Path, required=True, help="VCEK/VLEK (DER or PEM, may hold the chain)"
    )
    snp.add_argument("--chain", type=Path, help="ASK/ASVK and ARK (PEM); default AMD's")
    _common(snp, report_data=True)
    snp.set_defaults(handler=_handle(_verify_snp))

    gpu = tees.add_parser("nvgpu", help="NVIDIA GPU SPDM evidence (hex, binary or NVIDIA JSON)")
    gpu.add_argument("--evidence", type=Path, required=True, help="report or JSON evidence list")
    gpu.add_argument("--chain", type=Path, help="device certificate chain (PEM, leaf first)")
    gpu.add_argument(
        "--rim", type=Path, action="append", default=[], help="a RIM to compare (repeatable)"
    )
    gpu.add_argument("--nonce", help="the expected 32-byte nonce in hex")
    _common(gpu, report_data=False)
    gpu.set_defaults(handler=_handle(_verify_gpu))


def _common(parser: argparse.ArgumentParser, *, report_data: bool) -> None:
    parser.add_argument("--at", type=int, required=True, help="verification time, Unix seconds")
    parser.add_argument("--policy", type=Path, help="AttestationPolicy spec, YAML or JSON")
    if report_data:
        parser.add_argument("--report-data", help="the expected 64-byte report_data in hex")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _hex(text: str | None, what: str, length: int) -> bytes | None:
    if text is None:
        return None
    try:
        return encoding.parse_hex(text, what, length)
    except Rejected as exc:
        raise UsageError(exc.failure.message) from None


def _no_config_maps(ref: ConfigMapKeyRef) -> bytes:
    raise KeyError(f"the CLI cannot read ConfigMap {ref.name}; inline PEMs or pass --rim files")


# The contract above, as an AttestationPolicy spec: any VMPL (the CLI reports it).
DEFAULT_SPEC: dict[str, object] = {"snp": {"allowedVmpls": [0, 1, 2, 3]}}


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy.from_spec(AttestationPolicySpec.model_validate(DEFAULT_SPEC))
    try:
        document = yaml.safe_load(_read(path))
        if isinstance(document, dict) and "spec" in document:
            document = document["spec"]
        spec = AttestationPolicySpec.model_validate(document or {})
        return Policy.from_spec(spec, _no_config_maps)
    except (yaml.YAMLError, ValidationError, PolicyError) as exc:
        raise UsageError(f"invalid policy {path}: {exc}") from None


def _verify_tdx(args: argparse.Namespace, policy: Policy) -> Verdict:
    collateral = _read(args.collateral).decode("utf-8", "replace") if args.collateral else None
    device = appraisal.appraise_tdx(
        encoding.decode_blob(_read(args.quote), "quote"),
        collateral,
        policy,
        now=args.at,
        report_data=_hex(args.report_data, "--report-data", 64),
    )
    return combine([device], now=args.at, lifetime=policy.verdict_lifetime)


def _verify_snp(args: argparse.Namespace, policy: Policy) -> Verdict:
    device = appraisal.appraise_snp(
        encoding.decode_blob(_read(args.report), "report"),
        _read(args.vcek),
        policy,
        now=args.at,
        chain=_read(args.chain) if args.chain else None,
        report_data=_hex(args.report_data, "--report-data", 64),
    )
    return combine([device], now=args.at, lifetime=policy.verdict_lifetime)


def _verify_gpu(args: argparse.Namespace, policy: Policy) -> Verdict:
    nonce = _hex(args.nonce, "--nonce", 32)
    raw = _read(args.evidence)
    chain = _read(args.chain) if args.chain else None
    extra = [_read(p) for p in args.rim]
    given = appraisal.verify_rims(extra, policy, args.at)
    configured = appraisal.verify_rims(policy.gpu.rims, policy, args.at)
    rims = appraisal.RimSet(
        configured.verified + given.verified, configured.refused + given.refused
    )
    if raw.lstrip()[:1] in (b"[", b"{"):
        entries = [(e.evidence, chain or e.certificates) for e in encoding.parse_nvidia_json(raw)]
    elif chain is None:
        raise UsageError("--chain is required unless --evidence is NVIDIA JSON")
    else:
        entries = [(encoding.decode_blob(raw, "GPU evidence"), chain)]
    devices = [
        appraisal.appraise_gpu(
            report, certs, policy, now=args.at, nonce=nonce, rims=rims, name=f"gpu{index}"
        )
        for index, (report, certs) in enumerate(entries)
    ]
    versions = {
        str(d.claims.get(key, "")).lower()
        for d in devices
        for key in ("driverVersion", "vbiosVersion")
    }
    # RIMs named on the command line must be used: one that fits no GPU is an error too.
    node_failures = [f for claimed, f in given.refused if claimed.lower() not in versions]
    node_failures += [
        Failure("RimNotApplicable", f"the {m.kind} RIM {m.version} matches no GPU's firmware")
        for m in given.verified
        if m.version.lower() not in versions
    ]
    return combine(
        devices, now=args.at, lifetime=policy.verdict_lifetime, node_failures=node_failures
    )


def _claims(verdict: Verdict) -> dict[str, object]:
    if len(verdict.devices) == 1:
        return dict(verdict.devices[0].claims)
    return {"deviceCount": len(verdict.devices)}


def _print(verdict: Verdict, tee: str, as_json: bool) -> None:
    if as_json:
        document = {
            "verified": verdict.verified,
            "tee": tee,
            "reason": verdict.reason,
            "message": verdict.message,
            "claims": _claims(verdict),
            "devices": [d.to_dict() for d in verdict.devices],
        }
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    for device in verdict.devices:
        detail = device.reason or "verified"
        facts = _summary(device.claims)
        print(f"{device.name} {device.tee}: {device.status} ({detail}) {facts} - {device.message}")
    if verdict.verified:
        print("verdict: VERIFIED")
    else:
        print(f"verdict: REJECTED ({verdict.reason}): {verdict.message}")


def _summary(claims: object) -> str:
    keys = ("product", "tcbStatus", "vmpl", "driverVersion", "vbiosVersion", "debug", "simulated")
    if not isinstance(claims, dict):
        return ""
    return " ".join(f"{k}={claims[k]}" for k in keys if k in claims)


def _handle(
    verify: Callable[[argparse.Namespace, Policy], Verdict],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            policy = load_policy(args.policy)
            verdict = verify(args, policy)
        except UsageError as exc:
            print(f"cocoon attest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Rejected as exc:
            verdict = combine([], now=args.at, lifetime=0, node_failures=[exc.failure])
        _print(verdict, str(Tee(args.tee)), args.json)
        return EXIT_VERIFIED if verdict.verified else EXIT_REJECTED

    return handler
