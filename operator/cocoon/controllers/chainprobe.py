"""Chain reachability on its own clock: `ChainReachable` tells the truth within a stated bound.

A channel's reconcile notices a dead chain only when it next runs, and a pass of channels can be
held for minutes by channels waiting on their transactions, so status kept saying True long after
the chain was gone. This pass reads one cheap thing (the chain's time) from every chain endpoint
the live channels use, once per endpoint however many channels share it, each read under a short
deadline. A silent endpoint flips `ChainReachable` (and `Ready`) to False on exactly the channels
that use it, within `interval + timeout` (15 s by default) for up to `concurrency` dead endpoints;
an endpoint that answers again flips them back and has the channel reconciled at once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter

from cocoon.api.common import ConditionStatus
from cocoon.controllers import channel_chain, channel_conditions, loops, paymentchannel
from cocoon.controllers import status as status_writer
from cocoon.controllers.channel_secrets import Blocked
from cocoon.kube import PAYMENT_CHANNELS, Obj
from cocoon.ton import networks
from cocoon.ton.chain import ChainError
from cocoon.ton.toncenter import describe

logger = logging.getLogger(__name__)
REACHABLE = "ChainReachable"

# bounded labels: the result is reachable or unreachable
PROBES = Counter(
    "cocoon_chain_probes_total",
    "Reads of a chain endpoint's time by the reachability pass, by result.",
    ["result"],
)


def network_name(body: Mapping[str, Any]) -> str:
    """The provider network a channel uses: pinned in status once prepared, else its spec's
    choice (empty: the provider's default). Channels on one network share one probe."""
    pinned = (body.get("status") or {}).get("network")
    return str(pinned or (body.get("spec") or {}).get("network") or "")


def reachability(body: Mapping[str, Any]) -> str | None:
    """The channel's ChainReachable status as written ("True", "False"), or None."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == REACHABLE:
            return str(condition.get("status"))
    return None


async def probe(memo: kopf.Memo, network: networks.Network) -> str | None:
    """None when the endpoint told its time, else why not (for the status message)."""
    try:
        async with await channel_chain.open_chain(memo.kube, network) as chain:
            await chain.now()
    except ChainError as exc:
        return str(exc)
    except TimeoutError:
        return "no answer in time"
    except Blocked as exc:  # e.g. the API key's Secret cannot be read
        return exc.message
    except Exception as exc:  # any failure to read the chain is unreachability
        return describe(exc)
    return None


async def _mark(memo: kopf.Memo, body: Obj, failure: str | None) -> None:
    """Write the probe's verdict on one channel, only where it changes what status says."""
    meta = body["metadata"]
    before = reachability(body)
    if failure is None:
        if before != ConditionStatus.FALSE.value:
            return
        updates = [(REACHABLE, ConditionStatus.TRUE, "Reachable", "The chain answered a probe.")]
    else:
        if before == ConditionStatus.FALSE.value:
            return
        message = (
            f"The chain did not answer a probe: {failure}. Serving goes on within the credit "
            "already granted; claims and top-ups wait until it answers."
        )
        updates = [
            (REACHABLE, ConditionStatus.FALSE, "ChainUnreachable", message),
            ("Ready", ConditionStatus.FALSE, "ChainUnreachable", message),
            channel_conditions.funded_as_last_seen(body),
        ]
    try:
        # conditional: a reconcile that wrote meanwhile knows better; the next probe re-checks
        await status_writer.write(memo.kube, PAYMENT_CHANNELS, body, {}, updates, precondition=True)
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise
        return
    logger.info(
        "channel %s/%s: chain %s",
        meta.get("namespace"),
        meta.get("name"),
        "reachable again" if failure is None else "unreachable",
    )
    if failure is None:  # Ready follows from a full reconcile
        paymentchannel.schedule(memo, str(meta.get("namespace")), str(meta.get("name")))


async def resync(memo: kopf.Memo, schedule: loops.Schedule) -> None:
    """One probe per endpoint in use, each under the schedule's deadline, then the verdicts."""
    catalog = channel_chain.payments(memo).catalog
    groups: defaultdict[str, list[Obj]] = defaultdict(list)
    found: dict[str, networks.Network] = {}
    for body in await memo.kube.list(PAYMENT_CHANNELS):
        network = catalog.find(network_name(body))
        if network is None:
            continue  # the reconcile reports NetworkUnknown
        found[network.name] = network
        groups[network.name].append(body)

    failures: dict[str, str | None] = {}

    async def one(key: str) -> None:
        failures[key] = await probe(memo, found[key])

    await loops.each(list(groups), one, schedule, lambda key: key)
    for key, members in groups.items():
        # a probe cut off by the deadline never stored a result: that is unreachability too
        failure = failures.get(key, f"no answer within {schedule.timeout_s:.0f} s")
        PROBES.labels("reachable" if failure is None else "unreachable").inc()
        for body in members:
            await _mark(memo, body, failure)
