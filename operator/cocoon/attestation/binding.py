"""What a node's evidence must carry to prove it answers our challenge with its workload key."""

from __future__ import annotations

from cocoon import keys

GPU_NONCE_BYTES = 32


def cpu_report_data(nonce: bytes, public_key: bytes) -> bytes:
    """The 64-byte REPORT_DATA of the CPU report: SHA-512(nonce || public key)."""
    return keys.report_data(nonce, public_key)


def gpu_nonce(nonce: bytes, public_key: bytes) -> bytes:
    """The 32-byte SPDM nonce for every GPU: the first half of the CPU report_data, so GPU
    evidence is bound to the same challenge and key."""
    return keys.report_data(nonce, public_key)[:GPU_NONCE_BYTES]
