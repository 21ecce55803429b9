"""`cocoon client`: the caller's policy file and receipt store.

    cocoon client policy init --url https://meter:8443 -o policy.yaml [--root AmdArk=ark.pem]
    cocoon client receipts list|verify [--receipts FILE] [--channel NS/NAME]
    kubectl get pch NAME -o json | cocoon client promise --status - --key payer.json \
        --operator-url https://cocoon-operator.cocoon-system.svc:8443 [--operator-ca ca.pem]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from cocoon.attestation.policy import Policy, PolicyError
from cocoon.client import pinning
from cocoon.client.call import describe
from cocoon.client.errors import EndpointRefused
from cocoon.client.store import ReceiptStore, default_path
from cocoon.client.verify import Verifier


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="client_command", required=True, metavar="COMMAND")
    pol = sub.add_parser("policy", help="your own attestation policy file")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    init = pol_sub.add_parser("init", help="write a starting policy from a verified endpoint")
    init.add_argument("--url", required=True, help="the meter's https:// base URL")
    init.add_argument("-o", "--output", type=Path, required=True)
    init.add_argument("--root", action="append", default=[], metavar="PURPOSE=FILE.pem",
                      help="also trust this root (e.g. a simulated TEE's AmdArk=ark.pem and "
                      "NvidiaDeviceIdentity=gpu-root.pem); repeatable")
    init.add_argument("--allow-simulated", action="store_true",
                      help="accept a simulated-TEE root passed with --root (test clusters only)")
    init.add_argument("--no-vendor-roots", action="store_true",
                      help="trust only the --root certificates, not the built-in vendor roots")
    init.add_argument("--force", action="store_true", help="overwrite the output file")
    init.set_defaults(handler=_policy_init)

    rec = sub.add_parser("receipts", help="the receipts your calls were charged with")
    rec_sub = rec.add_subparsers(dest="receipts_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("list", _receipts_list, "list stored receipts"),
        ("verify", _receipts_verify, "check every signature, key and sum"),
    ):
        p = rec_sub.add_parser(name, help=text)
        p.add_argument("--receipts", type=Path, default=None,
                       help=f"receipt store (default: {default_path()})")
        p.add_argument("--channel", default=None, help="only this channel (namespace/name)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)

    pro = sub.add_parser(
        "promise",
        help="Client signing: promise the channel exactly what your verified receipts add up to",
    )
    pro.add_argument("--status", type=Path, required=True,
                     help="the PaymentChannel as JSON (kubectl get pch NAME -o json), - for stdin")
    pro.add_argument("--key", type=Path, required=True,
                     help="the payer key file (cocoon ton keygen) whose public key the channel has")
    pro.add_argument("--operator-url", required=True, help="the operator's API base URL")
    pro.add_argument("--operator-ca", type=Path, default=None,
                     help="CA bundle of the operator's API (ConfigMap <release>-api-ca)")
    pro.add_argument("--receipts", type=Path, default=None,
                     help=f"receipt store (default: {default_path()})")
    pro.add_argument("--dry-run", action="store_true", help="print the amount, sign nothing")
    pro.set_defaults(handler=_promise)


def _policy_init(args: argparse.Namespace) -> int:
    from cocoon.client.network import UNREACHABLE, attest

    parts = urlsplit(args.url)
    if parts.scheme != "https" or not parts.hostname:
        return _fail(2, f"{args.url}: the URL must be https://HOST[:PORT]")
    if args.output.exists() and not args.force:
        return _fail(2, f"{args.output} exists; pass --force to overwrite it")
    try:
        roots = [pinning.extra_root(r) for r in args.root]
        base = pinning.bootstrap(roots, allow_simulated=args.allow_simulated,
                                 vendor_roots=not args.no_vendor_roots)
        verifier = Verifier(Policy.from_spec(base), certificate_evidence=False)
    except (ValueError, OSError, ValidationError, PolicyError) as exc:
        return _fail(2, str(exc))
    try:
        pinned = attest(verifier, parts.hostname, parts.port or 443)
    except EndpointRefused as exc:
        return _fail(3, f"refused: {exc}")
    except UNREACHABLE as exc:
        return _fail(1, f"cannot reach {args.url}: {exc}")
    spec = pinning.pinned_spec(base, pinned)
    header = (
        f"# Pinned from {args.url} at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}: {describe(pinned)}\n"
        "# These are the values that endpoint measured, NOT known-good values. Compare each\n"
        "# one with your own reproducible build (or the vendor's published values) before you\n"
        "# rely on this file; then `cocoon call --policy` refuses any other value.\n"
    )
    args.output.write_text(header + yaml.safe_dump(spec.to_api(), sort_keys=False))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _receipts_list(args: argparse.Namespace) -> int:
    store = ReceiptStore(args.receipts)
    try:
        items = store.list(args.channel)
    finally:
        store.close()
    if args.json:
        print(json.dumps([i.signed.model_dump(by_alias=True, mode="json") for i in items],
                         indent=2))
        return 0
    for item in items:
        r = item.receipt
        issued = datetime.fromtimestamp(r.issued_at, UTC)
        print(f"{issued:%Y-%m-%dT%H:%M:%SZ} {r.request_id} {r.channel} {r.model}/"
              f"{r.endpoint} cost={r.cost_nanoton} total={r.cumulative_nanoton} "
              f"meter={r.meter_public_key[:16]}… via {item.origin}")
    return 0


def _receipts_verify(args: argparse.Namespace) -> int:
    store = ReceiptStore(args.receipts)
    try:
        report = store.verify(args.channel)
    finally:
        store.close()
    channels = {
        channel: {meter: vars(total) for meter, total in meters.items()}
        for channel, meters in report.channels.items()
    }
    if args.json:
        print(json.dumps({"ok": report.ok, "checked": report.checked,
                          "problems": report.problems, "channels": channels}, indent=2))
    else:
        for channel, meters in report.channels.items():
            for meter, total in meters.items():
                print(f"{channel} meter {meter[:16]}…: {total.receipts} receipt(s), "
                      f"{total.cost_nanoton} nanoton charged here, meter total "
                      f"{total.charged_nanoton}, unaccounted {total.unaccounted_nanoton}")
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        print(f"{report.checked} receipt(s) checked: " + ("ok" if report.ok else "FAILED"))
    return 0 if report.ok else 1


def _promise(args: argparse.Namespace) -> int:
    import ssl

    from cocoon.client import promises
    from cocoon.ton import keyfile

    try:
        text = sys.stdin.read() if str(args.status) == "-" else args.status.read_text()
        terms = promises.ChannelTerms.from_channel(json.loads(text))
    except (OSError, ValueError, KeyError) as exc:
        return _fail(2, f"--status: expected a PaymentChannel as JSON: {exc}")
    except promises.PromiseError as exc:
        return _fail(2, str(exc))
    store = ReceiptStore(args.receipts)
    try:
        report = store.verify(terms.ref)
    finally:
        store.close()
    try:
        amount = promises.next_promise(report, terms)
    except promises.PromiseError as exc:
        return _fail(1, str(exc))
    if amount is None:
        print(f"{terms.ref}: receipts total {report.channel_cost(terms.ref)} nanoton; already "
              f"promised {terms.promised}: nothing to sign")
        return 0
    if args.dry_run:
        print(f"{terms.ref}: would promise {amount} nanoton (receipts)")
        return 0
    try:
        key = keyfile.load(args.key)
        promise = promises.sign(key, terms, amount)
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(args.operator_ca)) if args.operator_ca else True
        )
        promises.submit(args.operator_url, terms, promise, verify)
    except (OSError, ValueError, keyfile.KeyFileError, promises.PromiseError) as exc:
        return _fail(1, str(exc))
    print(f"{terms.ref}: promised {amount} nanoton, the total of your verified receipts")
    return 0


def _fail(code: int, text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return code
