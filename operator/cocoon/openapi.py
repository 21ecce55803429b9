"""OpenAPI 3.1 descriptions of the meter's and the operator's HTTP routes.

Request bodies the code parses with a pydantic model take that model's JSON schema, so the
description cannot drift from what is enforced; the rest are described as the handlers read them.
They serve two readers: clients (docs/openapi/*.json, written by `cocoon openapi`), and the
property-based fuzzing that sends every route valid and invalid input and requires an answer, never
a 5xx (tests/test_openapi_fuzz.py). Every refusal has one documented JSON shape per server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cocoon.controllers.meter_api import CHALLENGE_PATH, REGISTER_PATH, Registration
from cocoon.controllers.usage_api import CREDIT_PATH, PROMISES_PATH, REPORTS_PATH
from cocoon.meter.usage_report import SignedUsageReport

Doc = dict[str, Any]
REF = "#/components/schemas/"

OPERATOR_ERROR: Doc = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["reason", "message"],
            "properties": {"reason": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
# KServe v2 clients parse `error` as a string; the code and bare message sit beside it
METER_ERROR: Doc = {
    "type": "object",
    "required": ["error", "code", "message"],
    "properties": {
        "error": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
    },
}
# the OpenAI routes answer as OpenAI does, so its SDKs raise their own typed errors
OPENAI_ERROR: Doc = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}
HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}
NAME = {"type": "string", "minLength": 1, "maxLength": 253}
ANY_OBJECT: Doc = {"type": "object"}


def _schema(model: type[BaseModel], components: Doc) -> Doc:
    """The model's JSON schema as a component; its nested definitions become components too."""
    schema = model.model_json_schema(by_alias=True, ref_template=REF + "{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF + model.__name__}


def _json(schema: Doc) -> Doc:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(ok: str, error: str, *codes: int, ok_schema: Doc | None = None) -> Doc:
    body = {"application/json": {"schema": {"$ref": REF + error}}}
    answers: Doc = {
        "200": {
            "description": ok,
            "content": {"application/json": {"schema": ok_schema or ANY_OBJECT}},
        }
    }
    for code in codes:
        answers[str(code)] = {
            "description": "refused: what is wrong and what to do",
            "content": body,
        }
    return answers


def _path_params(*names: str) -> list[Doc]:
    return [{"name": n, "in": "path", "required": True, "schema": NAME} for n in names]


def operator_document() -> Doc:
    """The operator API (agents, meters and payers call it; TLS in every deployment)."""
    components: Doc = {"Error": OPERATOR_ERROR}
    report = _schema(SignedUsageReport, components)
    registration = _schema(Registration, components)
    promise = {
        "type": "object",
        "required": ["cumulative", "signature"],
        "properties": {"cumulative": {"type": "string", "pattern": "^[0-9]+$"}, "signature": HEX},
    }
    evidence = {
        "type": "object",
        "required": ["nonce", "publicKey", "evidence"],
        "properties": {"nonce": HEX, "publicKey": HEX, "evidence": ANY_OBJECT},
    }
    paths: Doc = {
        "/healthz": {"get": {"responses": _answers("alive", "Error")}},
        REPORTS_PATH: {
            "post": {
                "summary": "A meter's signed, cumulative usage report for one channel.",
                "requestBody": _json(report),
                "responses": _answers("accepted", "Error", 400, 403, 409, 410, 413, 429),
            }
        },
        CREDIT_PATH: {
            "get": {
                "summary": "The credit document for one pool's meter.",
                "parameters": [
                    *_path_params("namespace", "pool"),
                    {"name": "meter", "in": "query", "required": False, "schema": HEX},
                ],
                "responses": _answers("the credit document", "Error", 400, 403, 404),
            }
        },
        PROMISES_PATH: {
            "post": {
                "summary": "A Client-signing payer's promise.",
                "parameters": _path_params("namespace", "name"),
                "requestBody": _json(promise),
                "responses": _answers("accepted", "Error", 400, 403, 404, 409),
            }
        },
        CHALLENGE_PATH: {"get": {"responses": _answers("a fresh nonce", "Error")}},
        REGISTER_PATH: {
            "post": {
                "summary": "A meter registers its attested keys (bearer: its pod's token).",
                "requestBody": _json(registration),
                "responses": _answers("registered", "Error", 400, 401, 403, 409),
            }
        },
        "/attestation/v1/nodes/{node}/evidence": {
            "post": {
                "summary": "A node agent's evidence (bearer: its pod's token).",
                "parameters": _path_params("node"),
                "requestBody": _json(evidence),
                "responses": _answers("the verdict", "Error", 400, 401, 403, 404, 409),
            }
        },
        "/attestation/v1/keys": {"get": {"responses": _answers("the JWKS of verdicts", "Error")}},
    }
    return _document("Cocoon operator API", paths, components)


def meter_document() -> Doc:
    """The meter in front of Triton: KServe v2 and OpenAI routes, billed to a bearer credential."""
    components: Doc = {"Error": METER_ERROR, "OpenAIError": OPENAI_ERROR}
    infer = {
        "type": "object",
        "properties": {
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "datatype": {"type": "string"},
                        "data": {"type": "array"},
                        "parameters": ANY_OBJECT,
                    },
                },
            },
            "outputs": {"type": "array", "items": ANY_OBJECT},
            "parameters": ANY_OBJECT,
        },
    }
    generate = {
        "type": "object",
        "properties": {
            "text_input": {"type": "string"},
            "max_tokens": {"type": "integer"},
            "parameters": ANY_OBJECT,
        },
    }
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                },
            },
            "max_tokens": {"type": "integer"},
            "stream": {"type": "boolean"},
        },
    }
    completion = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string"},
            "prompt": {"type": "string"},
            "max_tokens": {"type": "integer"},
            "stream": {"type": "boolean"},
        },
    }
    billed = (400, 401, 402, 403, 404, 408, 413, 429, 502)
    model = _path_params("model")
    paths: Doc = {}
    for base, params in (
        ("/v2/models/{model}", model),
        ("/v2/models/{model}/versions/{version}", [*model, *_path_params("version")]),
    ):
        for route, body in (
            ("infer", infer),
            ("generate", generate),
            ("generate_stream", generate),
        ):
            paths[f"{base}/{route}"] = {
                "post": {
                    "parameters": params,
                    "requestBody": _json(body),
                    "responses": _answers("the model's answer", "Error", *billed),
                    "security": [{"credential": []}],
                }
            }
        for route in ("", "/ready", "/config", "/stats"):
            paths[base + route] = {
                "get": {"parameters": params, "responses": _answers("Triton's", "Error", 404, 502)}
            }
    for route in ("/v2", "/v2/health/live", "/v2/health/ready"):
        paths[route] = {"get": {"responses": _answers("Triton's", "Error", 502)}}
    for route, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
        paths[route] = {
            "post": {
                "requestBody": _json(body),
                "responses": _answers("the completion", "OpenAIError", *billed),
                "security": [{"credential": []}],
            }
        }
    paths["/v1/models"] = {"get": {"responses": _answers("the served models", "OpenAIError")}}
    components_doc = _document("Cocoon meter", paths, components)
    components_doc["components"]["securitySchemes"] = {
        "credential": {"type": "http", "scheme": "bearer", "description": "the channel's token"}
    }
    return components_doc


def _document(title: str, paths: Doc, schemas: Doc) -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "v1alpha1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


DOCUMENTS = {"operator": operator_document, "meter": meter_document}


def render(name: str) -> str:
    """The document as shipped in docs/openapi/<name>.json."""
    return json.dumps(DOCUMENTS[name](), indent=2, sort_keys=True) + "\n"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("docs/openapi"), help="directory to write to"
    )
    parser.set_defaults(handler=_write)


def _write(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for name in DOCUMENTS:
        (args.out / f"{name}.json").write_text(render(name))
        print(args.out / f"{name}.json")
    return 0
