"""A local PCCS stand-in on loopback: serves real TDX collateral from tests/data in the PCS v4
API shapes (issuer chains URL-encoded in headers, the PCK CRL in DER, the root CA CRL in hex), and
counts the requests it answers."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Pccs:
    collateral: dict[str, str]
    url: str = ""
    requests: list[str] = field(default_factory=list)
    down: bool = False

    def _headers(self, name: str, part: str) -> dict[str, str]:
        return {name: urllib.parse.quote(self.collateral[part], safe="")}

    def _signed(self, name: str, body: str, signature: str) -> str:
        return f'{{"{name}":{body},"signature":"{signature}"}}'

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if self.down:
            return web.Response(status=503, text="PCCS unavailable")
        c, path = self.collateral, request.path
        if path == "/sgx/certification/v4/pckcrl":
            headers = self._headers("SGX-PCK-CRL-Issuer-Chain", "pck_crl_issuer_chain")
            return web.Response(body=bytes.fromhex(c["pck_crl"]), headers=headers)
        if path == "/tdx/certification/v4/tcb":
            fmspc = json.loads(c["tcb_info"])["fmspc"]
            if request.query.get("fmspc", "").upper() != fmspc.upper():
                return web.Response(status=404, text="no TCB info for this FMSPC")
            text = self._signed("tcbInfo", c["tcb_info"], c["tcb_info_signature"])
            headers = self._headers("TCB-Info-Issuer-Chain", "tcb_info_issuer_chain")
            return web.Response(text=text, headers=headers)
        if path == "/tdx/certification/v4/qe/identity":
            text = self._signed("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"])
            headers = self._headers("SGX-Enclave-Identity-Issuer-Chain", "qe_identity_issuer_chain")
            return web.Response(text=text, headers=headers)
        if path == "/sgx/certification/v4/rootcacrl":
            return web.Response(text=c["root_ca_crl"])
        return web.Response(status=404, text="unknown PCCS path")


@asynccontextmanager
async def serve(collateral: str) -> AsyncIterator[Pccs]:
    pccs = Pccs(json.loads(collateral))
    app = web.Application()
    app.router.add_get("/{tail:.*}", pccs.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    pccs.url = f"http://127.0.0.1:{port}"
    try:
        yield pccs
    finally:
        await runner.cleanup()
