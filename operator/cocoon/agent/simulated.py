"""A simulated TEE for local and e2e clusters: real-format evidence signed by a per-cluster root.

It emits SEV-SNP reports (0x4A0 bytes, VCEK ← ASK ← ARK with RSA-PSS like AMD's, CHIP_ID and
TCB extensions that match), Intel TDX v4 quotes with their collateral (`simulated_tdx`) and
NVIDIA SPDM GET_MEASUREMENTS evidence (P-384 chain with the FWID extension, opaque TLVs), so the
production verifier runs unchanged. Its roots carry the organization
`cocoon.attestation.roots.SIMULATED_ORGANIZATION`, and a policy trusts them only when it lists
them and sets allowSimulated. Keys are generated at run time and never committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cocoon.agent import simulated_gpu, simulated_pki, simulated_tdx
from cocoon.agent.simulated_pki import write_private
from cocoon.agent.simulated_tdx import SimulatedTdx
from cocoon.api.attestationpolicy import AttestationPolicySpec, ExtraRoot, TrustedRoots
from cocoon.attestation import binding, nvgpu, snp
from cocoon.attestation.chain import sha256_der
from cocoon.attestation.encoding import pem
from cocoon.attestation.enums import RootPurpose
from cocoon.attestation.evidence import CpuEvidence, GpuEvidence, NodeEvidence
from cocoon.attestation.verdict import Tee

DEFAULT_MEASUREMENT = simulated_tdx.DEFAULT_MEASUREMENT
DEFAULT_TCB = snp.Tcb(bootloader=3, tee=0, snp=8, microcode=115)
# File names inside a saved simulated TEE: flat, so the directory can become a Secret as is.
_CERTS = ("ark", "ask", "vcek", "gpu-root", "gpu-ica")
_KEYS = ("ark", "ask", "vcek", "gpu-ica")
_META = "simulated-tee.json"


@dataclass(frozen=True)
class SimulatedTee:
    """One cluster's simulated hardware: an AMD-like chain and an NVIDIA-like chain."""

    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    vcek: x509.Certificate
    gpu_root: x509.Certificate
    gpu_ica: x509.Certificate
    gpu_ica_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    fwid: bytes
    product: str = "Milan"
    tcb: snp.Tcb = field(default=DEFAULT_TCB)
    ask_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    tdx: SimulatedTdx | None = field(default=None, repr=False)
    _gpus: dict[int, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def generate(
        cls, *, now: datetime, product: str = "Milan", tcb: snp.Tcb = DEFAULT_TCB
    ) -> SimulatedTee:
        """New roots and keys; `now` sets the certificates' validity (10 years)."""
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = simulated_pki.certificate
        ark = cert(f"ARK-{product}", ark_key, None, ark_key, now, ca=True)
        ask = cert(f"SEV-{product}", ask_key, ark, ark_key, now, ca=True)
        chip_id = os.urandom(64)
        vcek_key, vcek = simulated_pki.vcek(
            ask, ask_key=ask_key, chip_id=chip_id, product=product, tcb=tcb, now=now
        )

        root_key, ica_key = simulated_pki.p384(), simulated_pki.p384()
        gpu_root = cert("Simulated Device Identity CA", root_key, None, root_key, now, ca=True)
        gpu_ica = cert("Simulated GH100 Identity", ica_key, gpu_root, root_key, now, ca=True)
        fwid = os.urandom(nvgpu.COMPONENT)
        return cls(
            ark_key, ark, ask, vcek_key, vcek, gpu_root, gpu_ica, ica_key, chip_id, fwid,
            product, tcb, ask_key, SimulatedTdx.generate(now=now),
        )  # fmt: skip

    def for_node(self, node: str, *, now: datetime | None = None) -> SimulatedTee:
        """The same cluster roots, with a CHIP_ID derived from the node name and a VCEK for it,
        so each simulated node looks like its own stable chip."""
        if self.ask_key is None:
            raise ValueError("this simulated TEE has no ASK private key: it cannot issue VCEKs")
        chip_id = hashlib.sha512(b"cocoon simulated chip\x00" + node.encode()).digest()
        vcek_key, vcek = simulated_pki.vcek(
            self.ask,
            ask_key=self.ask_key,
            chip_id=chip_id,
            product=self.product,
            tcb=self.tcb,
            now=now or datetime.now(UTC),
        )
        tdx = self.tdx.for_node(node) if self.tdx is not None else None
        return dataclasses.replace(self, vcek_key=vcek_key, vcek=vcek, chip_id=chip_id, tdx=tdx)

    # --- persistence ------------------------------------------------------------------------

    def save(self, directory: Path, *, overwrite: bool = False) -> None:
        """PEM certificates, PKCS#8 private keys (mode 0600) and a small JSON of the rest.

        The directory is the per-cluster simulated hardware: agents load it (e.g. from a
        Secret) and the policy pins its roots, so a fresh `generate` would break trust.
        """
        if self.ask_key is None:
            raise ValueError("this simulated TEE has no ASK private key to save")
        existing = [n for n in self._file_names() if (directory / n).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{directory} already holds a simulated TEE ({existing[0]})")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        certs = (self.ark, self.ask, self.vcek, self.gpu_root, self.gpu_ica)
        for name, cert in zip(_CERTS, certs, strict=True):
            (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        private: tuple[simulated_pki.Key, ...] = (
            self.ark_key, self.ask_key, self.vcek_key, self.gpu_ica_key,
        )  # fmt: skip
        for name, key in zip(_KEYS, private, strict=True):
            write_private(directory / f"{name}.key.pem", key)
        meta = {
            "product": self.product,
            "tcb": self.tcb.components(),
            "chipId": self.chip_id.hex(),
            "fwid": self.fwid.hex(),
        }
        (directory / _META).write_text(json.dumps(meta, indent=2) + "\n")
        if self.tdx is not None:
            self.tdx.save(directory)

    @classmethod
    def load(cls, directory: Path) -> SimulatedTee:
        """The inverse of `save`; a missing or foreign file is a ValueError naming it."""
        try:
            meta = json.loads((directory / _META).read_text())
            certs = {n: simulated_pki.read_cert(directory / f"{n}.pem") for n in _CERTS}
            private = {n: simulated_pki.read_key(directory / f"{n}.key.pem") for n in _KEYS}
            ark_key, ask_key = private["ark"], private["ask"]
            vcek_key, ica_key = private["vcek"], private["gpu-ica"]
            if not isinstance(ark_key, rsa.RSAPrivateKey) or not isinstance(
                ask_key, rsa.RSAPrivateKey
            ):
                raise ValueError("ark.key.pem and ask.key.pem must hold RSA keys")
            if not isinstance(vcek_key, ec.EllipticCurvePrivateKey) or not isinstance(
                ica_key, ec.EllipticCurvePrivateKey
            ):
                raise ValueError("vcek.key.pem and gpu-ica.key.pem must hold P-384 keys")
            return cls(
                ark_key, certs["ark"], certs["ask"], vcek_key, certs["vcek"], certs["gpu-root"],
                certs["gpu-ica"], ica_key, bytes.fromhex(meta["chipId"]),
                bytes.fromhex(meta["fwid"]), str(meta["product"]), snp.Tcb(**meta["tcb"]), ask_key,
                SimulatedTdx.load(directory),
            )  # fmt: skip
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{directory} is not a saved simulated TEE: {exc}") from exc

    @staticmethod
    def _file_names() -> list[str]:
        files = [f"{n}.pem" for n in _CERTS] + [f"{n}.key.pem" for n in _KEYS] + [_META]
        return files + SimulatedTdx.file_names()

    # --- trust ------------------------------------------------------------------------------

    def extra_roots(self) -> list[ExtraRoot]:
        """The policy entries that make a cluster trust this simulated hardware."""
        roots = [
            ("simulated-ark", RootPurpose.AMD_ARK, self.ark),
            ("simulated-gpu", RootPurpose.NVIDIA_DEVICE_IDENTITY, self.gpu_root),
        ]
        if self.tdx is not None:
            roots.append(("simulated-intel", RootPurpose.INTEL_SGX, self.tdx.root))
        return [
            ExtraRoot(
                name=name,
                purpose=purpose,
                sha256=sha256_der(cert),
                pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            )
            for name, purpose, cert in roots
        ]

    def policy_spec(self, **fields: object) -> AttestationPolicySpec:
        """A policy that trusts this simulated TEE (SNP, TDX + GPUs), with any other fields."""
        roots = TrustedRoots(extra_roots=self.extra_roots(), allow_simulated=True)
        tees = ["sev-snp"] + (["tdx"] if self.tdx is not None else [])
        return AttestationPolicySpec.model_validate(
            {"allowedTees": tees, "trustedRoots": roots.to_api(), **fields}
        )

    def policy_document(self, name: str, *, gpus: int, **fields: object) -> dict[str, object]:
        """An AttestationPolicy object that pins this TEE's measurement and TCB and requires
        `gpus` attested GPUs per node: what `cocoon agent simulated policy` prints."""
        spec = self.policy_spec(
            snp={
                "measurements": [DEFAULT_MEASUREMENT.hex()],
                "minReportedTcb": self.tcb.components(),
            },
            tdx={"mrTd": [DEFAULT_MEASUREMENT.hex()]},
            gpu={"required": gpus > 0, "minCount": gpus},
            **fields,
        )
        return {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "AttestationPolicy",
            "metadata": {"name": name},
            "spec": spec.to_api(),
        }

    # --- SNP ---------------------------------------------------------------------------------

    def snp_certificates(self) -> bytes:
        """VCEK, ASK, ARK as PEM, as an agent would submit them."""
        return pem([self.vcek, self.ask, self.ark])

    def snp_report(
        self,
        report_data: bytes,
        *,
        debug: bool = False,
        measurement: bytes = DEFAULT_MEASUREMENT,
        vmpl: int = 0,
        tamper: bool = False,
    ) -> bytes:
        """A signed ATTESTATION_REPORT; `tamper` flips a measurement bit after signing."""
        raw = bytearray(snp.REPORT_SIZE)
        policy = 0x30000 | (snp.POLICY_DEBUG_BIT if debug else 0)
        tcb = self.tcb.encode(self.product)
        struct.pack_into("<IIQ", raw, 0x00, 3, 0, policy)
        struct.pack_into("<II", raw, 0x30, vmpl, snp.SIG_ALGO_ECDSA_P384_SHA384)
        raw[0x38:0x40] = tcb
        raw[0x50:0x90] = report_data.ljust(64, b"\x00")[:64]
        raw[0x90:0xC0] = measurement
        raw[0x180:0x188] = tcb
        raw[0x1A0:0x1E0] = self.chip_id
        raw[0x1E0:0x1E8] = tcb
        raw[0x1F0:0x1F8] = tcb
        der_sig = self.vcek_key.sign(bytes(raw[: snp.SIGNED_END]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der_sig)
        raw[0x2A0:0x2E8] = r.to_bytes(72, "little")
        raw[0x2E8:0x330] = s.to_bytes(72, "little")
        if tamper:
            raw[0x90] ^= 0x01
        return bytes(raw)

    # --- NVIDIA GPU --------------------------------------------------------------------------

    def gpu_device(self, index: int = 0) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """GPU `index` of this node: its own attestation key (derived from the cluster's GPU CA
        key, the node's CHIP_ID and the index, so stable across restarts) and leaf certificate
        with the firmware's FWID. Distinct indexes are distinct devices."""
        if index not in self._gpus:
            self._gpus[index] = simulated_gpu.device(
                self.gpu_ica, self.gpu_ica_key, self.chip_id, self.fwid, index
            )
        return self._gpus[index]

    def gpu_certificates(self, index: int = 0) -> bytes:
        return pem([self.gpu_device(index)[1], self.gpu_ica, self.gpu_root])

    def gpu_report(
        self,
        nonce: bytes,
        *,
        index: int = 0,
        driver_version: str = "550.90.07",
        vbios_version: str = "96.00.9f.00.01",
        measurements: dict[int, bytes] | None = None,
        cc_mode: int | None = None,
        tamper: bool = False,
    ) -> bytes:
        """SPDM GET_MEASUREMENTS request + signed response; `cc_mode` adds the FEATURE_FLAG
        (absent, like Hopper firmware before it); `tamper` flips a measured bit."""
        return simulated_gpu.spdm_report(
            self.gpu_device(index)[0], self.fwid, nonce, driver_version=driver_version,
            vbios_version=vbios_version, measurements=measurements, cc_mode=cc_mode,
            tamper=tamper,
        )

    # --- a whole node ------------------------------------------------------------------------

    def node_evidence(
        self,
        nonce: bytes,
        public_key: bytes,
        *,
        gpus: int = 8,
        debug: bool = False,
        measurement: bytes = DEFAULT_MEASUREMENT,
        tamper: bool = False,
        tee: Tee = Tee.SNP,
    ) -> NodeEvidence:
        """What a simulated node's agent submits for a challenge: CPU + `gpus` distinct GPUs."""
        return self.bound_evidence(
            binding.cpu_report_data(nonce, public_key), gpus=gpus, debug=debug,
            measurement=measurement, tamper=tamper, tee=tee,
        )

    def bound_evidence(
        self,
        report_data: bytes,
        *,
        gpus: int = 8,
        debug: bool = False,
        measurement: bytes = DEFAULT_MEASUREMENT,
        tamper: bool = False,
        tee: Tee = Tee.SNP,
    ) -> NodeEvidence:
        """CPU + `gpus` GPUs for any 64-byte report_data; each GPU nonce is its first half.
        A TDX quote goes without collateral, as configfs-tsm gives it: the operator fetches it."""
        gpu_nonce = report_data[: binding.GPU_NONCE_BYTES]
        if tee is Tee.TDX:
            if self.tdx is None:
                raise ValueError("this simulated TEE was saved without a TDX chain: re-init it")
            quote = self.tdx.quote(report_data, mr_td=measurement, debug=debug, tamper=tamper)
            cpu = CpuEvidence(Tee.TDX, quote)
        else:
            report = self.snp_report(
                report_data, debug=debug, measurement=measurement, tamper=tamper
            )
            cpu = CpuEvidence(Tee.SNP, report, self.snp_certificates())
        return NodeEvidence(
            cpu,
            tuple(
                GpuEvidence(self.gpu_report(gpu_nonce, index=i), self.gpu_certificates(i))
                for i in range(gpus)
            ),
        )

