"""What the story adds up to: amounts in TON as a person reads them, the channel sampled over
time (for the picture) and the closing summary `cocoon dev demo-sim` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from cocoon.ton.units import TON


@dataclass
class Sample:
    """The channel over time, for the picture."""

    at: float
    owed: int
    claimed: int
    credit_left: int


@dataclass
class Summary:
    nodes_attested: int
    requests_ok: int
    requests_refused: dict[int, int]
    output_tokens: int
    cost_seen_by_callers: int
    owed: int
    claimed: int
    unclaimed: int  # signed but not yet claimed (promised - claimed on chain)
    payee_received: int
    payee_fees: int  # claim charges (the ledgers) and the payee wallet's receiving fees
    payer_refund: int
    closed_deposits: int  # the closed channel's deposits and claims
    closed_claimed: int
    payer_fees: int  # the closed channel's fees the payer bore, and its refund's receiving fee
    rejected_reports: int
    samples: list[Sample] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("nodes attested (SEV-SNP + 1 GPU each, simulated TEE)", str(self.nodes_attested)),
            ("paid requests served", str(self.requests_ok)),
            (
                "requests refused",
                ", ".join(f"{n}x {c}" for c, n in sorted(self.requests_refused.items())) or "none",
            ),
            ("output tokens metered", str(self.output_tokens)),
            ("cost the callers were told", ton(self.cost_seen_by_callers)),
            ("owed on the channels (signed meter reports)", ton(self.owed)),
            ("claimed on chain by the provider (both channels)", ton(self.claimed)),
            ("signed, not yet claimed", ton(self.unclaimed)),
            ("provider wallet received (claimed less fees)", ton(self.payee_received)),
            ("  fees the provider's side paid (read on chain)", ton(self.payee_fees)),
            ("refunded to the payer at close", ton(self.payer_refund)),
            ("  fees the payer's side paid (read on chain)", ton(self.payer_fees)),
            ("usage reports refused (key of no registered meter)", str(self.rejected_reports)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def ton(nanoton: int) -> str:
    return f"{nanoton / TON:.6f} TON"

