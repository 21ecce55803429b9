"""The RA-TLS evidence extension: a standard CMW record (RFC 9999) that every X.509 parser reads,
and a strict reader that refuses malformed records instead of guessing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import cmw, endpoint
from cocoon.meter.identity import MeterIdentity

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GO_PARSER = Path(__file__).parent / "goparse" / "main.go"
OURS = endpoint.MEDIA_TYPE


def utf8(record: bytes) -> bytes:
    """A DER UTF8String, encoded here independently of the module under test."""
    n = len(record)
    if n < 0x80:
        return bytes([0x0C, n]) + record
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(body)]) + body + record


def json_record(*items: object) -> bytes:
    return utf8(json.dumps(list(items)).encode())


def test_round_trip_including_long_der_lengths() -> None:
    for size in (0, 100, 200, 70_000):
        value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert cmw.decode(cmw.encode(OURS, value), OURS) == value


def test_another_applications_record_is_not_ours() -> None:
    with pytest.raises(cmw.NotOurs):
        cmw.decode(cmw.encode("application/eat+jwt", b"{}"), OURS)


GOOD = base64.urlsafe_b64encode(b"{}").rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("der", "says"),
    [
        (b"\x04\x02{}", "JSON choice"),  # the CBOR choice (OCTET STRING)
        (b"\x0c", "JSON choice"),  # truncated
        (b"\x0c\x81\x05" + b"[1,2]", "not minimal"),  # long form for a short length
        (b"\x0c\x82\x00\x05" + b"[1,2]", "not minimal"),  # a leading zero byte
        (b"\x0c\x85" + b"\x00" * 5, "bad DER length"),  # absurd length-of-length
        (utf8(b"[]") + b"junk", "does not match"),  # trailing bytes after the string
        (b"\x0c\x05[]", "does not match"),  # declared longer than present
        (utf8(b"\xff\xfe"), "not JSON"),
        (utf8(b"{not json"), "not JSON"),
        (json_record(OURS), "JSON record is"),  # no value
        (json_record(OURS, GOOD, 4, "extra"), "JSON record is"),
        (json_record(OURS, 7), "JSON record is"),  # value not a string
        (json_record(OURS, GOOD, 8), "not marked as Evidence"),  # an attestation result
        (json_record(OURS, GOOD + "=="), "unpadded base64url"),
        (json_record(OURS, "e30+/"), "unpadded base64url"),  # standard, not URL alphabet
        (json_record(OURS, "e"), "not base64url"),  # impossible length
    ],
)
def test_malformed_records_are_refused_with_the_reason(der: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        cmw.decode(der, OURS)


def test_an_oversized_record_is_refused() -> None:
    record = json.dumps([OURS, "A" * (cmw.MAX_RECORD + 4)]).encode()
    with pytest.raises(ValueError, match="does not match"):
        cmw.decode(utf8(record), OURS)


def _meter_certificate() -> x509.Certificate:
    sim = SimulatedTee.generate(now=NOW - timedelta(days=1))
    ident = MeterIdentity.generate()
    return ident.issue_certificate(lambda data: sim.bound_evidence(data, gpus=1), now=NOW)


def _certificate_with(extension: x509.UnrecognizedExtension) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meter")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .add_extension(extension, critical=False)
        .sign(key, hashes.SHA256())
    )


def test_a_meter_certificate_carries_its_evidence_in_the_cmw_extension() -> None:
    cert = _meter_certificate()
    ext = cert.extensions.get_extension_for_oid(cmw.EXTENSION)
    assert not ext.critical
    document = endpoint.evidence_in_certificate(cert)
    assert document is not None and document.keys.tls_spki_sha256


def test_a_certificate_with_another_cmw_has_no_evidence_of_ours() -> None:
    cert = _certificate_with(
        x509.UnrecognizedExtension(cmw.EXTENSION, cmw.encode("application/eat+jwt", b"x")))
    assert endpoint.evidence_in_certificate(cert) is None


Parse = Callable[[x509.Certificate], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def go_parse(tmp_path_factory: pytest.TempPathFactory) -> Parse:
    """Go's crypto/x509 on a certificate, built once from `goparse/main.go` (stdlib only)."""
    tmp = tmp_path_factory.mktemp("goparse")
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    subprocess.run([go, "build", "-o", str(tmp / "goparse"), str(GO_PARSER)], env=env,
                   check=True, timeout=600)

    def parse(cert: x509.Certificate) -> subprocess.CompletedProcess[str]:
        der = tmp / "cert.der"
        der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        return subprocess.run([str(tmp / "goparse"), str(der)], capture_output=True, text=True,
                              timeout=60, check=False)

    return parse


def test_go_parses_a_meter_certificate(go_parse: Parse) -> None:
    """What the kubelet's prober and any Go client do first: parse the certificate. Go refuses
    an OID arc wider than 31 bits, which the `2.25.<UUID>` OID used before had (second half)."""
    parsed = go_parse(_meter_certificate())
    assert parsed.returncode == 0, parsed.stderr
    assert cmw.EXTENSION.dotted_string in parsed.stdout.split()
    uuid_oid = x509.ObjectIdentifier("2.25.238349829164911307468711640582436425001")
    refused = go_parse(_certificate_with(x509.UnrecognizedExtension(uuid_oid, b"\x0c\x00")))
    assert refused.returncode == 1 and "x509" in refused.stderr, refused
