"""`cocoon agent run | simulated init | simulated policy`: the node agent and its simulated TEE.

`run` exits 0 when stopped (SIGTERM) or, with --once, when the challenge verified; 1 when the
operator rejected the evidence; 2 for bad usage, a node that cannot produce evidence, or a
submission the operator refused (bad request, token not for this node).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys, logs
from cocoon.agent import meter_socket, sources
from cocoon.agent.challenges import KubeChallenges
from cocoon.agent.collectors import TSM_ROOT, CollectorError
from cocoon.agent.loop import Agent, log
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.agent.submit import Outcome, Submitter
from cocoon.api.inferencepool import TeeType
from cocoon.attestation.verdict import Tee
from cocoon.kube import Kube

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2
NVML_HINT = " (pass --gpus 0 for a node without GPUs)"


class UsageError(Exception):
    """Bad flags or a node that cannot produce evidence: print the message, exit 2."""


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="answer this node's attestation challenges")
    _env_arg(run, "--node", "NODE_NAME", help="this node's name (default $NODE_NAME)")
    _env_arg(run, "--operator-url", "COCOON_OPERATOR_URL", help="the operator's API base URL")
    _env_arg(run, "--token-file", "COCOON_TOKEN_FILE", type=Path, help="bound SA token, re-read")
    _env_arg(run, "--key-file", "COCOON_KEY_FILE", type=Path, help="workload key (made if absent)")
    run.add_argument(
        "--meter-socket",
        type=Path,
        default=os.environ.get("COCOON_METER_SOCKET") or None,
        help="serve evidence for meters' own keys on this Unix socket (node isolation)",
    )
    run.add_argument(
        "--meter-socket-group",
        type=int,
        default=_int_env("COCOON_METER_SOCKET_GROUP"),
        help="group that may use the meter socket: the meters' (the socket hands out evidence, "
        "never a key)",
    )
    run.add_argument(
        "--ca-file", type=Path, default=os.environ.get("COCOON_OPERATOR_CA") or None,
        help="CA bundle for an https operator URL (default $COCOON_OPERATOR_CA)",
    )
    tee = run.add_mutually_exclusive_group(required=True)
    tee.add_argument("--simulated", type=Path, metavar="DIR", help="a saved simulated TEE")
    tee.add_argument(
        "--configfs-tsm", type=Path, metavar="PATH", nargs="?", const=TSM_ROOT,
        help=f"real hardware through configfs-tsm (default {TSM_ROOT})",
    )  # fmt: skip
    run.add_argument(
        "--gpus", type=int, help="simulated GPUs (default 1); on hardware only 0, for no NVML"
    )
    run.add_argument(
        "--simulate-tee", choices=[str(t) for t in TeeType], default=str(TeeType.SEV_SNP),
        help="which CPU TEE the simulated node is (default sev-snp)",
    )  # fmt: skip
    run.add_argument("--simulate-debug", action="store_true", help="report a debug guest")
    run.add_argument("--simulate-measurement", metavar="HEX", help="report this measurement")
    run.add_argument("--simulate-tamper", action="store_true", help="corrupt the signed report")
    run.add_argument("--poll-seconds", type=float, default=2.0, help="challenge poll interval")
    run.add_argument("--once", action="store_true", help="answer one challenge, exit by verdict")
    run.set_defaults(handler=_handle(_run))

    simulated = sub.add_parser("simulated", help="a per-cluster simulated TEE for test clusters")
    sim = simulated.add_subparsers(dest="simulated_command", required=True, metavar="COMMAND")
    init = sim.add_parser("init", help="generate simulated roots and keys into a directory")
    init.add_argument("--dir", type=Path, required=True, help="where to save (private keys 0600)")
    init.add_argument("--force", action="store_true", help="replace a saved simulated TEE")
    init.set_defaults(handler=_handle(_init))
    policy = sim.add_parser("policy", help="print an AttestationPolicy trusting that TEE")
    policy.add_argument("--dir", type=Path, required=True, help="a saved simulated TEE")
    policy.add_argument("--name", default="default", help="metadata.name (default: default)")
    policy.add_argument("--gpus", type=int, default=1, help="GPUs each node must attest")
    policy.set_defaults(handler=_handle(_policy))


def _env_arg(parser: argparse.ArgumentParser, flag: str, env: str, **kw: Any) -> None:
    """A flag that the DaemonSet can set through the environment instead."""
    value = os.environ.get(env)
    if value is not None and kw.get("type") is Path:
        value = Path(value)  # type: ignore[assignment]
    parser.add_argument(flag, default=value, required=value is None, **kw)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _handle(fn: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            result: int = fn(args)
        except UsageError as exc:
            print(f"cocoon agent: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return result

    return handler


def _source(args: argparse.Namespace) -> sources.BoundSource:
    knobs = (
        args.simulate_debug or args.simulate_tamper or args.simulate_measurement is not None
        or args.simulate_tee != str(TeeType.SEV_SNP)
    )  # fmt: skip
    if args.simulated is None:
        if knobs:
            raise UsageError("--simulate-* flags need --simulated")
        if args.gpus not in (None, 0):
            raise UsageError("--gpus N needs --simulated; real GPUs are enumerated through NVML")
        try:
            return sources.hardware(args.configfs_tsm, gpus=args.gpus is None)
        except CollectorError as exc:
            hint = NVML_HINT if "NVML" in str(exc) else ""
            raise UsageError(f"{exc}{hint}") from None
    gpus = 1 if args.gpus is None else args.gpus
    if gpus < 0:
        raise UsageError("--gpus must be 0 or more")
    measurement = DEFAULT_MEASUREMENT
    if args.simulate_measurement is not None:
        try:
            measurement = bytes.fromhex(args.simulate_measurement)
        except ValueError:
            raise UsageError("--simulate-measurement must be hex") from None
        if len(measurement) != len(DEFAULT_MEASUREMENT):
            raise UsageError(f"--simulate-measurement must be {len(DEFAULT_MEASUREMENT)} bytes")
    sim = _load_sim(args.simulated).for_node(args.node)
    tee = Tee.TDX if args.simulate_tee == str(TeeType.TDX) else Tee.SNP
    if tee is Tee.TDX and sim.tdx is None:
        raise UsageError(f"{args.simulated} holds no simulated TDX platform: re-run simulated init")
    return sources.simulated(
        sim,
        gpus=gpus,
        debug=args.simulate_debug,
        measurement=measurement,
        tamper=args.simulate_tamper,
        tee=tee,
    )


def _load_sim(directory: Path) -> SimulatedTee:
    try:
        return SimulatedTee.load(directory)
    except ValueError as exc:
        raise UsageError(
            f"{exc} (create one with `cocoon agent simulated init --dir DIR`)"
        ) from None


def _run(args: argparse.Namespace) -> int:
    if args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be positive")
    source = _source(args)
    try:
        key = keys.load_or_create(args.key_file)
    except (OSError, ValueError) as exc:
        raise UsageError(f"workload key {args.key_file}: {exc}") from None
    logs.configure()
    outcome = asyncio.run(_serve(args, source, key))
    if not args.once or outcome is Outcome.VERIFIED:
        return EXIT_OK
    return EXIT_REJECTED if outcome is Outcome.REJECTED else EXIT_ERROR


async def _serve(
    args: argparse.Namespace, source: sources.BoundSource, key: Ed25519PrivateKey
) -> Outcome | None:
    ssl_context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    kube = await Kube.connect()
    socket = (
        await meter_socket.serve(source, args.meter_socket, args.meter_socket_group)
        if args.meter_socket is not None
        else None
    )
    try:
        async with aiohttp.ClientSession() as session:
            submitter = Submitter(
                session, args.operator_url, args.node, args.token_file, ssl_context=ssl_context
            )
            agent = Agent(
                node=args.node,
                key=key,
                source=sources.for_node(source),
                submit=submitter.submit,
                fetch_challenge=KubeChallenges(kube, args.node),
                poll_seconds=args.poll_seconds,
            )
            log.info(
                "AgentStarted",
                extra={
                    "fields": {
                        "node": args.node,
                        "publicKey": agent.public_key.hex(),
                        "evidence": "simulated" if args.simulated else "configfs-tsm",
                        "operator": submitter.url,
                        "once": args.once,
                    }
                },
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agent.stop)
            return await agent.run(once=args.once)
    finally:
        if socket is not None:
            await socket.cleanup()
        await kube.close()


def _init(args: argparse.Namespace) -> int:
    sim = SimulatedTee.generate(now=datetime.now(UTC))
    try:
        sim.save(args.dir, overwrite=args.force)
    except FileExistsError as exc:
        raise UsageError(
            f"{exc}; pass --force to replace it (nodes and policy must follow)"
        ) from None
    print(
        f"simulated TEE saved in {args.dir}\n"
        f"  trust it:   cocoon agent simulated policy --dir {args.dir} | kubectl apply -f -\n"
        f"  give it to agents:   kubectl create secret generic cocoon-simulated-tee "
        f"--from-file={args.dir}"
    )
    return EXIT_OK


def _policy(args: argparse.Namespace) -> int:
    if args.gpus < 0:
        raise UsageError("--gpus must be 0 or more")
    document = _load_sim(args.dir).policy_document(args.name, gpus=args.gpus)
    sys.stdout.write(yaml.dump(document, Dumper=_BlockDumper, sort_keys=False))
    return EXIT_OK


class _BlockDumper(yaml.SafeDumper):
    """PEM certificates as `|` blocks, so the policy stays readable in `kubectl get -o yaml`."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
