"""AttestationPolicies as the evidence route and the passes use them: compiled once per change.

Reading and compiling the policy (its spec, the ConfigMaps with RIMs, CRLs and roots, their
certificates) for every submission cost one GET per node and most of a node's CPU at fleet
scale. Here the policy object comes from the replica's watch-fed view and the compiled Policy
is kept until the object's resourceVersion changes (seen within the watch's latency) or it is
one pass interval old (so a changed ConfigMap is read again within one pass): one policy read
per pass, whatever the fleet's size.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec, ConfigMapKeyRef
from cocoon.attestation.policy import Policy
from cocoon.controllers.cache import Store
from cocoon.kube import ATTESTATION_POLICIES, CONFIGMAPS, Kube

Obj = dict[str, Any]


async def load_policy(
    kube: Kube, name: str, namespace: str, obj: Obj | None = None
) -> tuple[Policy, str]:
    """The named AttestationPolicy (`obj`, else read), with the ConfigMaps it references, as
    the library's Policy, and `name@generation` for the verdict."""
    if obj is None:
        obj = await kube.get(ATTESTATION_POLICIES, name)
    spec = AttestationPolicySpec.model_validate(obj.get("spec") or {})
    refs: list[ConfigMapKeyRef] = [*spec.gpu.rims, *spec.crls]
    refs += [spec.tdx.collateral.bundle] if spec.tdx.collateral.bundle else []
    refs += [r.config_map_ref for r in spec.trusted_roots.extra_roots if r.config_map_ref]
    maps: dict[str, Obj] = {}
    for ref in refs:
        if ref.name not in maps:
            maps[ref.name] = await kube.get_or_none(CONFIGMAPS, ref.name, namespace) or {}

    def resolve(ref: ConfigMapKeyRef) -> bytes:
        cm = maps.get(ref.name) or {}
        if ref.key in (cm.get("data") or {}):
            return str(cm["data"][ref.key]).encode()
        return base64.b64decode(cm["binaryData"][ref.key])

    generation = obj["metadata"].get("generation", 0)
    return Policy.from_spec(spec, resolve), f"{name}@{generation}"


def version_of(obj: Obj | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def fresh(
    cached_version: str | None, loaded_at: float, viewed: str | None, now: float, max_age_s: float
) -> bool:
    """Whether a policy compiled from version `cached_version` at `loaded_at` may still be used:
    the view holds that same version (a policy missing from the view is always read), and its
    ConfigMaps were read less than `max_age_s` ago."""
    return viewed is not None and cached_version == viewed and 0 <= now - loaded_at < max_age_s


@dataclass
class _Compiled:
    version: str | None
    loaded_at: float
    policy: Policy
    label: str


@dataclass
class PolicyCache:
    """Compiled policies by name, over a store of AttestationPolicy objects (a watch-fed view)."""

    store: Store = field(default_factory=Store)
    max_age_s: float = 30.0
    _compiled: dict[str, _Compiled] = field(default_factory=dict)
    _specs: dict[str, tuple[str | None, AttestationPolicySpec | None]] = field(default_factory=dict)
    _loading: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def _usable(self, name: str) -> _Compiled | None:
        entry = self._compiled.get(name)
        viewed = version_of(self.store.get(name))
        if entry is not None and fresh(
            entry.version, entry.loaded_at, viewed, time.monotonic(), self.max_age_s
        ):
            return entry
        return None

    async def get(self, kube: Kube, name: str, namespace: str) -> tuple[Policy, str]:
        """The compiled policy and its `name@generation`; raises what `load_policy` raises."""
        entry = self._usable(name)
        if entry is None:
            async with self._loading[name]:  # one read for a burst of submissions
                entry = self._usable(name)
                if entry is None:
                    obj = self.store.get(name)
                    policy, label = await load_policy(kube, name, namespace, obj)
                    entry = _Compiled(version_of(obj), time.monotonic(), policy, label)
                    self._compiled[name] = entry
        return entry.policy, entry.label

    def spec(self, name: str) -> AttestationPolicySpec | None:
        """The viewed policy's spec, parsed once per version; None when missing or invalid."""
        obj = self.store.get(name)
        version = version_of(obj)
        cached = self._specs.get(name)
        if cached is not None and obj is not None and cached[0] == version:
            return cached[1]
        spec = None
        if obj is not None:
            try:
                spec = AttestationPolicySpec.model_validate(obj.get("spec") or {})
            except ValidationError:
                spec = None
            self._specs[name] = (version, spec)
        return spec
