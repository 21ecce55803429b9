"""`cocoon meter serve`: run the metering proxy in front of a loopback-only Triton."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
from pathlib import Path

from cocoon import logs
from cocoon.agent.collectors import TSM_ROOT
from cocoon.meter import pricing
from cocoon.meter.core import MeterConfig
from cocoon.meter.identity import Placement
from cocoon.meter.limits import ENDPOINTS, Limits
from cocoon.meter.server import ServeOptions, serve
from cocoon.meter.sidecar import (
    ADMIN_PORT,
    GRPC_PORT,
    HTTP_PORT,
    OPERATOR_CA_ENV,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="meter_command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="proxy, meter and journal calls to Triton")
    p.add_argument("--pool", required=True, help="namespace/name of the InferencePool")
    p.add_argument("--upstream-http", default=f"http://127.0.0.1:{TRITON_HTTP_PORT}")
    p.add_argument("--upstream-grpc", default=f"127.0.0.1:{TRITON_GRPC_PORT}")
    p.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - the pod's public face
    p.add_argument("--http-port", type=int, default=HTTP_PORT)
    p.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    p.add_argument("--admin-port", type=int, default=ADMIN_PORT, help="metrics, usage, livez")
    p.add_argument("--journal", type=Path, required=True, help="SQLite journal file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--operator-url",
                        help="poll the operator for credit and send it signed usage (in a cluster)")
    source.add_argument("--credits", type=Path, help="credit file (JSON) to watch (run by hand)")
    p.add_argument("--report-interval", type=float, default=1.0, metavar="S",
                   help="with --operator-url: send changed usage reports this often; a last "
                        "report is always sent when the meter stops (SIGTERM)")
    proof = p.add_mutually_exclusive_group(required=True)
    proof.add_argument("--evidence-socket", type=Path, metavar="PATH",
                       help="node isolation: the node agent's Unix socket, which gives evidence "
                            "bound to this meter's in-memory keys")
    proof.add_argument("--configfs-tsm", type=Path, metavar="PATH", nargs="?", const=TSM_ROOT,
                       help=f"pod isolation: configfs-tsm in this pod's VM (default {TSM_ROOT})")
    proof.add_argument("--simulated-tee", type=Path, metavar="DIR",
                       help="test clusters: a saved simulated TEE (only a policy naming its "
                            "test root trusts it)")
    proof.add_argument("--plaintext", action="store_true",
                       help="serve plain HTTP/h2c with no attestation: callers cannot verify "
                            "this meter; for local development and baselines only")
    p.add_argument("--simulated-gpus", type=int, default=1, help="GPUs the simulated TEE shows")
    p.add_argument("--node", default=os.environ.get("NODE_NAME", ""),
                   help="this pod's node (metadata in the evidence; default $NODE_NAME)")
    p.add_argument("--pod", default=os.environ.get("POD_NAME", ""),
                   help="this pod's name (metadata in the evidence; default $POD_NAME)")
    p.add_argument("--token-file", type=Path,
                   help="pod-bound ServiceAccount token (audience cocoon-operator) that "
                        "registers this meter with the operator")
    p.add_argument("--operator-ca", type=Path, help="CA bundle for an https operator URL")
    p.add_argument("--certificate-refresh-seconds", type=float, default=120.0,
                   help="re-issue the RA-TLS certificate with fresh evidence this often (keep "
                        "it below the policy's maxEvidenceAgeSeconds)")
    pricing.add_arguments(p)
    p.add_argument("--model", action="append", default=[],
                   help="a model the pool serves (bounds the metrics' model label); repeatable")
    p.add_argument("--reserve-input-tokens", type=int, default=0,
                   help="input tokens reserved per request before forwarding")
    p.add_argument("--reserve-output-tokens", type=int, default=256,
                   help="output tokens reserved per request before forwarding")
    p.add_argument("--max-in-flight", type=int, default=256, help="calls beyond this get 429")
    p.add_argument("--max-in-flight-per-channel", type=int, default=0,
                   help="calls one channel may have in flight (and bodies it may be sending); "
                        "beyond this it gets 429; 0 (default): a quarter of --max-in-flight")
    for endpoint, default in Limits().max_body_bytes.items():
        p.add_argument(f"--max-body-{endpoint.replace('_', '-')}", type=int, default=default,
                       metavar="BYTES", help=f"largest {endpoint} body (decompressed) before 413")
    p.add_argument("--header-timeout", type=float, default=Limits.header_timeout,
                   metavar="S", help="seconds to send request headers (and keep-alive idle)")
    p.add_argument("--body-timeout", type=float, default=Limits.body_timeout, metavar="S",
                   help="seconds to send a whole request body before 408")
    p.add_argument("--journal-sync", default="full", metavar="full|batch:MS",
                   help="full (default): fsync each group commit before answering; batch:MS: "
                        "answer once the OS has the row and fsync every MS ms (a killed meter "
                        "loses nothing; a power loss can lose the last MS ms of charges)")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER_JSON",
                   help="the pool model's tokenizer.json (Hugging Face format): the OpenAI "
                        "routes count prompts with it when the model does not report them")
    p.add_argument("--log-level", default="info")
    p.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=True,
                   help="run on uvloop (default; measured 2-30%% more throughput through the "
                        "meter, bench/results/meter.json); --no-uvloop for asyncio's own loop")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    price = pricing.from_namespace(args)
    options = ServeOptions(
        config=MeterConfig(
            pool=args.pool, price=price, models=tuple(args.model),
            reserve_input_tokens=args.reserve_input_tokens,
            reserve_output_tokens=args.reserve_output_tokens,
            max_in_flight=args.max_in_flight,
            limits=Limits(
                max_body_bytes={e: getattr(args, f"max_body_{e}") for e in ENDPOINTS},
                header_timeout=args.header_timeout,
                body_timeout=args.body_timeout,
                max_in_flight_per_channel=args.max_in_flight_per_channel,
            ),
            journal_sync=args.journal_sync,
            tokenizer=args.tokenizer,
        ),
        upstream_http=args.upstream_http,
        upstream_grpc=args.upstream_grpc,
        journal=args.journal,
        credits=args.credits,
        operator_url=args.operator_url,
        report_interval_seconds=args.report_interval,
        placement=Placement(pool=args.pool, pod=args.pod, node=args.node),
        evidence_socket=args.evidence_socket,
        configfs_tsm=args.configfs_tsm,
        simulated_tee=args.simulated_tee,
        simulated_gpus=args.simulated_gpus,
        plaintext=args.plaintext,
        certificate_refresh_seconds=args.certificate_refresh_seconds,
        token_file=args.token_file,
        operator_ca=args.operator_ca,
        operator_ca_pem=os.environ.get(OPERATOR_CA_ENV) or None,
        listen=args.listen,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        admin_port=args.admin_port,
    )
    if args.uvloop and importlib.util.find_spec("uvloop") is not None:
        importlib.import_module("uvloop").run(serve(options))
    else:
        asyncio.run(serve(options))
    return 0
