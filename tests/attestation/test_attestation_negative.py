"""Forged, truncated, mixed-up or garbage evidence: a precise rejection, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from attestation_vectors import DEFAULT, GPU_535_AT, GPU_550_AT, SNP_AT, TDX_AT, read
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoon.attestation import appraisal, encoding, roots
from cocoon.attestation.enums import BuiltinRoot

SNP_REPORT = encoding.decode_blob(read("snp/milan_report.hex"))
SNP_VCEK = read("snp/milan_vcek.der")
GPU_REPORT = encoding.decode_blob(read("nvgpu/h100_550_report.hex"))
GPU_CHAIN = read("nvgpu/h100_550_chain.pem")
TDX_QUOTE = read("tdx/tdx_quote.bin")
TDX_COLLATERAL = read("tdx/tdx_quote.collateral.json").decode()


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("offset", [0x50, 0x90, 0x1A0, 0x29F])
def test_snp_bit_flip_in_signed_region_is_bad_signature(offset: int) -> None:
    result = appraisal.appraise_snp(_flip(SNP_REPORT, offset * 8), SNP_VCEK, DEFAULT, now=SNP_AT)
    assert result.reason == "BadSignature"


@pytest.mark.parametrize("length", [0, 0x2A0, 0x49F])
def test_snp_truncated(length: int) -> None:
    result = appraisal.appraise_snp(SNP_REPORT[:length], SNP_VCEK, DEFAULT, now=SNP_AT)
    assert result.reason == "MalformedEvidence"


def test_snp_report_with_another_chips_vcek() -> None:
    other = read("snp/milan_debug_vcek.der")
    assert appraisal.appraise_snp(SNP_REPORT, other, DEFAULT, now=SNP_AT).reason == "BadSignature"


def test_snp_milan_vcek_with_genoa_chain() -> None:
    result = appraisal.appraise_snp(
        SNP_REPORT, SNP_VCEK, DEFAULT, now=SNP_AT, chain=read("roots/amd_ask_ark_genoa.pem")
    )
    assert result.reason == "IncompleteCertificateChain"


def test_snp_wrong_report_data() -> None:
    result = appraisal.appraise_snp(
        SNP_REPORT, SNP_VCEK, DEFAULT, now=SNP_AT, report_data=bytes(64)
    )
    assert result.reason == "ReportDataMismatch"


def test_snp_vcek_expired_later() -> None:
    late = int(datetime(2031, 1, 1, tzinfo=UTC).timestamp())
    assert appraisal.appraise_snp(SNP_REPORT, SNP_VCEK, DEFAULT, now=late).reason == (
        "CertificateExpired"
    )


def _look_alike(real: x509.Certificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime(2024, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=9000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def test_look_alike_nvidia_root_is_refused() -> None:
    """A forged chain under a self-signed root named exactly like NVIDIA's must not verify."""
    real = roots.builtin_anchor(BuiltinRoot.NVIDIA_DEVICE_IDENTITY_CA).cert
    fake_root, fake_key = _look_alike(real)
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=GH100 A01 GSP FMC LF"))
        .issuer_name(fake_root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(fake_root.not_valid_before_utc)
        .not_valid_after(fake_root.not_valid_after_utc)
        .sign(fake_key, hashes.SHA384())
    )
    result = appraisal.appraise_gpu(
        GPU_REPORT, encoding.pem([leaf, fake_root]), DEFAULT, now=GPU_550_AT
    )
    assert result.reason == "UntrustedRoot"
    assert "look-alike" in result.message


def test_real_chain_ending_in_look_alike_root_is_refused() -> None:
    chain = x509.load_pem_x509_certificates(GPU_CHAIN)
    fake_root, _ = _look_alike(chain[-1])
    result = appraisal.appraise_gpu(
        GPU_REPORT, encoding.pem([*chain[:-1], fake_root]), DEFAULT, now=GPU_550_AT
    )
    # the real intermediate still chains to the pinned root, never to the impostor
    assert result.reason is None
    assert result.claims["root"] == "NvidiaDeviceIdentityCa"
    alone = appraisal.appraise_gpu(
        GPU_REPORT, encoding.pem([chain[0], fake_root]), DEFAULT, now=GPU_550_AT
    )
    assert alone.reason in {"UntrustedRoot", "IncompleteCertificateChain"}


def test_gpu_swapped_chain() -> None:
    result = appraisal.appraise_gpu(
        GPU_REPORT, read("nvgpu/h100_535_chain.pem"), DEFAULT, now=GPU_550_AT
    )
    assert result.reason in {"BadSignature", "FwidMismatch"}


@pytest.mark.parametrize("cut", [10, 37, 500, len(GPU_REPORT) - 1])
def test_gpu_truncated(cut: int) -> None:
    result = appraisal.appraise_gpu(GPU_REPORT[:cut], GPU_CHAIN, DEFAULT, now=GPU_550_AT)
    assert result.reason == "MalformedEvidence"


def test_gpu_trailing_zero_padding_is_tolerated_but_junk_is_not() -> None:
    padded = appraisal.appraise_gpu(GPU_REPORT + bytes(64), GPU_CHAIN, DEFAULT, now=GPU_550_AT)
    assert padded.reason is None
    junk = appraisal.appraise_gpu(GPU_REPORT + b"\x01", GPU_CHAIN, DEFAULT, now=GPU_550_AT)
    assert junk.reason == "MalformedEvidence"


def test_gpu_bit_flip_in_measurements() -> None:
    result = appraisal.appraise_gpu(_flip(GPU_REPORT, 8 * 60), GPU_CHAIN, DEFAULT, now=GPU_550_AT)
    assert result.reason == "BadSignature"


def test_expired_rim_signer_at_a_late_time() -> None:
    rim_xml = read("nvgpu/h100_535_vbios_rim.swidtag")
    ok = appraisal.verify_rims([rim_xml], DEFAULT, GPU_535_AT)
    assert ok.verified and not ok.refused
    late = appraisal.verify_rims([rim_xml], DEFAULT, GPU_550_AT)
    assert [f.reason for _, f in late.refused] == ["CertificateExpired"]
    result = appraisal.appraise_gpu(
        encoding.decode_blob(read("nvgpu/h100_535_report.hex")),
        read("nvgpu/h100_535_chain.pem"),
        DEFAULT,
        now=GPU_550_AT,
        rims=late,
    )
    assert result.reason == "CertificateExpired"


def test_rim_edited_after_signing() -> None:
    edited = read("nvgpu/h100_535_vbios_rim.swidtag").replace(b'index="9"', b'index="10"', 1)
    refused = appraisal.verify_rims([edited], DEFAULT, GPU_535_AT).refused
    assert [f.reason for _, f in refused] == ["BadRimSignature"]


def test_tdx_bit_flip_and_truncation() -> None:
    flipped = appraisal.appraise_tdx(_flip(TDX_QUOTE, 8 * 200), TDX_COLLATERAL, DEFAULT, now=TDX_AT)
    assert flipped.reason is not None
    short = appraisal.appraise_tdx(TDX_QUOTE[:100], TDX_COLLATERAL, DEFAULT, now=TDX_AT)
    assert short.reason == "MalformedEvidence"
    missing = appraisal.appraise_tdx(TDX_QUOTE, None, DEFAULT, now=TDX_AT)
    assert missing.reason == "CollateralMissing"


def test_tdx_wrong_report_data() -> None:
    result = appraisal.appraise_tdx(
        TDX_QUOTE, TDX_COLLATERAL, DEFAULT, now=TDX_AT, report_data=bytes(64)
    )
    assert result.reason == "ReportDataMismatch"


def test_amd_serial_zero_still_only_warns() -> None:
    """cryptography 50 warns on AMD's serial-0 VCEKs; when it starts refusing, this fails."""
    with pytest.warns(CryptographyDeprecationWarning):
        x509.load_der_x509_certificate(SNP_VCEK)


# --- fuzzing: mutations never crash and never verify -------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, original: bytes, signed_end: int) -> bytes:
    data = bytearray(original)
    kind = draw(st.sampled_from(["flip", "truncate", "splice"]))
    if kind == "flip":
        for bit in draw(
            st.lists(st.integers(0, signed_end * 8 - 1), min_size=1, max_size=4, unique=True)
        ):
            data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        data = data[: draw(st.integers(0, signed_end))]  # past it, trailing unsigned data
    else:
        start = draw(st.integers(0, signed_end - 1))
        junk = draw(st.binary(min_size=1, max_size=64))
        if bytes(data[start : start + len(junk)]) == junk:
            junk = bytes(b ^ 0xFF for b in junk)
        data[start : start + len(junk)] = junk
    return bytes(data)


@FUZZ
@given(mutated(SNP_REPORT, 0x2A0))
def test_fuzz_snp(report: bytes) -> None:
    assert appraisal.appraise_snp(report, SNP_VCEK, DEFAULT, now=SNP_AT).reason is not None


@FUZZ
@given(mutated(GPU_REPORT, len(GPU_REPORT) - 96))
def test_fuzz_gpu(report: bytes) -> None:
    assert appraisal.appraise_gpu(report, GPU_CHAIN, DEFAULT, now=GPU_550_AT).reason is not None


@FUZZ
@given(mutated(TDX_QUOTE, 632))
def test_fuzz_tdx(quote: bytes) -> None:
    assert appraisal.appraise_tdx(quote, TDX_COLLATERAL, DEFAULT, now=TDX_AT).reason is not None


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_garbage_everywhere(blob: bytes) -> None:
    assert appraisal.appraise_snp(blob, blob, DEFAULT, now=SNP_AT).reason is not None
    assert appraisal.appraise_gpu(blob, blob, DEFAULT, now=GPU_550_AT).reason is not None
    assert appraisal.appraise_gpu(blob, GPU_CHAIN, DEFAULT, now=GPU_550_AT).reason is not None
    assert appraisal.appraise_tdx(blob, TDX_COLLATERAL, DEFAULT, now=TDX_AT).reason is not None
