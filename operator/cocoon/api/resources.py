"""The four kinds: names, scope, models and printer columns; the CRDs are built from this."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from cocoon import GROUP, VERSION
from cocoon.api.attestationpolicy import AttestationPolicySpec, AttestationPolicyStatus
from cocoon.api.attestednode import AttestedNodeSpec, AttestedNodeStatus
from cocoon.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from cocoon.api.paymentchannel import PaymentChannelSpec, PaymentChannelStatus

READY_STATUS = '.status.conditions[?(@.type=="Ready")].status'
READY_MESSAGE = '.status.conditions[?(@.type=="Ready")].message'


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[Column, ...]
    scale: bool = False
    categories: tuple[str, ...] = field(default=("cocoon",))

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"


def _ready(extra: tuple[Column, ...]) -> tuple[Column, ...]:
    return (
        Column("Ready", READY_STATUS, description="Ready condition"),
        *extra,
        Column("Age", ".metadata.creationTimestamp", type="date"),
        Column("Message", READY_MESSAGE, priority=1, description="Why it is (not) ready"),
    )


INFERENCE_POOL = Resource(
    kind="InferencePool",
    plural="inferencepools",
    short_names=("cip",),
    namespaced=True,
    spec=InferencePoolSpec,
    status=InferencePoolStatus,
    description="Triton replicas on attested confidential GPU nodes, reachable only through the "
    "metering sidecar. Not the Gateway API InferencePool: address it as inferencepools.cocoon.dev.",
    columns=_ready(
        (
            Column("Model", ".spec.model.name"),
            Column("Desired", ".spec.replicas", type="integer"),
            Column("Replicas", ".status.readyReplicas", type="integer", description="ready"),
            Column("URL", ".status.url"),
        )
    ),
    scale=True,
)

ATTESTED_NODE = Resource(
    kind="AttestedNode",
    plural="attestednodes",
    short_names=("an",),
    namespaced=False,
    spec=AttestedNodeSpec,
    status=AttestedNodeStatus,
    description="Attestation state of one Node (CPU TEE and GPUs), written only by the operator.",
    columns=_ready(
        (
            Column("TEE", ".spec.tee"),
            Column("Verdict", ".status.verdict"),
            Column("GPUs", ".spec.expectedGpus", type="integer"),
            Column("Expires", ".status.expiresAt", type="string"),
        )
    ),
)

PAYMENT_CHANNEL = Resource(
    kind="PaymentChannel",
    plural="paymentchannels",
    short_names=("pch",),
    namespaced=True,
    spec=PaymentChannelSpec,
    status=PaymentChannelStatus,
    description="A funded TON payment channel that pays a pool's provider for the units it serves.",
    columns=_ready(
        (
            Column("Pool", ".spec.poolName"),
            Column("State", ".status.state"),
            Column("Deposited", ".status.deposited"),
            Column("Claimed", ".status.claimed"),
            Column("Credit", ".status.creditLeft"),
        )
    ),
)

ATTESTATION_POLICY = Resource(
    kind="AttestationPolicy",
    plural="attestationpolicies",
    short_names=("ap",),
    namespaced=False,
    spec=AttestationPolicySpec,
    status=AttestationPolicyStatus,
    description="What the operator accepts as evidence: TEE types, reference values, TCB, roots.",
    columns=_ready(()),
)

RESOURCES: tuple[Resource, ...] = (
    ATTESTATION_POLICY,
    ATTESTED_NODE,
    INFERENCE_POOL,
    PAYMENT_CHANNEL,
)
