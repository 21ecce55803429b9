"""The `Chain` for a provider network, and reading the payer key from a Secret.

Both take what they need from Kubernetes as plain strings (the controller fetches them), so the
choice of adapter and the key format stay testable without a cluster.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon.ton import keyfile
from cocoon.ton.chain import Chain, ChainError
from cocoon.ton.liteserver import LiteServerChain
from cocoon.ton.networks import Network, NetworkKind
from cocoon.ton.toncenter import ToncenterChain

GLOBAL_CONFIG_KEY = "global.config.json"


async def open_chain(
    network: Network,
    *,
    api_key: str | None = None,
    global_config: str | None = None,
) -> Chain:
    """An adapter for `network`; the caller closes it (it is an async context manager)."""
    if network.kind is NetworkKind.LITESERVER:
        if not global_config:
            raise ChainError(
                f"ConfigMap {network.config_map_name or '(unset)'} has no {GLOBAL_CONFIG_KEY}; "
                "put the TON global config there (it is never downloaded at run time)"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / GLOBAL_CONFIG_KEY
            path.write_text(global_config)
            return await LiteServerChain.connect(path)
    return ToncenterChain(network.url, api_key)


def payer_key(text: str) -> Ed25519PrivateKey:
    """A key Secret's value: `cocoon ton keygen --json-out` JSON or a bare base64 seed."""
    if text.lstrip().startswith("{"):
        try:
            seed = json.loads(text)["privateKey"]
        except (ValueError, KeyError, TypeError) as exc:
            raise keyfile.KeyFileError("expected a JSON object with privateKey") from exc
        return keyfile.from_seed_b64(str(seed))
    return keyfile.from_seed_b64(text)
