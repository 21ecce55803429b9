"""What the operator process sets up before kopf starts: a peering name without a passwd entry,
and log lines that carry the object, not kopf's settings."""

from __future__ import annotations

import getpass
import io
import json
import logging

import kopf
import pytest

from cocoon import logs
from cocoon.controllers import run


def test_peering_name_needs_no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.delenv("POD_ID", raising=False)
    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    monkeypatch.setattr(run.socket, "gethostname", lambda: "cocoon-operator-5d9f-x2x")
    run.name_for_peering()
    from kopf._core.engines import peering  # the function kopf calls when it starts

    assert peering.detect_own_id(manual=False) == "cocoon-operator-5d9f-x2x"


def test_pod_id_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "given")
    run.name_for_peering()
    assert run.os.environ["POD_ID"] == "given"


def test_object_log_lines_leave_out_kopfs_settings() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    base = logging.getLogger("test.kopf.object")
    base.handlers[:] = [handler]
    base.propagate = False
    base.setLevel(logging.INFO)
    body = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"}})
    from kopf._core.actions.loggers import ObjectLogger

    logger = ObjectLogger(body=body, settings=kopf.OperatorSettings())
    logger.logger = base
    logger.info("handled")
    line = stream.getvalue().strip()
    entry = json.loads(line)
    assert entry["message"] == "handled"
    assert entry["k8s_ref"]["name"] == "p"
    assert "settings" not in entry and "k8s_skip" not in entry
    assert len(line) < 600, line
