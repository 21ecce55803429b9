"""Operator settings from the environment (the Helm chart sets these), read once at start-up."""

from __future__ import annotations

import json
import os

from cocoon.placement.render import Settings


def from_env(env: dict[str, str] | None = None) -> Settings:
    values = os.environ if env is None else env
    defaults = Settings()
    return Settings(
        meter_image=values.get("COCOON_METER_IMAGE", defaults.meter_image),
        meter_pull_policy=values.get("COCOON_METER_PULL_POLICY", defaults.meter_pull_policy),
        meter_socket_dir=values.get("COCOON_METER_SOCKET_DIR", defaults.meter_socket_dir),
        operator_ca_pem=values.get("COCOON_OPERATOR_CA_PEM") or None,
        cluster_domain=values.get("COCOON_CLUSTER_DOMAIN", defaults.cluster_domain),
        operator_url=values.get("COCOON_OPERATOR_URL", defaults.operator_url),
        meter_resources=json.loads(values["COCOON_METER_RESOURCES"])
        if values.get("COCOON_METER_RESOURCES")
        else None,
    )
