"""Remote attestation: pure verification of TDX quotes, SEV-SNP reports and NVIDIA GPU evidence.

Nothing here touches the network, the clock or the file system beyond the package's own root
certificates: the caller passes the evidence, the collateral and `now`.
"""
