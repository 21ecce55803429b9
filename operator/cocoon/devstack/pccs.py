"""A local PCCS stand-in on loopback: serves TDX collateral in the PCS v4 API shapes (issuer
chains URL-encoded in headers, the PCK CRL in DER, the root CA CRL in hex) and counts the
requests it answers. Unit tests give it Intel's real collateral; the e2e stack gives it the
simulated TDX platform's. It runs in a thread, so sync and async callers can both use it."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Pccs:
    """What the stand-in serves; `collateral` may be replaced while it runs (a refresh)."""

    collateral: dict[str, str]
    url: str = ""
    requests: list[str] = field(default_factory=list)
    down: bool = False

    def serve(self, collateral: str) -> None:
        self.collateral = json.loads(collateral)

    def answer(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a GET of `target` (path and query)."""
        self.requests.append(target)
        if self.down:
            return 503, {}, b"PCCS unavailable"
        c = self.collateral
        parsed = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parsed.query))

        def chain(name: str, part: str) -> dict[str, str]:
            return {name: urllib.parse.quote(c[part], safe="")}

        def signed(name: str, body: str, signature: str) -> bytes:
            return f'{{"{name}":{body},"signature":"{signature}"}}'.encode()

        if parsed.path == "/sgx/certification/v4/pckcrl":
            headers = chain("SGX-PCK-CRL-Issuer-Chain", "pck_crl_issuer_chain")
            return 200, headers, bytes.fromhex(c["pck_crl"])
        if parsed.path == "/tdx/certification/v4/tcb":
            fmspc = json.loads(c["tcb_info"])["fmspc"]
            if query.get("fmspc", "").upper() != fmspc.upper():
                return 404, {}, b"no TCB info for this FMSPC"
            body = signed("tcbInfo", c["tcb_info"], c["tcb_info_signature"])
            return 200, chain("TCB-Info-Issuer-Chain", "tcb_info_issuer_chain"), body
        if parsed.path == "/tdx/certification/v4/qe/identity":
            body = signed("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"])
            headers = chain("SGX-Enclave-Identity-Issuer-Chain", "qe_identity_issuer_chain")
            return 200, headers, body
        if parsed.path == "/sgx/certification/v4/rootcacrl":
            return 200, {}, c["root_ca_crl"].encode()
        return 404, {}, b"unknown PCCS path"


@contextmanager
def serve(collateral: str) -> Iterator[Pccs]:
    """The stand-in on 127.0.0.1 (a free port) until the block ends."""
    pccs = Pccs(json.loads(collateral))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = pccs.answer(self.path)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the requests are counted in `pccs.requests`."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    pccs.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="pccs-stand-in", daemon=True)
    thread.start()
    try:
        yield pccs
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
