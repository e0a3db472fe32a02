"""What every object's metadata must be: names, namespaces, labels, annotations, owners; the format checks."""

from __future__ import annotations

import copy

import pytest

from controlplane.apiserver.strategies import apply_defaults, validate
from controlplane.apiserver.validation.meta import is_port_name, is_qualified_name
from proto.kinds import for_message
from proto.manifest import from_dict
from tests.test_validation_support import (
    DNS1123_SUBDOMAIN_MSG,
    MY_SERVICE,
    NGINX_POD,
    admit,
    errors_of,
    message_at,
    update_errors,
)

# ---------------------------------------------------------------- metadata


def test_names_follow_each_kinds_rule() -> None:
    bad = copy.deepcopy(NGINX_POD)
    bad["metadata"]["name"] = "Nginx"
    assert errors_of(bad) == [("metadata.name", f'Invalid value: "Nginx": {DNS1123_SUBDOMAIN_MSG}')]

    dotted = copy.deepcopy(NGINX_POD)
    dotted["metadata"]["name"] = "nginx.v1"
    assert errors_of(dotted) == []  # subdomains may have dots ...
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert "a lowercase RFC 1123 label must consist" in message_at(errors_of(namespace), "metadata.name")

    numeric = copy.deepcopy(MY_SERVICE)
    # ... and a Service name is a DNS label, which starts with a letter
    numeric["metadata"]["name"] = "1-service"
    assert "a DNS-1035 label must consist" in message_at(errors_of(numeric), "metadata.name")

    long_label = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a" * 64}}
    assert message_at(errors_of(long_label), "metadata.name") == (
        f'Invalid value: "{"a" * 64}": must be no more than 63 characters')


def test_name_is_required() -> None:
    nameless = copy.deepcopy(NGINX_POD)
    del nameless["metadata"]["name"]
    assert errors_of(nameless) == [("metadata.name", "Required value: name or generateName is required")]


def test_namespace_is_required_for_namespaced_kinds_and_forbidden_otherwise() -> None:
    obj = from_dict(copy.deepcopy(NGINX_POD))
    kind = for_message(obj)
    apply_defaults(kind, obj)
    assert validate(kind, obj, None) == [("metadata.namespace", "Required value")]

    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "namespace": "default"}}
    kind, obj = admit(node)
    assert validate(kind, obj, None) == [("metadata.namespace", "Forbidden: not allowed on this type")]


def test_label_keys_and_values() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    manifest["metadata"]["labels"] = {"example.com/tier": "web", "app": "", "bad key": "x", "ok": "-bad-"}
    errors = errors_of(manifest)
    assert [p for p, _ in errors] == ["metadata.labels", "metadata.labels"]
    assert errors[0][1].startswith(
        'Invalid value: "bad key": name part must consist of alphanumeric characters')
    assert errors[1][1].startswith('Invalid value: "-bad-": a valid label must be an empty string or consist')


def test_annotations_may_not_exceed_256_kib() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    manifest["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    assert errors_of(manifest) == [("metadata.annotations", "Too long: may not be more than 262144 bytes")]


def test_owner_references_need_identity_and_at_most_one_controller() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": True}
    manifest["metadata"]["ownerReferences"] = [ref, {**ref, "name": "web-2", "uid": ""}]
    errors = errors_of(manifest)
    assert errors[0] == ("metadata.ownerReferences[1].uid", 'Invalid value: "": must not be empty')
    assert errors[1][0] == "metadata.ownerReferences"
    assert "Only one reference can have Controller set to true" in errors[1][1]
    assert len(errors) == 2


def test_identity_fields_are_immutable() -> None:
    old = copy.deepcopy(NGINX_POD)
    old["metadata"].update(uid="a1", creationTimestamp="2024-01-01T00:00:00Z")
    new = copy.deepcopy(old)
    new["metadata"].update(name="other", uid="b2", creationTimestamp="2025-01-01T00:00:00Z")
    errors = update_errors(old, new)
    assert errors == [
        ("metadata.name", 'Invalid value: "other": field is immutable'),
        ("metadata.uid", 'Invalid value: "b2": field is immutable'),
        ("metadata.creationTimestamp", 'Invalid value: "2025-01-01T00:00:00Z": field is immutable'),
    ]


def test_labels_may_change_on_update() -> None:
    new = copy.deepcopy(NGINX_POD)
    new["metadata"]["labels"] = {"app": "nginx", "track": "canary"}
    assert update_errors(NGINX_POD, new) == []


# ---------------------------------------------------------------- format checks


@pytest.mark.parametrize(("key", "ok"), [
    ("app", True), ("app.kubernetes.io/name", True), ("example.com/My_Key.1", True),
    ("/name", False), ("Example.com/name", False), ("a/b/c", False), ("-app", False), ("a" * 64, False),
])
def test_qualified_names(key: str, ok: bool) -> None:
    assert (is_qualified_name(key) == []) is ok


@pytest.mark.parametrize(("name", "ok"), [
    ("http", True), ("http-alt", True), ("h2c", True), ("web--ui", False), ("8080", False), ("HTTP", False),
    ("a-very-long-port-name", False),
])
def test_iana_service_names(name: str, ok: bool) -> None:
    assert (is_port_name(name) == []) is ok
