"""`cocoon ton`: keys, channel deployment, promises and settlement from a shell.

Exit codes: 0 done, 1 the chain refused or lacks something (funds, a deployed channel), 2 bad
input (a key, a promise, an argument). Every error message says what to do next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cocoon import keys
from cocoon.ton import emulator, keyfile, ledger_cli, promises
from cocoon.ton.chain import Chain, ChainError
from cocoon.ton.channel import ChannelConfig, State, Tag, new_channel_id
from cocoon.ton.client import InvalidPromise, PaymentChannel
from cocoon.ton.liteserver import LiteServerChain
from cocoon.ton.settlement import PromiseError, check_promise
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import Address, raw, user_friendly
from cocoon.ton.wallet import Wallet, wallet_address

DEFAULT_CLOSE_DELAY_S = 86400
USAGE_ERROR = 2
CHAIN_ERROR = 1


class UsageError(Exception):
    pass


def _nanoton(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("an amount in nanoton (a non-negative integer)")
    return int(text)


def _address(text: str) -> Address:
    try:
        return Address(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(f"not a TON address: {text}") from exc


async def _chain(args: argparse.Namespace) -> Chain:
    if args.liteserver_config:
        return await LiteServerChain.connect(Path(args.liteserver_config))
    if not args.endpoint:
        raise UsageError("give --endpoint URL (toncenter or emulator) or --liteserver-config FILE")
    return ToncenterChain(args.endpoint, os.environ.get("TONCENTER_API_KEY"))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _config_to_json(config: ChannelConfig) -> dict[str, Any]:
    return {
        "address": raw(config.address()),
        "payerKey": config.payer_key.hex(),
        "channelId": str(config.channel_id),
        "closeDelay": config.close_delay,
        "payer": raw(config.payer),
        "payee": raw(config.payee),
    }


def _write_channel(path: Path, config: ChannelConfig) -> None:
    """Written before the deploy is sent, so a crash never loses the channel's parameters."""
    path.write_text(json.dumps(_config_to_json(config), indent=2) + "\n")


def _load_channel(path: str) -> ChannelConfig:
    try:
        data = json.loads(Path(path).read_text())
        config = ChannelConfig(
            payer_key=bytes.fromhex(data["payerKey"]),
            channel_id=int(data["channelId"]),
            close_delay=int(data["closeDelay"]),
            payer=Address(data["payer"]),
            payee=Address(data["payee"]),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: not a channel file from `cocoon ton deploy` ({exc})") from exc
    if raw(config.address()) != data.get("address", raw(config.address())):
        raise UsageError(f"{path}: the address does not match the channel parameters")
    return config


def _load_promise(path: str) -> promises.Promise:
    try:
        return promises.Promise.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: not a promise written by `cocoon ton sign-promise`") from exc


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2))


def _tx(tx: Any) -> dict[str, Any]:
    return {"lt": str(tx.lt), "hash": tx.hash.hex(), "fees": str(tx.total_fees)}


async def _keygen(args: argparse.Namespace) -> int:
    key = keys.generate()
    if args.out:
        keys.save(key, Path(args.out))
    elif args.json_out:
        _write_private(Path(args.json_out), keyfile.to_json(key) + "\n")
    else:
        print(keyfile.to_json(key))
        return 0
    public = keys.public_bytes(key)
    _print({"publicKey": public.hex(), "wallet": user_friendly(wallet_address(public))})
    return 0


async def _wallet(args: argparse.Namespace) -> int:
    key = keyfile.load(Path(args.key))
    async with await _chain(args) as chain:
        wallet = Wallet(chain, key)
        account = await chain.account(wallet.address)
        _print({
            "wallet": user_friendly(wallet.address),
            "raw": raw(wallet.address),
            "status": account.status,
            "balance": str(account.balance),
        })
    return 0


async def _faucet(args: argparse.Namespace) -> int:
    await emulator.faucet(args.endpoint, args.address, args.amount)
    _print({"funded": user_friendly(args.address), "amount": str(args.amount)})
    return 0


async def _deploy(args: argparse.Namespace) -> int:
    key = keyfile.load(Path(args.key))
    async with await _chain(args) as chain:
        wallet = Wallet(chain, key)
        config = ChannelConfig(
            payer_key=keys.public_bytes(key),
            channel_id=new_channel_id(),
            close_delay=args.close_delay,
            payer=wallet.address,
            payee=args.payee,
        )
        channel = PaymentChannel(chain, config)
        _write_channel(Path(args.out), config)
        tx = await channel.deploy(wallet, args.amount)
        _print({"channel": user_friendly(channel.address), "file": args.out, "tx": _tx(tx)})
    return 0


async def _topup(args: argparse.Namespace) -> int:
    key = keyfile.load(Path(args.key))
    async with await _chain(args) as chain:
        channel = PaymentChannel(chain, _load_channel(args.channel))
        tx = await channel.top_up(Wallet(chain, key), args.amount)
        _print({"toppedUp": str(args.amount), "tx": _tx(tx)})
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with await _chain(args) as chain:
        channel = PaymentChannel(chain, _load_channel(args.channel))
        state = await channel.state()
        _print({
            "channel": user_friendly(channel.address),
            "state": state.state.name,
            "deposited": str(state.deposited),
            "claimed": str(state.claimed),
            "balance": str(state.balance),
            "closeDeadline": state.close_deadline if state.state == State.CLOSING else None,
            "payer": user_friendly(state.payer),
            "payee": user_friendly(state.payee),
        })
    return 0


async def _sign_promise(args: argparse.Namespace) -> int:
    key = keyfile.load(Path(args.key))
    config = _load_channel(args.channel)
    if keys.public_bytes(key) != config.payer_key:
        raise UsageError("this key is not the channel's payer key")
    if not args.offline:
        async with await _chain(args) as chain:
            state = await PaymentChannel(chain, config).state()
        try:
            check_promise(state.claimed, args.cumulative, state.deposited)
        except PromiseError as exc:
            raise UsageError(f"refusing to sign: {exc}") from exc
    tag = Tag.COOP_CLOSE if args.cooperative_close else Tag.PROMISE
    promise = promises.sign(key, config.address(), config.channel_id, args.cumulative, tag)
    text = json.dumps(promise.to_json(), indent=2) + "\n"
    if args.out:
        _write_private(Path(args.out), text)
    else:
        print(text, end="")
    return 0


async def _claim(args: argparse.Namespace) -> int:
    promise = _load_promise(args.promise)
    async with await _chain(args) as chain:
        channel = PaymentChannel(chain, _load_channel(args.channel))
        if args.key:
            tx = await channel.claim_via(Wallet(chain, keyfile.load(Path(args.key))), promise)
        else:
            tx = await channel.claim(promise)
        _print({"claimed": str(promise.cumulative), "tx": _tx(tx) if tx else "already claimed"})
    return 0


async def _close(args: argparse.Namespace) -> int:
    key = keyfile.load(Path(args.key))
    async with await _chain(args) as chain:
        tx = await PaymentChannel(chain, _load_channel(args.channel)).start_close(key)
        _print({"closing": True, "tx": _tx(tx)})
    return 0


async def _withdraw(args: argparse.Namespace) -> int:
    async with await _chain(args) as chain:
        tx = await PaymentChannel(chain, _load_channel(args.channel)).withdraw()
        _print({"withdrawn": True, "tx": _tx(tx)})
    return 0


async def _ledger(args: argparse.Namespace) -> int:
    if bool(args.channel_ref) == bool(args.address):
        raise UsageError("give NAMESPACE/NAME (a PaymentChannel) or --address (chain only)")
    async with await _chain(args) as chain:
        try:
            return await ledger_cli.run(args, chain)
        except ledger_cli.LedgerInputError as exc:
            raise UsageError(str(exc)) from exc


async def _coop_close(args: argparse.Namespace) -> int:
    promise = _load_promise(args.promise)
    async with await _chain(args) as chain:
        wallet = Wallet(chain, keyfile.load(Path(args.key)))
        tx = await PaymentChannel(chain, _load_channel(args.channel)).cooperative_close(
            wallet, promise
        )
        _print({"closed": True, "tx": _tx(tx)})
    return 0


Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except (UsageError, keyfile.KeyFileError, InvalidPromise) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE_ERROR
        except (ChainError, emulator.EmulatorError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return CHAIN_ERROR

    return handler


def _chain_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--endpoint", help="toncenter v2 or emulator base URL ($TONCENTER_API_KEY)")
    group.add_argument("--liteserver-config", help="TON global config JSON file (liteservers)")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ton_command", required=True, metavar="COMMAND")

    def command(name: str, fn: Command, text: str,
                chain: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        if chain:
            _chain_options(p)
        p.set_defaults(handler=_run(fn))
        return p

    p = command("keygen", _keygen, "generate an ed25519 key (payer key or wallet key)", False)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", help="write a PKCS#8 PEM file (mode 0600)")
    out.add_argument("--json-out", help="write the Secret-friendly JSON (mode 0600)")

    p = command("wallet", _wallet, "show the v4r2 wallet of a key: address, status, balance")
    p.add_argument("--key", required=True)

    p = command("faucet", _faucet, "fund an address on the emulator (test only)", False)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--address", required=True, type=_address)
    p.add_argument("--amount", required=True, type=_nanoton)

    p = command("deploy", _deploy, "open a channel from the payer's wallet with a first deposit")
    p.add_argument("--key", required=True, help="payer key (also owns the paying wallet)")
    p.add_argument("--payee", required=True, type=_address)
    p.add_argument("--amount", required=True, type=_nanoton)
    p.add_argument("--close-delay", type=int, default=DEFAULT_CLOSE_DELAY_S)
    p.add_argument("--out", required=True, help="channel file to write")

    p = command("topup", _topup, "add funds to a channel from the payer's wallet")
    p.add_argument("--key", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--amount", required=True, type=_nanoton)

    p = command("status", _status, "show a channel's on-chain state")
    p.add_argument("--channel", required=True)

    p = command("sign-promise", _sign_promise, "sign a cumulative promise with the payer key")
    p.add_argument("--key", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--cumulative", required=True, type=_nanoton)
    p.add_argument("--cooperative-close", action="store_true", help="sign a final close instead")
    p.add_argument("--offline", action="store_true", help="skip the on-chain deposit check")
    p.add_argument("--out", help="write the promise here (mode 0600) instead of stdout")

    p = command("claim", _claim, "claim a promise (external, or internal with --key)")
    p.add_argument("--channel", required=True)
    p.add_argument("--promise", required=True)
    p.add_argument("--key", help="payee-side wallet key: claim by internal message")

    p = command("close", _close, "start the payer's close (the payee can claim until the delay)")
    p.add_argument("--key", required=True)
    p.add_argument("--channel", required=True)

    p = command("withdraw", _withdraw, "refund the payer once the close delay has passed")
    p.add_argument("--channel", required=True)

    ledger_cli.arguments(command("ledger", _ledger, ledger_cli.HELP), _address)

    p = command("coop-close", _coop_close, "close at once: payee wallet + payer's close promise")
    p.add_argument("--key", required=True, help="the payee's wallet key")
    p.add_argument("--channel", required=True)
    p.add_argument("--promise", required=True)
