"""PaymentChannel: a developer's funded TON channel that pays a pool's provider per unit served."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from cocoon.api.common import MAX_COUNT, ApiModel, ConditionList, Nanoton
from cocoon.api.inferencepool import DNS_LABEL, TON_ADDRESS
from cocoon.meter.pricing import Price
from cocoon.ton.units import TON


class SigningMode(StrEnum):
    MANAGED = "Managed"
    CLIENT = "Client"


class SecretKeyRef(ApiModel):
    """A key inside a Secret in the channel's namespace."""

    name: str = Field(description="Secret name.", pattern=DNS_LABEL)
    key: str = Field(default="key", description="Key inside the Secret.", min_length=1)


class PayerSpec(ApiModel):
    """Who pays and how promises get signed."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.signing == 'Managed' ? has(self.keySecretRef) "
                    ": has(self.publicKey)",
                    "message": "Managed signing needs keySecretRef; Client signing needs publicKey",
                }
            ]
        }
    }

    signing: SigningMode = Field(
        default=SigningMode.MANAGED,
        description="Managed: the operator signs promises with the key in keySecretRef. "
        "Client: the caller signs promises and the operator only verifies them.",
    )
    key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The payer's Ed25519 key (Managed signing)."
    )
    public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The payer's Ed25519 public key, hex (Client signing).",
    )

    @model_validator(mode="after")
    def _key_for_mode(self) -> PayerSpec:
        if self.signing is SigningMode.MANAGED and self.key_secret_ref is None:
            raise ValueError("Managed signing needs keySecretRef")
        if self.signing is SigningMode.CLIENT and self.public_key is None:
            raise ValueError("Client signing needs publicKey")
        return self


class ClaimPolicy(ApiModel):
    """When the provider's side claims what is owed."""

    threshold: Nanoton = Field(
        default=str(TON), description="Claim once this much is promised but unclaimed."
    )
    interval_seconds: int = Field(
        default=3600, ge=60, description="Claim at least this often while something is owed."
    )


class PaymentChannelSpec(ApiModel):
    """Desired state of a PaymentChannel.

    The payee and the chain are not the tenant's to choose: the payee is the provider's payout
    address and the network one the provider's operator offers by name."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.maxPrice) == has(oldSelf.maxPrice)",
                    "message": "spec.maxPrice is fixed at creation",
                }
            ]
        }
    }

    pool_name: str = Field(
        description="The InferencePool (same namespace) this channel pays for.", pattern=DNS_LABEL
    )
    payer: PayerSpec = Field(description="The payer's key and signing mode.")
    deposit: Nanoton = Field(description="Amount to keep deposited in the channel, in nanoton.")
    credit_window: Nanoton = Field(
        default=str(TON),
        description="How much may be served beyond the latest promise before callers get 402.",
    )
    claim: ClaimPolicy = Field(default_factory=ClaimPolicy, description="When to claim.")
    close_delay_seconds: int = Field(
        default=86400,
        ge=60,
        description="After the payer starts a close, how long the payee may still claim.",
    )
    network: str = Field(
        default="",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
        description="One of the TON networks the provider offers, by name (the operator's "
        "network catalog, set in its Helm values); empty: the provider's default. A tenant "
        "names a network, never an endpoint. Fixed at creation.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.network is fixed at creation"}
            ]
        },
    )
    max_price: Price | None = Field(
        default=None,
        description="The most this channel pays per unit of each category; a pool priced above "
        "it in any category does not serve the channel. Unset: the pool's price when the "
        "channel is created is pinned in status.maxPrice. Fixed at creation.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.maxPrice is fixed at creation"}
            ]
        },
    )


class ChannelState(StrEnum):
    PENDING = "Pending"
    OPEN = "Open"
    CLOSING = "Closing"
    CLOSED = "Closed"


class Transaction(ApiModel):
    """The last on-chain transaction the operator made for this channel."""

    kind: str = Field(description="deploy, topup, claim, rotate, close or withdraw.")
    hash: str = Field(description="Transaction hash, hex.", pattern=r"^[0-9a-f]{64}$")
    at: datetime = Field(description="When it was observed on chain.")


class SignedPromise(ApiModel):
    """The payer's latest signed cumulative promise, persisted before any claim uses it."""

    cumulative: Nanoton = Field(description="Cumulative amount the payer promised, nanoton.")
    signature: str = Field(
        description="Ed25519 signature by the payer key over the promise cell, hex.",
        pattern=r"^[0-9a-f]{128}$",
    )


class MeterUsage(ApiModel):
    """The highest cumulative usage report accepted from one meter journal."""

    instance: str = Field(
        description="The meter journal's id: usage is counted per journal, the meter "
        "instance's cumulative sequence.",
        pattern=r"^[0-9a-f]{32}$",
    )
    public_key: str = Field(
        description="The registered meter key (Ed25519, hex) that signed the latest report.",
        pattern=r"^[0-9a-f]{64}$",
    )
    pool: str = Field(
        description="namespace/name of the InferencePool the meter serves.", max_length=253
    )
    journal_sequence: int = Field(
        ge=0, le=MAX_COUNT, description="Journal sequence the report covers."
    )
    cost_nanoton: Nanoton = Field(description="Cumulative cost this meter charged, nanoton.")
    reported_at: datetime | None = Field(default=None, description="When it was accepted.")


class ChannelParameters(ApiModel):
    """What the channel's address commits to, fixed when the channel id is chosen."""

    payer_public_key: str = Field(
        description="The payer's Ed25519 public key, hex.", pattern=r"^[0-9a-f]{64}$"
    )
    payer: str = Field(description="The payer's wallet address (raw form).", pattern=TON_ADDRESS)
    payee: str = Field(description="The payee's address (raw form).", pattern=TON_ADDRESS)
    close_delay_seconds: int = Field(ge=0, description="Close delay committed on chain.")


class LedgerEntry(ApiModel):
    """One channel transaction in the fee ledger, as the chain recorded it."""

    kind: str = Field(
        description="deploy, topup, claim, close, withdraw, coopclose or other.", max_length=16
    )
    hash: str = Field(description="The channel transaction's hash, hex.", pattern=r"^[0-9a-f]{64}$")
    lt: str = Field(description="Its logical time.", pattern=r"^[0-9]{1,20}$")
    at: datetime = Field(description="Its chain time.")
    value: Nanoton = Field(
        description="Deposited (deploy, topup), claimed (claim) or refunded (withdraw)."
    )
    fee: Nanoton = Field(
        description="Fees the chain took from the channel: the transaction's fees plus the "
        "forward fees of what it paid out."
    )
    wallet_fee: Nanoton = Field(
        default="0", description="Fees the payer's wallet paid to send a deposit."
    )
    charge: Nanoton = Field(
        default="0", description="Withheld from a claim's payout for its gas (the payee's fee)."
    )


class FeeLedger(ApiModel):
    """Where the channel's money went, folded from its transactions on chain, each counted once.

    deposits = claimed - claimCharges + refunded + channelFees + the balance left."""

    deposits: Nanoton = Field(default="0", description="Value the channel received (funding).")
    claimed: Nanoton = Field(default="0", description="Moved to the payee by claims.")
    paid_out: Nanoton = Field(
        default="0", description="Value the payee received: claimed less claimCharges."
    )
    refunded: Nanoton = Field(default="0", description="Value returned to the payer.")
    channel_fees: Nanoton = Field(
        default="0", description="Fees the chain took from the channel, every transaction."
    )
    funding_fees: Nanoton = Field(
        default="0", description="Fees the payer's wallet paid to send the deposits."
    )
    claim_charges: Nanoton = Field(
        default="0",
        description="Withheld from claims' payouts to pay their gas: the payee's fees.",
    )
    fees_paid: Nanoton = Field(
        default="0", description="Every fee charged for this channel: channelFees + fundingFees."
    )
    last_lt: str = Field(
        default="0",
        pattern=r"^[0-9]{1,20}$",
        description="Logical time of the newest transaction counted; older ones never count again.",
    )
    last_hash: str = Field(
        default="", pattern=r"^([0-9a-f]{64})?$", description="Hash of that transaction."
    )
    entries: list[LedgerEntry] = Field(
        default_factory=list,
        max_length=16,
        description="The newest transactions counted (the sums above cover all of them).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["hash"],
        },
    )


class PaymentChannelStatus(ApiModel):
    """Observed state of the channel; amounts in nanoton."""

    observed_generation: int = Field(default=0, ge=0, description="Generation last reconciled.")
    address: str = Field(default="", description="The channel contract's address.")
    channel_id: str = Field(default="", pattern=r"^[0-9a-f]*$", description="On-chain id, hex.")
    state: ChannelState = Field(default=ChannelState.PENDING, description="On-chain state.")
    deposited: Nanoton = Field(default="0", description="Total deposited on chain.")
    owed: Nanoton = Field(default="0", description="Served and metered, cumulative.")
    promised: Nanoton = Field(default="0", description="Covered by the latest signed promise.")
    claimed: Nanoton = Field(default="0", description="Paid out to the payee on chain.")
    credit_left: Nanoton = Field(default="0", description="What may still be served.")
    credential_sha256: str = Field(
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="SHA-256 of the caller credential: all that meters learn of it.",
    )
    credential_secret: str = Field(
        default="", description="Secret holding the caller credential for this channel."
    )
    last_transaction: Transaction | None = Field(default=None, description="Latest transaction.")
    parameters: ChannelParameters | None = Field(
        default=None,
        description="The parameters the address commits to; persisted before the deploy, so a "
        "crash can never deploy a second channel under another id.",
    )
    network: str = Field(
        default="",
        max_length=63,
        description="The provider network the channel lives on, pinned when its id is chosen.",
    )
    max_price: Price | None = Field(
        default=None,
        description="The maximum price in force: spec.maxPrice, or the pool's price pinned "
        "when the channel was prepared.",
    )
    latest_promise: SignedPromise | None = Field(
        default=None, description="The latest promise signed (Managed) or accepted (Client)."
    )
    promise_key: str = Field(
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="The promise key in force on chain after a rotation (Managed), hex; empty: "
        "parameters.payerPublicKey.",
    )
    promise_key_secret: str = Field(
        default="",
        max_length=253,
        description="The Secret holding that key; empty: <channel>-promise-key.",
    )
    promise_key_rotation: str = Field(
        default="",
        max_length=253,
        description="The value of the cocoon.dev/rotate-promise-key annotation last carried out.",
    )
    meters: list[MeterUsage] = Field(
        default_factory=list,
        max_length=256,
        description="Highest accepted usage report per attested meter; owed is their sum.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["instance", "pool"],
        },
    )
    rejected_reports: int = Field(
        default=0,
        ge=0,
        description="Reports for this channel by registered meters that were refused (another "
        "pool's meter, a journal going backwards), carried in by the channel's next accepted "
        "report; forged or unregistered reports are counted only in the operator's metrics.",
    )
    last_claim_at: datetime | None = Field(
        default=None, description="When the payee's side last claimed (for claim.intervalSeconds)."
    )
    close_deadline: datetime | None = Field(
        default=None, description="While Closing: when the payer may withdraw the remainder."
    )
    ledger: FeeLedger | None = Field(
        default=None,
        description="The fee ledger: deposits, claims, fees and refunds as charged on chain "
        "(`cocoon ton ledger` reconciles it against the chain).",
    )
    conditions: ConditionList
