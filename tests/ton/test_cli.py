"""`cocoon ton` end to end against the emulator, including the errors a user can act on."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from cocoon.cli import main
from cocoon.ton import emulator, keyfile
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON

pytestmark = pytest.mark.chain


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = main(["ton", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else {}), err


def keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> tuple[Path, str]:
    path = tmp_path / name
    code, out, _ = run(capsys, "keygen", "--out", str(path))
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path, str(out["wallet"])


def test_keygen_prints_a_secret_friendly_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ton", "keygen"]) == 0
    data = json.loads(capsys.readouterr().out)
    key = keyfile.from_seed_b64(data["privateKey"])
    assert keyfile.to_json(key) == json.dumps(data)


def test_json_key_file_is_private_and_loadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "key.json"
    code, out, _ = run(capsys, "keygen", "--json-out", str(path))
    assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyfile.load(path)
    assert out["publicKey"] == json.loads(path.read_text())["publicKey"]


def test_channel_lifecycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator_url: str
) -> None:
    url = ["--endpoint", emulator_url]
    payer_key, payer_wallet = keygen(tmp_path, capsys, "payer.pem")
    _, payee_wallet = keygen(tmp_path, capsys, "payee.pem")
    channel = str(tmp_path / "channel.json")
    deploy = ["deploy", *url, "--key", str(payer_key), "--payee", payee_wallet,
              "--amount", str(5 * TON), "--close-delay", "60", "--out", channel]

    code, _, err = run(capsys, *deploy)
    assert code == 1 and "send TON" in err, "an empty wallet says how to fix it"
    code, _, err = run(capsys, "status", *url, "--channel", channel)
    assert code == 1 and "not deployed" in err

    assert run(capsys, "faucet", *url, "--address", payer_wallet, "--amount", str(20 * TON))[0] == 0
    code, out, _ = run(capsys, *deploy)
    assert code == 0
    assert run(capsys, "topup", *url, "--key", str(payer_key), "--channel", channel,
               "--amount", str(TON))[0] == 0

    promise = str(tmp_path / "promise.json")
    sign = ["sign-promise", *url, "--key", str(payer_key), "--channel", channel]
    code, _, err = run(capsys, *sign, "--cumulative", str(100 * TON))
    assert code == 2 and "exceeds the deposit" in err
    assert run(capsys, *sign, "--cumulative", str(2 * TON), "--out", promise)[0] == 0
    code, out, _ = run(capsys, "claim", *url, "--channel", channel, "--promise", promise)
    assert code == 0 and out["claimed"] == str(2 * TON)
    code, out, _ = run(capsys, "claim", *url, "--channel", channel, "--promise", promise)
    assert out["tx"] == "already claimed"

    forged = json.loads(Path(promise).read_text())
    forged["cumulative"] = str(3 * TON)
    Path(promise).write_text(json.dumps(forged))
    code, _, err = run(capsys, "claim", *url, "--channel", channel, "--promise", promise)
    assert code == 2 and "bad signature" in err

    assert run(capsys, "close", *url, "--key", str(payer_key), "--channel", channel)[0] == 0
    code, _, err = run(capsys, "withdraw", *url, "--channel", channel)
    assert code == 1 and "delay" in err
    asyncio.run(emulator.travel(emulator_url, 60))
    assert run(capsys, "withdraw", *url, "--channel", channel)[0] == 0
    code, out, _ = run(capsys, "status", *url, "--channel", channel)
    assert out["state"] == "CLOSED" and out["claimed"] == str(2 * TON)
    assert Address(str(out["payee"])) == Address(payee_wallet)

    # the ledger, refolded from the chain alone, balances to the nanoton and names every fee
    code, out, _ = run(capsys, "ledger", *url, "--address", str(out["channel"]), "--json")
    assert code == 0 and out["ok"] is True and out["mismatches"] == []
    book = {k: int(v) for k, v in out["chain"]["ledger"].items()}  # type: ignore[index]
    assert [e["kind"] for e in out["entries"]] == [  # type: ignore[attr-defined]
        "deploy", "topup", "claim", "close", "withdraw"
    ]
    assert book["deposits"] == 6 * TON and book["claimed"] == 2 * TON and book["balance"] == 0
    assert book["fundingFees"] > 0 and book["channelFees"] > 0 and book["claimCharges"] > 0
    assert book["refunded"] == (
        book["deposits"] - book["claimed"] - (book["channelFees"] - book["claimCharges"])
    )
    assert book["paidOut"] == book["claimed"] - book["payeeFees"]
    code, _, err = run(capsys, "ledger", *url)
    assert code == 2 and "NAMESPACE/NAME" in err
    code, _, err = run(capsys, "ledger", *url, "nonamespace")
    assert code == 2 and "NAMESPACE/NAME" in err


def test_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "close", "--endpoint", "http://127.0.0.1:9", "--key",
                       str(tmp_path / "missing.pem"), "--channel", "x")
    assert code == 2 and "cocoon ton keygen" in err
    key, _ = keygen(tmp_path, capsys, "k.pem")
    code, _, err = run(capsys, "status", "--channel", str(key))
    assert code == 2 and "--endpoint" in err


def test_unreachable_endpoint_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, _ = keygen(tmp_path, capsys, "k.pem")
    code, _, err = run(capsys, "wallet", "--endpoint", "http://127.0.0.1:9", "--key", str(key))
    assert code == 1 and "endpoint up" in err
