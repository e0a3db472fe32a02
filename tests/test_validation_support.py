"""Shared helpers of the validation tests (tests/test_validation_*.py): manifests in, errors out.

Each story builds an object from a manifest as a user would write it, lets the
apiserver's defaulting run (its kind's strategy), and checks what validation
says, down to the field path and Kubernetes' wording, since that is what the
user reads back. No server runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.message import Message

from controlplane.apiserver.strategies import apply_defaults, validate
from proto import core_pb2
from proto.kinds import Kind, for_message
from proto.manifest import from_dict

# Verbatim from kubernetes.io (tests/manifests/README.md says where each comes from).
MANIFESTS = Path(__file__).parent / "manifests"
NGINX_DEPLOYMENT = yaml.safe_load((MANIFESTS / "nginx-deployment.yaml").read_text())
MY_SERVICE = yaml.safe_load((MANIFESTS / "my-service.yaml").read_text())
NGINX_POD = yaml.safe_load((MANIFESTS / "simple-pod.yaml").read_text())

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


# ---------------------------------------------------------------- helpers


def admit(manifest: dict[str, Any]) -> tuple[Kind, Message]:
    """The object as the apiserver would validate it: namespace from the request, then defaults."""
    obj = from_dict(copy.deepcopy(manifest))
    kind = for_message(obj)
    meta = getattr(obj, "metadata", None)
    assert meta is not None
    if kind.namespaced and not meta.namespace:
        meta.namespace = "default"
    apply_defaults(kind, obj)
    return kind, obj


def errors_of(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    kind, obj = admit(manifest)
    return validate(kind, obj, None)


def paths_of(manifest: dict[str, Any]) -> list[str]:
    return [path for path, _ in errors_of(manifest)]


def update_errors(old_manifest: dict[str, Any], new_manifest: dict[str, Any]) -> list[tuple[str, str]]:
    kind, old = admit(old_manifest)
    _, new = admit(new_manifest)
    return validate(kind, new, old)


def message_at(errors: list[tuple[str, str]], path: str) -> str:
    found = [msg for p, msg in errors if p == path]
    assert found, f"no error at {path}: {errors}"
    return found[0]


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(NGINX_POD)
    if containers:
        manifest["spec"]["containers"] = list(containers)
    manifest["spec"].update(spec)
    return manifest


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx:1.14.2", **fields}


def deployment(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(NGINX_DEPLOYMENT)
    manifest["spec"].update(spec)
    return manifest


def service(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(MY_SERVICE)
    manifest["spec"].update(spec)
    return manifest


def as_pod(obj: Message) -> core_pb2.Pod:
    assert isinstance(obj, core_pb2.Pod)
    return obj
