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
class NameRule:
    """What an object's name must be, because of the objects the operator names after it; the
    CRD checks it at admission (CEL on metadata.name), so a bad name is refused, not accepted
    and left half-built."""

    pattern: str
    max_length: int
    message: str

    def rule(self) -> dict[str, str]:
        return {
            "rule": f"self.metadata.name.matches('{self.pattern}') && "
            f"size(self.metadata.name) <= {self.max_length}",
            "message": self.message,
        }


# The pool's Service and Deployment take its name: a Service name is a DNS-1035 label.
POOL_NAME = NameRule(
    r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    63,
    "the name becomes the pool's Service name: a DNS-1035 label (lower-case letters, digits "
    "and '-', starting with a letter, ending with a letter or digit) of at most 63 characters",
)
# The channel's name is a label value on its credential Secret ({name}-credential).
CHANNEL_NAME = NameRule(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    63,
    "the name becomes a label value and the Secret <name>-credential: lower-case letters, "
    "digits and '-', starting and ending with a letter or digit, at most 63 characters",
)


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
    name_rule: NameRule | None = None

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
    name_rule=POOL_NAME,
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
            Column("Owed", ".status.owed", priority=1, description="Served and metered."),
            Column(
                "Promised",
                ".status.promised",
                priority=1,
                description="Covered by the latest signed promise.",
            ),
            Column("Claimed", ".status.claimed"),
            Column(
                "Fees",
                ".status.ledger.feesPaid",
                priority=1,
                description="Every fee charged on chain for this channel.",
            ),
            Column(
                "Refunded",
                ".status.ledger.refunded",
                priority=1,
                description="Returned to the payer.",
            ),
            Column("Credit", ".status.creditLeft"),
        )
    ),
    name_rule=CHANNEL_NAME,
)

ATTESTATION_POLICY = Resource(
    kind="AttestationPolicy",
    plural="attestationpolicies",
    short_names=("ap",),
    namespaced=False,
    spec=AttestationPolicySpec,
    status=AttestationPolicyStatus,
    description="What the operator accepts as evidence: TEE types, reference values, TCB, roots.",
    columns=_ready(
        (
            Column(
                "AnyMeasurement",
                '.status.conditions[?(@.type=="AnyMeasurementAccepted")].status',
                description="True while an allowed TEE or required GPU has no reference values",
            ),
        )
    ),
)

RESOURCES: tuple[Resource, ...] = (
    ATTESTATION_POLICY,
    ATTESTED_NODE,
    INFERENCE_POOL,
    PAYMENT_CHANNEL,
)
