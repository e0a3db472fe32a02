"""The schema side of CRDs without a server: structural checks, pruning, defaulting and validation.

The schema is the kind controller-gen writes for a typical operator (an int-or-string port, a map of
strings, a list-map of objects, enums, formats, nullable, CEL rules that are accepted and not run), so a
real operator's CRD is taken, and each check fails on the object that breaks it with Kubernetes' words.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.apiserver.crd import schema

OPERATOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Widget is the Schema for the widgets API",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "x-kubernetes-validations": [{"rule": "self.size > 0", "message": "size must be positive"}],
            "properties": {
                "size": {"type": "integer", "format": "int32", "minimum": 1},
                "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "mode": {"type": "string", "enum": ["Fast", "Safe"], "default": "Safe"},
                "since": {"type": "string", "format": "date-time", "nullable": True},
                "servers": {
                    "type": "array", "maxItems": 3,
                    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "weight": {"type": "integer", "default": 1},
                    }},
                },
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def test_a_controller_gen_schema_is_structural() -> None:
    assert schema.structural_errors(OPERATOR_SCHEMA, "s") == []


@pytest.mark.parametrize(("change", "path", "text"), [
    (lambda s: s["properties"]["spec"]["properties"]["size"].pop("type"), "s.properties[spec].properties[size].type",
     "Required value: must not be empty for specified object fields"),
    (lambda s: s["properties"]["spec"]["properties"]["servers"].pop("items"),
     "s.properties[spec].properties[servers].items", "Required value"),
    (lambda s: s["properties"]["spec"]["properties"]["port"]["anyOf"].append({"type": "boolean"}),
     "s.properties[spec].properties[port].anyOf[2].type", "must not be used inside of a logical junctor"),
    (lambda s: s.update(type="string"), "s.type", 'Invalid value: "string": must be object at the root'),
    (lambda s: s["properties"]["metadata"].update(properties={"labels": {"type": "object"}}),
     "s.properties[metadata]", "must not specify anything other than name and generateName"),
    (lambda s: s["properties"]["spec"].update(**{"x-kubernetes-preserve-unknown-fields": False}),
     "s.properties[spec].x-kubernetes-preserve-unknown-fields", "must be true or undefined"),
])
def test_non_structural_schemas_name_the_node(change: Any, path: str, text: str) -> None:
    bad = copy.deepcopy(OPERATOR_SCHEMA)
    change(bad)
    errors = schema.structural_errors(bad, "s")
    assert any(p == path and text in m for p, m in errors), errors


def widget(**spec: Any) -> dict[str, Any]:
    return {"spec": spec, "status": {"ready": True}}


def test_prune_default_and_validate_a_good_object() -> None:
    obj = widget(size=2, port="http", labels={"a": "b"}, since=None, unknown=1,
                 servers=[{"name": "one", "extra": True}], template={"apiVersion": "v1", "kind": "Pod", "x": 1})
    assert schema.prune(obj, OPERATOR_SCHEMA) == ["spec.unknown", "spec.servers[0].extra"]
    schema.default(obj, OPERATOR_SCHEMA)
    assert obj["spec"]["mode"] == "Safe" and obj["spec"]["servers"] == [{"name": "one", "weight": 1}]
    assert obj["spec"]["template"] == {"apiVersion": "v1", "kind": "Pod", "x": 1}  # preserved
    assert schema.validate(obj, OPERATOR_SCHEMA) == []


@pytest.mark.parametrize(("spec", "path", "text"), [
    ({}, "spec.size", "Required value"),
    ({"size": 0}, "spec.size", "Invalid value: 0: spec.size in body should be greater than or equal to 1"),
    ({"size": "2"}, "spec.size", 'Invalid value: "string": spec.size in body must be of type integer: "string"'),
    ({"size": 1, "port": 1.5}, "spec.port",
     'Invalid value: "number": spec.port in body must be of type integer,string: "number"'),
    ({"size": 1, "mode": "Slow"}, "spec.mode", 'Unsupported value: "Slow": supported values: "Fast", "Safe"'),
    ({"size": 1, "labels": {"a": 1}}, "spec.labels.a",
     'Invalid value: "integer": spec.labels.a in body must be of type string: "integer"'),
    ({"size": 1, "since": "yesterday"}, "spec.since",
     'Invalid value: "yesterday": spec.since in body must be of type date-time: "yesterday"'),
    ({"size": 1, "servers": [{"name": "A"}]}, "spec.servers[0].name",
     "spec.servers[0].name in body should match '^[a-z]+$'"),
    ({"size": 1, "servers": [{"name": "a"}] * 4}, "spec.servers", "Too many: 4: must have at most 3 items"),
    ({"size": 1, "template": {"x": 1}}, "spec.template.apiVersion", "Required value"),
])
def test_bad_objects_are_refused_naming_the_field(spec: dict[str, Any], path: str, text: str) -> None:
    errors = schema.validate(widget(**spec), OPERATOR_SCHEMA)
    assert any(p == path and text in m for p, m in errors), errors


def test_a_default_its_schema_refuses_is_named() -> None:
    bad = copy.deepcopy(OPERATOR_SCHEMA)
    bad["properties"]["spec"]["properties"]["mode"]["default"] = "Slow"
    bad["properties"]["spec"]["properties"]["size"]["default"] = "big"
    assert schema.default_errors(OPERATOR_SCHEMA, "s") == []
    errors = dict(schema.default_errors(bad, "s"))
    assert errors["s.properties[spec].properties[mode].default"] == \
        'Unsupported value: "Slow": supported values: "Fast", "Safe"'
    assert errors["s.properties[spec].properties[size].default"] == (
        'Invalid value: "string": s.properties[spec].properties[size].default in body must be of type integer: '
        '"string"')


def test_patterns_are_re2_as_kubernetes_go_regexp() -> None:
    # A pattern that backtracks exponentially in Python's `re` (2**40 steps on this value) answers at once
    # under RE2, as under Go's regexp: a CRD's author cannot make the apiserver spin on a crafted value.
    hostile = {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(a+)+$"}}}
    errors = schema.validate({"v": "a" * 40 + "b"}, hostile)
    assert errors == [("v", 'Invalid value: "' + "a" * 40 + 'b": v in body should match \'^(a+)+$\'')], errors
    # Go's syntax, not Python's: a lookahead is no regular expression there, and the CRD is refused for it.
    look = {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(?=a)a$"}}}
    assert [p for p, _ in schema.structural_errors(look, "s")] == ["s.properties[v].pattern"]
