"""What a PaymentChannel's status says: its fields and conditions after a pass, and the
reasons it gives when it is blocked or the chain fails. Pure functions of what was observed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cocoon.api.common import ConditionStatus
from cocoon.api.paymentchannel import (
    ChannelState,
    PaymentChannelSpec,
    PaymentChannelStatus,
    SigningMode,
)
from cocoon.controllers.channel_secrets import Blocked
from cocoon.kube import Obj
from cocoon.ton import accounting
from cocoon.ton.chain import ChainError
from cocoon.ton.channel import State
from cocoon.ton.client import ChannelError, PaymentChannel
from cocoon.ton.wallet import InsufficientFunds

ABANDON_ANNOTATION = "cocoon.dev/abandon-channel"
_STATES = {
    State.OPEN: ChannelState.OPEN,
    State.CLOSING: ChannelState.CLOSING,
    State.CLOSED: ChannelState.CLOSED,
}
Update = tuple[str, ConditionStatus, str, str]


@dataclass
class Observed:
    body: Obj
    spec: PaymentChannelSpec
    status: PaymentChannelStatus
    view: accounting.ChannelView
    channel: PaymentChannel | None


def summary(obs: Observed, credential: tuple[str, str]) -> tuple[Obj, list[Update]]:
    """Status fields and conditions for what was observed at the end of a pass."""
    view, status, chain = obs.view, obs.status, obs.view.chain
    deposited = chain.deposited if chain else 0
    fields: Obj = {
        "state": (_STATES[chain.state] if chain else ChannelState.PENDING).value,
        "deposited": str(deposited),
        "claimed": str(chain.claimed if chain else 0),
        "promised": str(view.promised),
        "creditLeft": str(
            accounting.credit_left(deposited, view.promised, int(obs.spec.credit_window), view.owed)
        ),
        "closeDeadline": (
            datetime.fromtimestamp(chain.close_deadline, UTC).isoformat()
            if chain and chain.state is State.CLOSING
            else None
        ),
    }
    if credential[0]:
        fields["credentialSecret"], fields["credentialSha256"] = credential
    updates: list[Update] = [
        ("ChainReachable", ConditionStatus.TRUE, "Reachable", "The chain answered this reconcile.")
    ]
    payer = status.parameters.payer if status.parameters else ""
    updates.append(funded(view.managed, payer, chain is not None, deposited, view.target_deposit))
    if chain is not None and chain.state is State.OPEN:
        ready = (
            ConditionStatus.TRUE,
            "Open",
            f"Open at {status.address}; callers use Secret {credential[0]}.",
        )
    elif chain is not None:
        ready = (
            ConditionStatus.FALSE,
            _STATES[chain.state].value,
            f"The channel is {_STATES[chain.state].value.lower()}; it serves no requests.",
        )
    else:
        ready = (ConditionStatus.FALSE, "NotDeployed", "The channel is not deployed yet.")
    updates.append(("Ready", *ready))
    return fields, updates


def funded(
    managed: bool, payer: str, deployed: bool, deposited: int, target: int, *, seen: str = ""
) -> Update:
    """`Funded` against the target in force (the spec's deposit now, not the one last acted on);
    `seen` qualifies a deposit that was read from status instead of the chain."""
    if not deployed:
        how = "." if managed else f"; deploy and fund it from the payer's wallet {payer}."
        message = "The channel is not deployed yet" + how
        return ("Funded", ConditionStatus.FALSE, "NotDeployed", message)
    if deposited >= target:
        return (
            "Funded",
            ConditionStatus.TRUE,
            "Funded",
            f"{deposited} nanoton deposited{seen} (target {target}).",
        )
    return (
        "Funded",
        ConditionStatus.FALSE,
        "BelowDeposit",
        f"{deposited} nanoton deposited{seen}, below the target {target}.",
    )


def funded_as_last_seen(body: Obj) -> Update:
    """`Funded` when the chain cannot be read now: the last deposit seen against today's target."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return funded(
        (spec.get("payer") or {}).get("signing", SigningMode.MANAGED.value)
        == SigningMode.MANAGED.value,
        str((status.get("parameters") or {}).get("payer") or ""),
        status.get("state", ChannelState.PENDING.value) != ChannelState.PENDING.value,
        int(status.get("deposited") or 0),
        int(spec.get("deposit") or 0),
        seen=" when the chain last answered",
    )


def awaiting_claim(status: Obj) -> str:
    """What an unreachable chain holds back, said in the status message: accepted usage that is
    not claimed on chain yet (owed less claimed as last seen), so nobody takes it for lost."""
    pending = int(status.get("owed") or 0) - int(status.get("claimed") or 0)
    return f" {pending} nanoton of accepted usage wait to be claimed." if pending > 0 else ""


def blocked_updates(exc: Blocked) -> list[Update]:
    return [("Ready", ConditionStatus.FALSE, exc.reason, exc.message)]


def chain_failure(exc: ChainError) -> Blocked:
    if isinstance(exc, InsufficientFunds):
        return Blocked("PayerWalletUnderfunded", f"{exc}.")
    if isinstance(exc, ChannelError):
        return Blocked("ChainRefused", f"The channel contract refused the operation: {exc}.")
    return Blocked(
        "ChainUnreachable",
        f"The chain did not answer: {exc}. Claims and top-ups wait and the operator retries; "
        "usage reports are still accepted. If the chain is gone for good "
        f"and you accept leaving the deposit on it, annotate the channel "
        f"{ABANDON_ANNOTATION}=true to release its finalizer.",
    )
