"""The meter's container in a pool's pod, for the Deployment renderer.

Ports: the meter owns the pod's public ports, HTTP 8000 and gRPC 8001 (Triton's usual numbers,
so KServe clients need no change), plus admin 9100 (metrics, usage reports, liveness). Triton
must listen on loopback only, on 18000/18001/18002 (`triton_listen_args`), so the Service can
expose nothing that bypasses metering. Readiness is Triton's (`/v2/health/ready` through the
meter, no credential needed); liveness is the meter's own (`/livez`), so a slow model never gets
the meter restarted.
"""

from __future__ import annotations

from typing import Any

from cocoon import keys
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
SIGNING_KEY_DIR = "/var/run/cocoon/workload-key"
MODELS_DIR = "/models"  # the model repository, read-only, when the meter needs the tokenizer
SIGNING_KEY_FILE = keys.WORKLOAD_KEY_FILE
READINESS_PATH = "/v2/health/ready"
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


def sidecar_spec(
    *,
    image: str,
    pool: str,
    price: Price,
    models: list[str],
    operator_url: str | None = None,
    journal_volume: str = "meter-journal",
    credits_volume: str = "meter-credits",
    signing_key_volume: str = "workload-key",
    reserve_output_tokens: int = 256,
    reserve_input_tokens: int = 0,
    max_in_flight: int = 256,
    resources: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    models_volume: str = "models",
) -> dict[str, Any]:
    """A Kubernetes container dict named "meter" for the pool's pod template.

    The caller provides the volumes: the journal (a PVC, so charges survive pod rescheduling;
    an emptyDir only loses unsettled usage if the pod is deleted), the workload key, and, when no
    `operator_url` is given (a meter run by hand), a credit file. In a cluster the meter polls
    the operator for credit and sends it signed usage instead.
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
        f"--signing-key={SIGNING_KEY_DIR}/{SIGNING_KEY_FILE}",
        *price.cli_args(),
        f"--reserve-input-tokens={reserve_input_tokens}",
        f"--reserve-output-tokens={reserve_output_tokens}",
        f"--max-in-flight={max_in_flight}",
        *(f"--model={m}" for m in models),
        *([f"--tokenizer={MODELS_DIR}/{tokenizer}"] if tokenizer else []),
    ]
    return {
        "name": "meter",
        "image": image,
        "args": args,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": READINESS_PATH, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
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
            {"name": signing_key_volume, "mountPath": SIGNING_KEY_DIR, "readOnly": True},
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
