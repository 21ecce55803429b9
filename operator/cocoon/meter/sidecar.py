"""The meter's container in a pool's pod, for the Deployment renderer.

Ports: the meter owns the pod's public ports, HTTPS 8000 and gRPC over TLS 8001 (Triton's usual
numbers), plus admin 9100 (metrics, liveness, readiness; on the pod only, not in the pool's
Service). Its TLS and receipt keys are made in memory at start; it proves them with evidence from
the node agent's socket (node isolation) or from configfs-tsm inside its own pod VM (pod
isolation, `runtimeClassName`), and registers them with the operator using the pod's bound
ServiceAccount token (audience cocoon-operator). No key file is mounted. Triton must listen on
loopback only, on 18000/18001/18002 (`triton_listen_args`), so the Service can expose nothing
that bypasses metering. Readiness is Triton's (`/readyz` on the admin port asks Triton's
`/v2/health/ready` on loopback; see `admin` for why not through the TLS port); liveness
is the meter's own (`/livez`, after a startup probe), so a slow model or a slow start never gets
the meter restarted.
"""

from __future__ import annotations

from typing import Any

from cocoon import keys
from cocoon.meter.limits import Limits
from cocoon.meter.pricing import Price

HTTP_PORT = 8000
GRPC_PORT = 8001
ADMIN_PORT = 9100
TRITON_HTTP_PORT = 18000
TRITON_GRPC_PORT = 18001
TRITON_METRICS_PORT = 18002
JOURNAL_DIR = "/var/lib/cocoon-meter"
CREDITS_DIR = "/etc/cocoon-meter/credits"
CREDITS_FILE = "credits.json"
METER_SOCKET_DIR = "/var/run/cocoon/meter"
METER_SOCKET_FILE = "agent.sock"
TOKEN_DIR = "/var/run/secrets/cocoon"  # noqa: S105 - a mount path
TOKEN_FILE = "token"  # noqa: S105 - a file name
TOKEN_AUDIENCE = "cocoon-operator"  # noqa: S105 - an audience
TSM_ROOT = "/sys/kernel/config/tsm/report"
OPERATOR_CA_ENV = "COCOON_OPERATOR_CA_PEM"
MODELS_DIR = "/models"  # the model repository, read-only, when the meter needs the tokenizer
READINESS_PATH = "/readyz"  # on the admin port: Triton's readiness, asked on loopback
LIVENESS_PATH = "/livez"


def triton_listen_args() -> list[str]:
    """Flags that keep Triton on loopback ports the meter forwards to."""
    return [
        "--http-address=127.0.0.1",
        f"--http-port={TRITON_HTTP_PORT}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={TRITON_GRPC_PORT}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={TRITON_METRICS_PORT}",
    ]


def limit_args(limits: Limits) -> list[str]:
    """`cocoon meter serve` flags for `limits` (the names cli.py defines)."""
    return [
        *(f"--max-body-{endpoint.replace('_', '-')}={size}"
          for endpoint, size in limits.max_body_bytes.items()),
        f"--max-in-flight-per-channel={limits.max_in_flight_per_channel}",
        f"--header-timeout={limits.header_timeout:g}",
        f"--body-timeout={limits.body_timeout:g}",
    ]


def sidecar_spec(
    *,
    image: str,
    pool: str,
    price: Price,
    models: list[str],
    operator_url: str | None = None,
    journal_volume: str = "meter-journal",
    credits_volume: str = "meter-credits",
    socket_volume: str = "meter-socket",
    token_volume: str = "meter-token",  # noqa: S107 - a volume name
    pod_isolation: bool = False,
    operator_ca_pem: str | None = None,
    reserve_output_tokens: int = 256,
    reserve_input_tokens: int = 0,
    max_in_flight: int = 256,
    limits: Limits | None = None,
    resources: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    models_volume: str = "models",
) -> dict[str, Any]:
    """A Kubernetes container dict named "meter" for the pool's pod template.

    The caller provides the volumes: the journal (a PVC, so charges survive pod rescheduling;
    an emptyDir only loses unsettled usage if the pod is deleted), the agent's socket directory
    (node isolation), the projected token, and, when no `operator_url` is given (a meter run by
    hand), a credit file. In a cluster the meter polls the operator for credit and sends it
    signed usage instead.
    """
    args = [
        "meter",
        "serve",
        f"--pool={pool}",
        f"--upstream-http=http://127.0.0.1:{TRITON_HTTP_PORT}",
        f"--upstream-grpc=127.0.0.1:{TRITON_GRPC_PORT}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--admin-port={ADMIN_PORT}",
        f"--journal={JOURNAL_DIR}/journal.db",
        f"--operator-url={operator_url}"
        if operator_url
        else f"--credits={CREDITS_DIR}/{CREDITS_FILE}",
        f"--configfs-tsm={TSM_ROOT}"
        if pod_isolation
        else f"--evidence-socket={METER_SOCKET_DIR}/{METER_SOCKET_FILE}",
        *([f"--token-file={TOKEN_DIR}/{TOKEN_FILE}"] if operator_url else []),
        *price.cli_args(),
        f"--reserve-input-tokens={reserve_input_tokens}",
        f"--reserve-output-tokens={reserve_output_tokens}",
        f"--max-in-flight={max_in_flight}",
        *limit_args(limits or Limits()),
        *(f"--model={m}" for m in models),
        *([f"--tokenizer={MODELS_DIR}/{tokenizer}"] if tokenizer else []),
    ]
    return {
        "name": "meter",
        "image": image,
        "args": args,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            *([{"name": OPERATOR_CA_ENV, "value": operator_ca_pem}] if operator_ca_pem else []),
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": READINESS_PATH, "port": "metrics"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        # a slow start (a loaded node) is not a hung meter: liveness counts only after this
        "startupProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 90,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": journal_volume, "mountPath": JOURNAL_DIR},
            *(
                []
                if operator_url
                else [{"name": credits_volume, "mountPath": CREDITS_DIR, "readOnly": True}]
            ),
            *(
                []
                if pod_isolation
                else [{"name": socket_volume, "mountPath": METER_SOCKET_DIR}]
            ),
            *(
                [{"name": token_volume, "mountPath": TOKEN_DIR, "readOnly": True}]
                if operator_url
                else []
            ),
            *(
                [{"name": models_volume, "mountPath": MODELS_DIR, "readOnly": True}]
                if tokenizer
                else []
            ),
        ],
        "resources": resources
        or {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": keys.METER_GID,
            "runAsGroup": keys.METER_GID,
            "capabilities": {"drop": ["ALL"]},
        },
    }
