"""Every node's agent for `bench_fleet.py`, in one process: answers each challenge the operator
posts with fresh simulated-TEE evidence, as N agents would, and counts the Verified answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable

import aiohttp
from fleet_setup import GPUS

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.controllers.views import Informer
from cocoon.kube import ATTESTED_NODES as ATTESTED
from cocoon.kube import Kube, Obj

ANSWERING = 32  # evidence submissions in flight at once, as many agents would


class Agents:
    """Every node's agent, in one process: follows the AttestedNodes with a list-and-watch and
    answers each new challenge with fresh evidence; counts Verified answers."""

    def __init__(
        self, kube: Kube, url: str, tokens: dict[str, str], sim: SimulatedTee, tls: ssl.SSLContext
    ) -> None:
        self.kube, self.url, self.tokens, self.sim = kube, url, tokens, sim
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
        self.first_verified: dict[str, float] = {}
        self.verifications = 0  # Verified answers: first ones and re-attestations
        self.refused: dict[int, int] = {}
        self.answered: set[str] = set()
        self.gate = asyncio.Semaphore(ANSWERING)
        self.changed = asyncio.Event()
        self.keys = {name: keys.public_bytes(keys.generate()) for name in tokens}
        self.view = Informer(ATTESTED)
        self.view.listeners.append(self.on_change)
        self.tasks: set[asyncio.Task[None]] = {asyncio.create_task(self.view.run(kube))}

    @staticmethod
    def nonce_of(obj: Obj | None) -> str | None:
        return (((obj or {}).get("status") or {}).get("challenge") or {}).get("nonce")

    def on_change(self, before: Obj | None, after: Obj | None) -> None:
        if after is None or after["metadata"]["name"] not in self.tokens:
            return
        name, status = after["metadata"]["name"], after.get("status") or {}
        if status.get("verdict") == "Verified" and status.get("verifiedAt") != (
            (before or {}).get("status") or {}
        ).get("verifiedAt"):
            self.first_verified.setdefault(name, time.monotonic())
            self.verifications += 1
            self.changed.set()
        nonce = self.nonce_of(after)
        if nonce and f"{name}/{nonce}" not in self.answered:
            self.answered.add(f"{name}/{nonce}")
            task = asyncio.create_task(self.answer(name, nonce))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, name: str, nonce_hex: str) -> None:
        while True:
            async with self.gate:
                public = self.keys[name]
                evidence = self.sim.node_evidence(bytes.fromhex(nonce_hex), public, gpus=GPUS)
                body = {
                    "nonce": nonce_hex,
                    "publicKey": public.hex(),
                    "evidence": evidence.to_dict(),
                }
                async with self.http.post(
                    f"{self.url}/attestation/v1/nodes/{name}/evidence",
                    json=body,
                    headers={"Authorization": f"Bearer {self.tokens[name]}"},
                ) as r:
                    result = await r.json() if r.status == 200 else {}
            if result.get("verified"):
                return  # counted when the watch shows the verdict
            self.refused[r.status] = self.refused.get(r.status, 0) + 1
            # busy (503): the same challenge again shortly; a changed one (409) comes by watch
            if r.status != 503 or self.nonce_of(self.view.store.get(name)) != nonce_hex:
                return
            await asyncio.sleep(1)

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until `done()`, saying how far the fleet is every 15 s."""
        while not done():
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 15)
            if not self.changed.is_set():
                print(
                    f"verified {len(self.first_verified)}/{len(self.tokens)}, "
                    f"{self.verifications} verdicts, load {os.getloadavg()[0]:.1f}"
                )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()
        print("refused answers by status:", self.refused)
