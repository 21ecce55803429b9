"""Generate structural OpenAPI v3 CRDs from the pydantic models (the models are the truth)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import core_schema

from cocoon import VERSION
from cocoon.api.resources import RESOURCES, Resource

# JSON-schema keywords a structural Kubernetes schema may keep, beyond the x-kubernetes-* ones
_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "nullable",
}


class _Defaults(GenerateJsonSchema):
    """Show factory defaults too, so `kubectl explain` and the API server know them.

    A nested object defaults to `{}`, which lets the API server apply the defaults inside it,
    unless it has required fields: then the whole default object is written out.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            if any(f.is_required() for f in type(value).model_fields.values()):
                return value.model_dump(by_alias=True, mode="json", exclude_none=True)
            return {}
        return value if value is not None else NoDefault


class _NoAliases(yaml.SafeDumper):
    """Repeated sub-schemas are written out in full: `kubectl explain` and readers need them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def structural(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, schema_generator=_Defaults)
    defs: dict[str, JsonSchemaValue] = raw.pop("$defs", {})
    return _convert(raw, defs, defaults)


def _convert(
    node: JsonSchemaValue, defs: dict[str, JsonSchemaValue], defaults: bool
) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description and default win
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions are not structural: {branches}")
        node = {**_convert(branches[0], defs, defaults), **node}
        if node.get("default", 0) is None:
            del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, defaults) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _convert(value, defs, defaults)
        elif key in _KEEP and (defaults or key != "default"):
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if out.get("format") == "date-time":
        out["type"] = "string"
    first = [k for k in ("description", "type") if k in out]
    return {k: out[k] for k in (*first, *sorted(k for k in out if k not in first))}


def crd(resource: Resource) -> dict[str, Any]:
    spec = structural(resource.spec)
    status = structural(resource.status, defaults=False)
    spec.setdefault("description", resource.spec.__doc__ or "")
    status.setdefault("description", resource.status.__doc__ or "")
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    columns = []
    for column in resource.columns:
        entry: dict[str, Any] = {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
        }
        if column.priority:
            entry["priority"] = column.priority
        if column.description:
            entry["description"] = column.description
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/part-of": "cocoon"},
        },
        "spec": {
            "group": resource.crd_name.split(".", 1)[1],
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            },
            "scope": "Namespaced" if resource.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": resource.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            **(
                                {"x-kubernetes-validations": [resource.name_rule.rule()]}
                                if resource.name_rule
                                else {}
                            ),
                        }
                    },
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def render(resource: Resource) -> str:
    header = "# Generated by `cocoon crds` from the pydantic models; do not edit.\n"
    return header + yaml.dump(crd(resource), Dumper=_NoAliases, sort_keys=False, width=100)


def filename(resource: Resource) -> str:
    return f"{resource.crd_name}.yaml"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for resource in RESOURCES:
        path = directory / filename(resource)
        path.write_text(render(resource))
        written.append(path)
    return written


def check(directory: Path) -> list[str]:
    """Differences between the files in `directory` and the models, as unified diffs."""
    problems = []
    expected_names = {filename(r) for r in RESOURCES}
    for stray in sorted(p.name for p in directory.glob("*.yaml") if p.name not in expected_names):
        problems.append(f"{directory / stray}: not generated from any model; delete it")
    for resource in RESOURCES:
        path = directory / filename(resource)
        want = render(resource)
        have = path.read_text() if path.exists() else ""
        if have != want:
            diff = difflib.unified_diff(
                have.splitlines(keepends=True), want.splitlines(keepends=True), str(path), "models"
            )
            problems.append("".join(diff) or f"{path}: missing")
    return problems


def _run(args: argparse.Namespace) -> int:
    directories = [Path(d) for d in (args.output or ["crds"])]
    if args.check:
        failed = False
        for directory in directories:
            problems = check(directory)
            for problem in problems:
                sys.stderr.write(problem + "\n")
            if problems:
                failed = True
                sys.stderr.write(f"{directory} differs from the models: run `make crds`.\n")
        return 1 if failed else 0
    for directory in directories:
        for path in write(directory):
            sys.stdout.write(f"wrote {path}\n")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        "-o",
        action="append",
        help="directory; repeatable (default: crds; the Helm chart keeps a copy too)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the directory differs from the models"
    )
    parser.set_defaults(handler=_run)
