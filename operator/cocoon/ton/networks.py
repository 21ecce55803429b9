"""The provider's TON settings: where claims pay and which chains channels may live on.

Both are the provider's, set in the chart's values and handed to the operator as environment:
a tenant's PaymentChannel names a network from this catalog and never writes an endpoint, and
the payee is always the provider's payout address, so no tenant can route the provider's
earnings to itself or have its channel "funded" on a chain of its own.

`COCOON_NETWORKS` is JSON: `{"default": "<name>", "networks": [{"name", "kind", "url",
"configMapName", "apiKeySecretRef": {"name", "key"}}]}`; ConfigMaps and Secrets it names live
in the operator's namespace. `COCOON_CHAIN_URL` alone is shorthand for one network named
`default` at that URL (the local stack and the in-cluster emulator use it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field, ValidationError, model_validator
from pytoniq_core.boc.address import AddressError

from cocoon.api.common import ApiModel
from cocoon.api.inferencepool import DNS_LABEL
from cocoon.ton.tvm import Address, raw

DEFAULT_NAME = "default"


class NetworkKind(StrEnum):
    EMULATOR = "Emulator"
    TONCENTER = "Toncenter"
    LITESERVER = "Liteserver"


class SecretKeyRef(ApiModel):
    """A key inside a Secret in the operator's namespace."""

    name: str = Field(pattern=DNS_LABEL)
    key: str = Field(default="key", min_length=1)


class Network(ApiModel):
    """One chain the provider offers."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    kind: NetworkKind = NetworkKind.TONCENTER
    url: str = Field(default="", description="Emulator or toncenter v2 base URL.")
    config_map_name: str = Field(
        default="", description="ConfigMap holding global.config.json (Liteserver)."
    )
    api_key_secret_ref: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _endpoint(self) -> Network:
        if self.kind is NetworkKind.LITESERVER and not self.config_map_name:
            raise ValueError(f"network {self.name}: Liteserver needs configMapName")
        if self.kind is not NetworkKind.LITESERVER and not self.url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"network {self.name}: {self.kind.value} needs an http(s) url")
        return self


class Catalog(ApiModel):
    """The networks channels may use; `default` serves channels that name none."""

    default: str = ""
    networks: list[Network] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        names = [n.name for n in self.networks]
        if len(set(names)) != len(names):
            raise ValueError(f"network names repeat: {names}")
        if self.default and self.default not in names:
            raise ValueError(f"default network {self.default!r} is not one of {names}")
        return self

    def find(self, name: str) -> Network | None:
        wanted = name or self.default or (self.networks[0].name if self.networks else "")
        return next((n for n in self.networks if n.name == wanted), None)

    def names(self) -> list[str]:
        return [n.name for n in self.networks]

    @classmethod
    def single(cls, url: str) -> Catalog:
        return cls(default=DEFAULT_NAME, networks=[Network(name=DEFAULT_NAME, url=url)])


class ProviderConfigError(ValueError):
    """The provider's TON settings are unusable; the message names the value to fix."""


def catalog_from_env(env: Mapping[str, str]) -> Catalog:
    text, url = env.get("COCOON_NETWORKS", ""), env.get("COCOON_CHAIN_URL", "")
    if text:
        try:
            return Catalog.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise ProviderConfigError(
                f"COCOON_NETWORKS (the chart's `networks` values) is invalid: {exc}"
            ) from exc
    return Catalog.single(url) if url else Catalog()


def payout_from_env(env: Mapping[str, str]) -> str:
    """The provider's payout address in raw form, checksum checked; empty when unset."""
    text = env.get("COCOON_PAYOUT_ADDRESS", "").strip()
    if not text:
        return ""
    try:
        return raw(Address(text))
    except AddressError as exc:
        raise ProviderConfigError(
            f"COCOON_PAYOUT_ADDRESS (the chart's payout.address) {text!r} is not a valid TON "
            f"address ({exc}); give a raw (0:<64 hex>) or user-friendly address with a valid "
            "checksum"
        ) from exc
