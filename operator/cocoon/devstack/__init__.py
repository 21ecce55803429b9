"""The local stack: real processes (Triton, control plane, chain emulator) for dev and e2e."""
