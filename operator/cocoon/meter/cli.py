"""`cocoon meter serve`: run the metering proxy in front of a loopback-only Triton."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
from pathlib import Path

from cocoon import logs
from cocoon.meter.core import MeterConfig
from cocoon.meter.pricing import Price
from cocoon.meter.server import ServeOptions, serve
from cocoon.meter.sidecar import (
    ADMIN_PORT,
    GRPC_PORT,
    HTTP_PORT,
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
    p.add_argument("--signing-key", type=Path, required=True,
                   help="node workload Ed25519 key (PKCS#8 PEM) that signs usage reports")
    p.add_argument("--price-per-request", default="0", help="nanoton")
    p.add_argument("--price-per-input-token", default="0", help="nanoton")
    p.add_argument("--price-per-output-token", default="0", help="nanoton")
    p.add_argument("--price-per-cached-input-token", default=None,
                   help="nanoton (default: the input token price)")
    p.add_argument("--price-per-reasoning-token", default=None,
                   help="nanoton (default: the output token price)")
    p.add_argument("--price-per-tokens", type=int, default=1, choices=(1, 1000, 1000000),
                   help="how many tokens the token prices are for")
    p.add_argument("--model", action="append", default=[],
                   help="a model the pool serves (bounds the metrics' model label); repeatable")
    p.add_argument("--reserve-input-tokens", type=int, default=0,
                   help="input tokens reserved per request before forwarding")
    p.add_argument("--reserve-output-tokens", type=int, default=256,
                   help="output tokens reserved per request before forwarding")
    p.add_argument("--max-in-flight", type=int, default=256, help="calls beyond this get 429")
    p.add_argument("--journal-sync", default="full", metavar="full|batch:MS",
                   help="full (default): fsync each group commit before answering; batch:MS: "
                        "answer once the OS has the row and fsync every MS ms (a killed meter "
                        "loses nothing; a power loss can lose the last MS ms of charges)")
    p.add_argument("--anonymous-channel", metavar="NS/NAME", default=None,
                   help="BENCHMARKS/OPEN DEMOS ONLY, never production tenants: charge calls "
                        "that carry no credential to this channel (it must be in --credits); "
                        "the operator never sets it")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER_JSON",
                   help="the pool model's tokenizer.json (Hugging Face format): the OpenAI "
                        "routes count prompts with it when the model does not report them")
    p.add_argument("--log-level", default="info")
    p.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=True,
                   help="run on uvloop (default; measured 2-30%% more throughput through the "
                        "meter, bench/results/meter.json); --no-uvloop for asyncio's own loop")
    p.set_defaults(handler=_serve)


def price_from_args(args: argparse.Namespace) -> Price:
    return Price(
        per_request=args.price_per_request,
        per_input_token=args.price_per_input_token,
        per_output_token=args.price_per_output_token,
        per_cached_input_token=args.price_per_cached_input_token,
        per_reasoning_token=args.price_per_reasoning_token,
        per_tokens=args.price_per_tokens,
    )


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    price = price_from_args(args)
    options = ServeOptions(
        config=MeterConfig(
            pool=args.pool, price=price, models=tuple(args.model),
            reserve_input_tokens=args.reserve_input_tokens,
            reserve_output_tokens=args.reserve_output_tokens,
            max_in_flight=args.max_in_flight,
            anonymous_channel=args.anonymous_channel,
            journal_sync=args.journal_sync,
            tokenizer=args.tokenizer,
        ),
        upstream_http=args.upstream_http,
        upstream_grpc=args.upstream_grpc,
        journal=args.journal,
        credits=args.credits,
        operator_url=args.operator_url,
        signing_key=args.signing_key,
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
