"""`cocoon call`: verify the endpoint yourself, then send one KServe v2 request and show the
answer and its verified receipt.

Exit status: 0 answered with a valid receipt; 1 the endpoint answered an error; 2 bad usage;
3 the endpoint was refused (nothing was sent); 4 the receipt was missing or refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cocoon.client import policy as client_policy
from cocoon.client.errors import EndpointRefused, ReceiptRefused
from cocoon.client.store import ReceiptStore, default_path
from cocoon.client.verify import PinnedEndpoint, Verifier
from cocoon.meter.receipts import Receipt

if TYPE_CHECKING:
    import httpx2

CREDENTIAL_ENV = "COCOON_CREDENTIAL"
ENDPOINTS = ("generate", "generate_stream", "infer")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the meter's https:// base URL")
    parser.add_argument("--policy", type=Path, required=True,
                        help="your AttestationPolicy spec (YAML/JSON); see `cocoon client "
                        "policy init`")
    parser.add_argument("--model", required=True)
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="generate")
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="generate: the text_input")
    body.add_argument("--body", type=Path, help="the request body (JSON file), sent as is")
    parser.add_argument("--credential", default=None,
                        help=f"bearer credential (default: ${CREDENTIAL_ENV})")
    parser.add_argument("--receipts", type=Path, default=None,
                        help=f"receipt store (default: {default_path()})")
    parser.add_argument("--no-certificate-evidence", action="store_true",
                        help="always ask for evidence with a fresh nonce")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import httpx2

    from cocoon.client.capture import ReceiptCapture
    from cocoon.client.network import UNREACHABLE, attest
    from cocoon.client.transport import RECEIPT, VerifiedTransport

    credential = args.credential or os.environ.get(CREDENTIAL_ENV)
    if not credential:
        return _usage(f"no credential: pass --credential or set ${CREDENTIAL_ENV}")
    parts = urlsplit(args.url)
    if parts.scheme != "https" or not parts.hostname:
        return _usage(f"{args.url}: the URL must be https://HOST[:PORT]")
    try:
        verifier = Verifier(client_policy.load(args.policy),
                            certificate_evidence=not args.no_certificate_evidence)
        content = args.body.read_bytes() if args.body else json.dumps(
            {"text_input": args.text}).encode()
    except (client_policy.PolicyFileError, OSError) as exc:
        return _usage(str(exc))
    store = ReceiptStore(args.receipts)
    try:
        pinned = attest(verifier, parts.hostname, parts.port or 443, timeout=args.timeout)
        _say(f"verified {pinned.origin} ({pinned.via}): {describe(pinned)}")
        url = f"{args.url.rstrip('/')}/v2/models/{args.model}/{args.endpoint}"
        headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        transport = VerifiedTransport(verifier, store=store)
        with httpx2.Client(transport=transport, timeout=args.timeout) as client, \
                client.stream("POST", url, content=content, headers=headers) as response:
            status = _show(response, args.endpoint)
            capture = response.extensions[RECEIPT]
            assert isinstance(capture, ReceiptCapture)
            receipt = capture.receipt
        if status:
            return status
        if receipt is None:
            _say("refused: the meter returned no receipt for this charge")
            return 4
        _say(summary(receipt.receipt))
        return 0
    except EndpointRefused as exc:
        _say(f"refused, nothing was sent: {exc}")
        return 3
    except ReceiptRefused as exc:
        _say(f"receipt refused: {exc}")
        return 4
    except (httpx2.HTTPError, *UNREACHABLE) as exc:
        _say(f"cannot reach {args.url}: {exc}")
        return 1
    finally:
        store.close()


def _show(response: httpx2.Response, endpoint: str) -> int:
    """Print the answer as it arrives; a non-zero status for an error answer."""
    if response.status_code >= 400:
        response.read()
        _say(f"HTTP {response.status_code}: {response.text}")
        return 1
    if endpoint == "generate_stream":
        for line in response.iter_lines():
            if line.startswith("data:") and "text_output" in line:
                print(json.loads(line[5:]).get("text_output", ""), end="", flush=True)
        print()
        return 0
    response.read()
    try:
        answer = response.json()
    except ValueError:
        print(response.text)
        return 0
    text = answer.get("text_output") if isinstance(answer, dict) else None
    print(text if isinstance(text, str) else json.dumps(answer, indent=2))
    return 0


def describe(pinned: PinnedEndpoint) -> str:
    cpu = pinned.claims.get("cpu0", {})
    measured = cpu.get("measurement") or cpu.get("mrTd") or "?"
    gpus = sum(1 for name in pinned.claims if name.startswith("gpu"))
    simulated = " SIMULATED" if cpu.get("simulated") else ""
    return (f"measurement {str(measured)[:16]}…, {gpus} GPU(s){simulated}, receipt key "
            f"{pinned.receipt_public_key.hex()[:16]}…; says pool={pinned.pool or '?'} "
            f"pod={pinned.pod or '?'} node={pinned.node or '?'} (unverified)")


def summary(receipt: Receipt) -> str:
    units = ", ".join(f"{k}={v}" for k, v in sorted(receipt.units.items()))
    return (f"receipt {receipt.request_id}: {units}; cost {receipt.cost_nanoton} nanoton, "
            f"channel {receipt.channel} total {receipt.cumulative_nanoton} nanoton at meter "
            f"{receipt.meter_public_key[:16]}… (signature verified)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _usage(text: str) -> int:
    _say(f"error: {text}")
    return 2
