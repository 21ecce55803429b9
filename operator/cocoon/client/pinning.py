"""`cocoon client policy init`: a starting policy from what a verified endpoint measured.

The endpoint is first verified with a bootstrap policy (the roots the user chose, no reference
values), then every measured value is written as the only accepted one, for the user to check
against their own build before they rely on it.
"""

from __future__ import annotations

from pathlib import Path

from cocoon.api.attestationpolicy import AttestationPolicySpec, ExtraRoot
from cocoon.api.inferencepool import TeeType
from cocoon.attestation.chain import sha256_der
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.enums import RootPurpose
from cocoon.attestation.policy import version_tuple
from cocoon.client.verify import PinnedEndpoint


def extra_root(text: str) -> ExtraRoot:
    """`PURPOSE=FILE.pem` (e.g. AmdArk=ark.pem): a root the user passes explicitly, pinned by
    the SHA-256 of the certificate in that file."""
    purpose, sep, name = text.partition("=")
    if not sep:
        raise ValueError(f"--root {text!r}: expected PURPOSE=FILE.pem")
    try:
        kind = RootPurpose(purpose)
    except ValueError:
        raise ValueError(f"--root {text!r}: purpose must be one of "
                         f"{', '.join(p.value for p in RootPurpose)}") from None
    path = Path(name)
    certificates = load_certificates(path.read_bytes())
    if len(certificates) != 1:
        raise ValueError(f"--root {text!r}: {path} must hold exactly one certificate")
    pem = path.read_text()
    return ExtraRoot(name=path.stem[:63] or "root", purpose=kind,
                     sha256=sha256_der(certificates[0]), pem=pem)


def bootstrap(roots: list[ExtraRoot], *, allow_simulated: bool,
              vendor_roots: bool) -> AttestationPolicySpec:
    """Authenticity and key binding only: any measurement, any GPU count."""
    document: dict[str, object] = {
        "trustedRoots": {
            "extraRoots": [r.to_api() for r in roots], "allowSimulated": allow_simulated,
            **({} if vendor_roots else {"builtin": []}),
        },
        "gpu": {"required": False, "minCount": 0},
    }
    return AttestationPolicySpec.model_validate(document)


def pinned_spec(base: AttestationPolicySpec, pinned: PinnedEndpoint) -> AttestationPolicySpec:
    """`base` with every value the endpoint measured pinned as the only accepted one."""
    cpu = pinned.claims.get("cpu0", {})
    gpus = [c for name, c in sorted(pinned.claims.items()) if name.startswith("gpu")]
    document = base.to_api()
    if "measurement" in cpu:
        document["allowedTees"] = [TeeType.SEV_SNP.value]
        document["snp"] = {"measurements": [cpu["measurement"]],
                           "minReportedTcb": cpu.get("reportedTcb", {})}
    else:
        document["allowedTees"] = [TeeType.TDX.value]
        document["tdx"] = {key: [cpu[key]] for key in
                           ("mrTd", "rtmr0", "rtmr1", "rtmr2", "rtmr3") if key in cpu}
    gpu: dict[str, object] = {"required": bool(gpus), "minCount": len(gpus)}
    drivers = [str(g["driverVersion"]) for g in gpus if g.get("driverVersion")]
    vbioses = [str(g["vbiosVersion"]) for g in gpus if g.get("vbiosVersion")]
    if drivers:
        gpu["minDriverVersion"] = min(drivers, key=lambda v: version_tuple(v, 10))
    if vbioses:
        gpu["minVbiosVersion"] = min(vbioses, key=lambda v: version_tuple(v, 16))
    document["gpu"] = gpu
    return AttestationPolicySpec.model_validate(document)
