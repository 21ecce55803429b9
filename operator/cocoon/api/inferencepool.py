"""InferencePool: Triton replicas on attested GPU nodes that callers reach only via the meter."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from cocoon.api.common import ApiModel, ConditionList
from cocoon.meter.limits import Limits
from cocoon.meter.pricing import Price

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
TON_ADDRESS = r"^([0-9A-Za-z_-]{48}|-?[0-9]+:[0-9a-fA-F]{64})$"


class TeeType(StrEnum):
    """CPU TEE technologies, named as in the node label cocoon.dev/tee."""

    TDX = "tdx"
    SEV_SNP = "sev-snp"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class Image(ApiModel):
    """The same image shape as the NVIDIA operators: repository, tag, pull policy."""

    repository: str = Field(description="Image repository, without the tag.", min_length=1)
    tag: str = Field(description="Image tag or digest (sha256:...).", min_length=1)
    pull_policy: PullPolicy = Field(
        default=PullPolicy.IF_NOT_PRESENT, description="When the kubelet pulls the image."
    )


class ConfigMapSource(ApiModel):
    """A small model repository stored in a ConfigMap (one key per file)."""

    name: str = Field(
        description="Name of the ConfigMap in the pool's namespace.", pattern=DNS_LABEL
    )


class PvcSource(ApiModel):
    """A model repository on a PersistentVolumeClaim, mounted read-only."""

    claim_name: str = Field(
        description="Name of the PVC in the pool's namespace.", pattern=DNS_LABEL
    )
    sub_path: str = Field(
        default="", description="Folder inside the volume that holds the repository."
    )


class InitContainerSource(ApiModel):
    """An init container that writes the model repository into an emptyDir before Triton starts."""

    image: Image = Field(description="Image of the init container.")
    command: list[str] = Field(
        min_length=1,
        description="Command that fills /models (the repository mount) and exits 0.",
    )


class ModelRepository(ApiModel):
    """Where Triton reads its models from: exactly one source."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.configMap), has(self.pvc), has(self.initContainer)]"
                    ".filter(x, x).size() == 1",
                    "message": "set exactly one of configMap, pvc or initContainer",
                }
            ]
        }
    }

    config_map: ConfigMapSource | None = Field(
        default=None, description="Small models from a ConfigMap."
    )
    pvc: PvcSource | None = Field(default=None, description="Models from a PersistentVolumeClaim.")
    init_container: InitContainerSource | None = Field(
        default=None, description="Models written by an init container."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRepository:
        chosen = [s for s in (self.config_map, self.pvc, self.init_container) if s is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of configMap, pvc or initContainer")
        return self


class ModelSpec(ApiModel):
    """The model the pool serves."""

    name: str = Field(
        description="Triton model name callers use in /v2/models/<name>/...",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    repository: ModelRepository = Field(description="Where the model repository comes from.")


class Resources(ApiModel):
    """CPU and memory for a container; GPUs are set by gpusPerReplica."""

    cpu: str = Field(default="1", pattern=QUANTITY, description="CPU request and limit.")
    memory: str = Field(default="4Gi", pattern=QUANTITY, description="Memory request and limit.")


class TritonSpec(ApiModel):
    """The Triton Inference Server container."""

    image: Image = Field(
        default_factory=lambda: Image(repository="nvcr.io/nvidia/tritonserver", tag="24.10-py3"),
        description="Triton image.",
    )
    args: list[str] = Field(
        default_factory=list,
        description="Extra tritonserver arguments; the operator sets ports and the repository.",
    )
    resources: Resources = Field(default_factory=Resources, description="Triton's CPU and memory.")
    shm_size: str = Field(
        default="1Gi",
        pattern=QUANTITY,
        description="Size of the memory-backed /dev/shm (the python backend needs more than 64Mi).",
    )


class BodyLimits(ApiModel):
    """Largest request body per route, in bytes after decompression; larger ones get 413."""

    infer: int = Field(default=16 << 20, ge=1024, le=1 << 30, description="KServe v2 infer.")
    generate: int = Field(default=4 << 20, ge=1024, le=1 << 30, description="generate.")
    generate_stream: int = Field(
        default=4 << 20, ge=1024, le=1 << 30, description="generate_stream."
    )


class MeterLimits(ApiModel):
    """What one caller may hold at the meter, so no tenant starves another."""

    max_body_bytes: BodyLimits = Field(
        default_factory=BodyLimits, description="Largest request body per route."
    )
    max_in_flight_per_channel: int = Field(
        default=0,
        ge=0,
        le=10000,
        description="Calls one payment channel may have in flight (and bodies it may be "
        "sending) per replica before 429; 0 means a quarter of maxInFlight.",
    )
    header_timeout_seconds: int = Field(
        default=15,
        ge=1,
        le=600,
        description="Seconds a caller has to send request headers (and an idle keep-alive "
        "connection stays open).",
    )
    body_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds a caller has to send a whole request body before 408.",
    )

    def meter_limits(self) -> Limits:
        body = self.max_body_bytes
        return Limits(
            max_body_bytes={
                "infer": body.infer,
                "generate": body.generate,
                "generate_stream": body.generate_stream,
            },
            header_timeout=float(self.header_timeout_seconds),
            body_timeout=float(self.body_timeout_seconds),
            max_in_flight_per_channel=self.max_in_flight_per_channel,
        )


class MeterSpec(ApiModel):
    """Per-pool settings of the metering sidecar, the only way into the pool."""

    max_in_flight: int = Field(
        default=64, ge=1, le=10000, description="Requests in flight per replica before 429."
    )
    max_output_tokens: int = Field(
        default=1024,
        ge=1,
        description="Output tokens reserved against credit per request before it is forwarded.",
    )
    limits: MeterLimits = Field(
        default_factory=MeterLimits, description="Body sizes, read timeouts, per-channel bound."
    )
    tokenizer: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
        description="Path of the model's tokenizer.json (Hugging Face format) inside the model "
        "repository, e.g. llm/tokenizer.json: the meter counts prompts with it for the OpenAI "
        "routes (to reserve credit, and to charge prompts the model does not report).",
    )


class InferencePoolSpec(ApiModel):
    """Desired state of an InferencePool."""

    model: ModelSpec = Field(description="The model to serve.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Number of Triton replicas.")
    gpus_per_replica: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu requested by each replica."
    )
    tee_types: list[TeeType] = Field(
        default_factory=lambda: [TeeType.TDX, TeeType.SEV_SNP],
        min_length=1,
        description="CPU TEE types a replica may run on; nodes must also be attested.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    runtime_class_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="RuntimeClass for pod-level isolation (e.g. kata-qemu-tdx) that also keeps "
        "the provider out of the pod.",
    )
    price: Price = Field(default_factory=Price, description="What callers pay, per unit.")
    triton: TritonSpec = Field(default_factory=TritonSpec, description="Triton container settings.")
    meter: MeterSpec = Field(default_factory=MeterSpec, description="Meter sidecar settings.")


class ModelState(StrEnum):
    UNKNOWN = "Unknown"
    LOADING = "Loading"
    READY = "Ready"
    UNAVAILABLE = "Unavailable"


class MeterRecord(ApiModel):
    """A meter instance the operator verified: its endpoint evidence (appraised under the node's
    policy) binds these keys, and its pod-bound token placed it in a pod of this pool on this
    node. Only recorded keys may report usage for, or read credit of, this pool's channels."""

    pod: str = Field(max_length=253, description="The meter's pod.")
    pod_uid: str = Field(max_length=64, description="The pod's uid, from its bound token.")
    node: str = Field(max_length=253, description="The node the pod runs on.")
    receipt_public_key: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Ed25519 key (hex) that signs this meter's receipts and usage reports; it "
        "lives only in the meter's memory.",
    )
    tls_spki_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the meter's TLS public key (hex)."
    )
    journal_id: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="The meter's journal: its usage is counted per "
        "journal, so a restarted container continues its totals.",
    )
    pool_generation: int = Field(ge=0, description="The pool's generation at registration.")
    price: Price = Field(
        description="The price this instance charges, read from its pod's meter arguments at "
        "registration (a pod's arguments never change): its usage is recomputed at this price."
    )
    verified_at: datetime = Field(description="When the evidence was appraised.")
    expires_at: datetime = Field(description="When the record lapses unless renewed.")


class InferencePoolStatus(ApiModel):
    """Observed state of an InferencePool, written with observedGeneration on every write."""

    observed_generation: int = Field(default=0, ge=0, description="Generation last reconciled.")
    replicas: int = Field(default=0, ge=0, description="Replicas that exist.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas passing readiness.")
    selector: str = Field(default="", description="Label selector of the pool's pods (for scale).")
    url: str = Field(default="", description="In-cluster URL of the pool (the meter's HTTP port).")
    nodes: list[str] = Field(default_factory=list, description="Nodes running ready replicas.")
    model_state: ModelState = Field(
        default=ModelState.UNKNOWN, description="Whether the model is being served."
    )
    price: Price | None = Field(default=None, description="The price in force.")
    meters: list[MeterRecord] = Field(
        default_factory=list,
        max_length=512,
        description="Verified meter instances of this pool (see MeterRecord).",
    )
    conditions: ConditionList
