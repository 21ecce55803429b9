"""The caller's own policy file: an AttestationPolicy spec that the provider never writes.

The file is YAML or JSON, either the bare spec or a whole AttestationPolicy object. Where the
cluster resolves `configMapRef` entries (RIMs, CRLs, roots) from ConfigMaps, the client reads
`<directory of the policy file>/<configMap name>/<key>`: the layout a ConfigMap mounted as a
volume has, so the same references work on both sides.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec, ConfigMapKeyRef
from cocoon.attestation.policy import Policy, PolicyError


class PolicyFileError(ValueError):
    """The policy file is missing, unreadable, or not a valid AttestationPolicy spec."""


def read_spec(path: Path) -> AttestationPolicySpec:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"cannot read policy {path}: {exc}") from None
    if isinstance(document, dict) and "spec" in document:
        document = document["spec"]
    if not isinstance(document, dict):
        raise PolicyFileError(f"policy {path} must be a mapping (an AttestationPolicy spec)")
    try:
        return AttestationPolicySpec.model_validate(document)
    except ValidationError as exc:
        raise PolicyFileError(f"invalid policy {path}: {exc}") from None



class ConfigMapResolver:
    """Reads ConfigMap references as files under `base` (the models' name and key patterns
    allow no path separators, so a reference cannot leave it)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def __call__(self, ref: ConfigMapKeyRef) -> bytes:
        path = self.base / ref.name / ref.key
        try:
            return path.read_bytes()
        except OSError as exc:
            raise PolicyError(
                f"ConfigMap {ref.name}/{ref.key}: expected the file {path} ({exc.strerror})"
            ) from None


def load(path: Path) -> Policy:
    """The client's policy; every error names the file and what is wrong with it."""
    spec = read_spec(path)
    try:
        return Policy.from_spec(spec, ConfigMapResolver(path.parent))
    except PolicyError as exc:
        raise PolicyFileError(f"policy {path}: {exc}") from None
