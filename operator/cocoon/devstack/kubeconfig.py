"""Kubeconfig files for the local cluster's identities: the admin, ServiceAccount tokens and
certificate users (nodes), each written owner-only since it carries a credential."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def kubeconfig_dict(
    server: str, ca_pem: bytes, *, user: dict[str, str], namespace: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cocoon-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "cocoon-local",
                "context": {"cluster": "cocoon-local", "user": "user", "namespace": namespace},
            }
        ],
        "current-context": "cocoon-local",
    }


def certificate_user(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    return {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, *, user: dict[str, str], namespace: str = "default"
) -> Path:
    path.write_text(yaml.safe_dump(kubeconfig_dict(server, ca_pem, user=user, namespace=namespace)))
    path.chmod(0o600)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
