"""The `cocoon` command. Each area registers its own subcommands; this module only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# (subcommand, module that defines `register(subparsers)`, one-line help)
_AREAS: tuple[tuple[str, str, str], ...] = (
    ("crds", "cocoon.api.crdgen", "write the CustomResourceDefinitions generated from the models"),
    ("openapi", "cocoon.openapi", "write the OpenAPI descriptions of the meter and operator API"),
    ("operator", "cocoon.controllers.run", "run the operator (kopf)"),
    ("uninstall", "cocoon.controllers.uninstall", "helm pre-delete: free nodes, pools, channels"),
    ("attest", "cocoon.attestation.cli", "verify TDX, SEV-SNP and NVIDIA GPU evidence"),
    ("agent", "cocoon.agent.cli", "run the node agent that answers attestation challenges"),
    ("meter", "cocoon.meter.cli", "run the metering proxy in front of Triton"),
    ("ton", "cocoon.ton.cli", "TON payment-channel keys, deployment and settlement"),
    ("dev", "cocoon.devstack.cli", "bring the local control plane up or down"),
    ("call", "cocoon.client.call", "verify an endpoint yourself, then send it one request"),
    ("client", "cocoon.client.cli", "your own attestation policy and your receipts"),
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoon", description=__doc__)
    sub = parser.add_subparsers(dest="area", required=True, metavar="COMMAND")
    for name, module_name, help_text in _AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("cocoon"):
                continue  # an area not built yet
            raise
        area = sub.add_parser(name, help=help_text, description=help_text)
        module.register(area)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
