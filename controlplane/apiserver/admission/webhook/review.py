"""AdmissionReview v1: what the apiserver sends a webhook, and what it accepts back.

The request is Kubernetes' admission.k8s.io/v1 AdmissionReview, field for
field: a fresh uid, the kind and resource written (and the same again as
requestKind/requestResource, since every kind has one version here), the
subresource, name, namespace, operation, who asked (userInfo), the new and the
old object as Kubernetes JSON (proto/manifest.to_dict), dryRun, and the
operation's options (CreateOptions, UpdateOptions, DeleteOptions). A kind whose
stored message is not its JSON shape (custom resources' envelope) registers
its own codec with `register_codec`, so webhooks see, and patch, the object
its clients write.

The response must be an AdmissionReview v1 answering that uid; a mutating
webhook's patch must say patchType JSONPatch, and a validating webhook sends
none. `verify` turns the body into a `Response` or says, in Kubernetes' words,
why it is not one; the caller turns that into a failed call.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from google.protobuf.message import Message

from controlplane.apiserver.admission.webhook.matching import Attributes
from controlplane.apiserver.auth import UserInfo
from proto import manifest
from proto.kinds import Kind

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
JSON_PATCH = "JSONPatch"
_OPTIONS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
# Who the apiserver's own writes come from, as Kubernetes' loopback client.
APISERVER_USER = UserInfo("system:apiserver", ("system:masters", "system:authenticated"))


class InvalidResponse(Exception):
    """The webhook answered, but not with an AdmissionReview this apiserver can use."""


@dataclass
class Response:
    """A verified AdmissionReview response (Kubernetes' webhookrequest.AdmissionResponse)."""

    allowed: bool
    status: dict[str, Any] = field(default_factory=dict)  # metav1.Status, on a refusal
    patch: jsonpatch.JsonPatch | None = None
    audit_annotations: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


ToDict = Callable[[Message, Kind], dict[str, Any]]
FromDict = Callable[[dict[str, Any], Kind], Message]
_CODECS: dict[str, tuple[ToDict, FromDict]] = {}  # message full name -> how its objects look in JSON


def register_codec(message: type[Message], to_dict: ToDict, from_dict: FromDict) -> None:
    """How objects stored as `message` look to webhooks, where that is not proto/manifest's JSON."""
    _CODECS[message.DESCRIPTOR.full_name] = (to_dict, from_dict)


def object_json(obj: Message | None, kind: Kind) -> dict[str, Any] | None:
    """An object as a webhook reads it: its Kubernetes JSON."""
    if obj is None:
        return None
    codec = _CODECS.get(obj.DESCRIPTOR.full_name)
    return codec[0](obj, kind) if codec is not None else manifest.to_dict(obj)


def from_json(data: dict[str, Any], kind: Kind) -> Message:
    """A (patched) object's JSON back as the message the registry stores; Invalid names what is wrong."""
    codec = _CODECS.get(kind.message.DESCRIPTOR.full_name)
    return codec[1](data, kind) if codec is not None else manifest.from_dict(data, kind)


def request(attrs: Attributes, user: UserInfo | None, *, dry_run: bool) -> dict[str, Any]:
    """A new AdmissionReview for one call (each call gets its own uid)."""
    kind = attrs.kind
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    gvr = {"group": kind.group, "version": kind.version, "resource": kind.resource}
    obj = attrs.obj if attrs.obj is not None else attrs.old
    name = str(getattr(getattr(obj, "metadata", None), "name", ""))
    body: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "operation": attrs.operation,
        "userInfo": _user_info(user or APISERVER_USER),
        "object": object_json(attrs.obj, kind),
        "oldObject": object_json(attrs.old, kind),
        "dryRun": dry_run,
        "options": _options(attrs.operation, dry_run),
    }
    if attrs.subresource:
        body["subResource"] = body["requestSubResource"] = attrs.subresource
    if kind.namespaced:
        body["namespace"] = attrs.namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "request": body}


def _user_info(user: UserInfo) -> dict[str, Any]:
    info: dict[str, Any] = {"username": user.name}
    uid = getattr(user, "uid", "")
    if uid:
        info["uid"] = uid
    if user.groups:
        info["groups"] = list(user.groups)
    extra = getattr(user, "extra", None)
    if extra:
        info["extra"] = {k: list(v) for k, v in dict(extra).items()}
    return info


def _options(operation: str, dry_run: bool) -> dict[str, Any] | None:
    kind = _OPTIONS.get(operation)
    if kind is None:
        return None
    options: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    if dry_run:
        options["dryRun"] = ["All"]
    return options


def verify(uid: str, body: Any, *, mutating: bool) -> Response:
    """The response in `body` (parsed JSON) to the request `uid`, or InvalidResponse saying what is wrong."""
    if not isinstance(body, dict):
        raise InvalidResponse("expected an AdmissionReview object")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if (api_version, kind) != (API_VERSION, KIND):
        raise InvalidResponse(f"expected webhook response of {API_VERSION}, Kind={KIND}, "
                              f"got {api_version or ''}, Kind={kind or ''}")
    response = body.get("response")
    if not isinstance(response, dict):
        raise InvalidResponse("response was absent")
    if response.get("uid") != uid:
        raise InvalidResponse(f'expected response.uid="{uid}", got "{response.get("uid", "")}"')
    allowed = response.get("allowed")
    if not isinstance(allowed, bool):
        raise InvalidResponse("response.allowed must be a boolean")
    status = response.get("status") or {}
    if not isinstance(status, dict):
        raise InvalidResponse("response.status must be a Status object")
    result = Response(allowed, status, None, _strings(response.get("auditAnnotations"), "auditAnnotations"),
                      _warnings(response.get("warnings")))
    raw_patch, patch_type = response.get("patch"), response.get("patchType")
    if not raw_patch:
        if patch_type:
            raise InvalidResponse("webhook returned response.patchType but not response.patch")
        return result
    if not mutating:
        raise InvalidResponse("validating webhook may not return response.patch")
    if not patch_type:
        raise InvalidResponse("webhook returned response.patch but not response.patchType")
    if patch_type != JSON_PATCH:
        raise InvalidResponse(f'webhook returned invalid response.patchType of "{patch_type}"')
    result.patch = _patch(raw_patch)
    return result


def _patch(raw: Any) -> jsonpatch.JsonPatch:
    try:
        decoded = base64.b64decode(str(raw), validate=True)
        return jsonpatch.JsonPatch.from_string(decoded.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, jsonpatch.InvalidJsonPatch) as exc:
        raise InvalidResponse(f"received undecodable patch in webhook response: {exc}") from exc


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidResponse(f"response.{what} must map strings to strings")
    return {str(k): v for k, v in value.items()}


def _warnings(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise InvalidResponse("response.warnings must be a list of strings")
    return value
