"""serviceaccounts/<name>/token: minting a bound token (`kubectl create token`, the kubelet's projected volumes).

As kube-apiserver's TokenREST.Create, the request is an authentication.k8s.io/v1
TokenRequest; the answer is the same object with `status.token` and
`status.expirationTimestamp`, never stored:

- `spec.expirationSeconds` defaults to an hour, must be at least 10 minutes and
  at most 2^32 seconds, and is cut to --service-account-max-token-expiration;
- `spec.audiences` defaults to the apiserver's own (--api-audiences);
- `spec.boundObjectRef` may bind the token to a Pod of the account's namespace
  (by name, and uid if given) that runs as this account: the token dies with it.

A node (`system:node:<n>`) may only ask for tokens bound to a pod scheduled on it,
as Kubernetes' NodeRestriction has it: its credentials cannot mint tokens for other
nodes' pods, nor unbound ones that outlive its pods.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.serviceaccount.tokens import BoundObject, ServiceAccountClaims, TokenIssuer
from controlplane.apiserver.validation.field import Errors, invalid, required
from controlplane.apiserver.validation.projected import MAX_TOKEN_SECONDS, MIN_TOKEN_SECONDS
from proto import authentication_pb2, core_pb2, manifest
from proto.errors import BadRequest, Conflict, Forbidden, Invalid
from proto.kinds import Kind

API_VERSION = "authentication.k8s.io/v1"
DEFAULT_SECONDS = 3600
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# The body's kind: not served on its own, only as the subresource's request and answer.
TOKEN_REQUEST = Kind("TokenRequest", "tokenrequests", "tokenrequest", API_VERSION, authentication_pb2.TokenRequest,
                     True, has_status=False)

# Reads the stored object of a core kind: (resource, namespace, name) -> message (NotFound if missing).
Getter = Callable[[str, str, str], Awaitable[Message]]


def parse(body: Any, name: str) -> authentication_pb2.TokenRequest:
    """A POSTed TokenRequest (JSON/YAML dict); a wrong kind or unknown field is refused naming it."""
    if not isinstance(body, dict):
        raise BadRequest(f"a TokenRequest must be a JSON object, not {type(body).__name__}")
    api_version, kind = body.get("apiVersion", API_VERSION), body.get("kind", "TokenRequest")
    if (api_version, kind) != (API_VERSION, "TokenRequest"):
        raise BadRequest(f"expected TokenRequest of {API_VERSION}, got {kind} of {api_version}")
    parsed = manifest.from_dict({**body, "apiVersion": API_VERSION, "kind": "TokenRequest"}, TOKEN_REQUEST,
                                what=f'TokenRequest.authentication.k8s.io "{name}"')
    assert isinstance(parsed, authentication_pb2.TokenRequest)
    return parsed


def validate(request: authentication_pb2.TokenRequest) -> Errors:
    errors: Errors = []
    seconds = request.spec.expiration_seconds
    if seconds < MIN_TOKEN_SECONDS:
        errors.append(invalid("spec.expirationSeconds", seconds, "may not specify a duration less than 10 minutes"))
    elif seconds > MAX_TOKEN_SECONDS:
        errors.append(invalid("spec.expirationSeconds", seconds, "may not specify a duration larger than 2^32 seconds"))
    ref = request.spec.bound_object_ref
    if request.spec.HasField("bound_object_ref"):
        if not ref.name:
            errors.append(required("spec.boundObjectRef.name"))
        if not ref.kind:
            errors.append(required("spec.boundObjectRef.kind"))
    return errors


async def create_token(issuer: TokenIssuer, get: Getter, user: UserInfo, namespace: str, name: str,
                       request: authentication_pb2.TokenRequest, *, max_seconds: int = 0,
                       now: Callable[[], float] = time.time) -> authentication_pb2.TokenRequest:
    """The TokenRequest answered: raises NotFound (no such account or pod), Invalid, BadRequest,
    Conflict (a bound pod's uid differs) or Forbidden (a node asking beyond its pods)."""
    what = f'TokenRequest.authentication.k8s.io "{name}"'
    if request.metadata.name and request.metadata.name != name:
        raise BadRequest(f"the name of the TokenRequest ({request.metadata.name}) does not match the name on the "
                         f"URL ({name})")
    if not request.spec.HasField("expiration_seconds"):
        request.spec.expiration_seconds = DEFAULT_SECONDS
    errors = validate(request)
    if errors:
        raise Invalid(what, errors)
    account = await get("serviceaccounts", namespace, name)
    assert isinstance(account, core_pb2.ServiceAccount)
    bound = await _bound_pod(get, namespace, name, request.spec.bound_object_ref) \
        if request.spec.HasField("bound_object_ref") else None
    _restrict_node(user, name, bound)
    seconds = request.spec.expiration_seconds
    if max_seconds:
        seconds = min(seconds, max_seconds)
    issued_at = int(now())
    audiences = tuple(request.spec.audiences) or issuer.audiences
    token = issuer.issue(ServiceAccountClaims(namespace, name, account.metadata.uid,
                                              None if bound is None else BoundObject("Pod", bound.metadata.name,
                                                                                     bound.metadata.uid),
                                              audiences, issued_at + seconds))
    answer = authentication_pb2.TokenRequest(api_version=API_VERSION, kind="TokenRequest")
    answer.metadata.name, answer.metadata.namespace = name, namespace
    answer.metadata.creation_timestamp.FromSeconds(issued_at)
    answer.spec.CopyFrom(request.spec)
    answer.spec.expiration_seconds = seconds
    del answer.spec.audiences[:]
    answer.spec.audiences.extend(audiences)
    if bound is not None:
        answer.spec.bound_object_ref.api_version = answer.spec.bound_object_ref.api_version or "v1"
        answer.spec.bound_object_ref.uid = bound.metadata.uid
    answer.status.token = token
    answer.status.expiration_timestamp.FromSeconds(issued_at + seconds)
    return answer


async def _bound_pod(get: Getter, namespace: str, account: str,
                     ref: authentication_pb2.BoundObjectReference) -> core_pb2.Pod:
    if ref.kind != "Pod" or ref.api_version not in ("", "v1"):
        raise BadRequest(f'cannot bind token for object of kind "{ref.kind}" in version "{ref.api_version}": '
                         "Flotilla binds tokens to Pods (v1) only")
    pod = await get("pods", namespace, ref.name)
    assert isinstance(pod, core_pb2.Pod)
    if ref.uid and ref.uid != pod.metadata.uid:
        raise Conflict(f'Operation cannot be fulfilled on pods "{ref.name}": the UID in the bound object reference '
                       f"({ref.uid}) does not match the UID in record. The object might have been deleted and then "
                       "recreated")
    runs_as = pod.spec.service_account_name or "default"
    if runs_as != account:
        raise BadRequest(f'cannot bind token for serviceaccount "{account}" to pod running with different '
                         "serviceaccount name.")
    return pod


def _restrict_node(user: UserInfo, account: str, bound: core_pb2.Pod | None) -> None:
    if NODES_GROUP not in user.groups or not user.name.startswith(NODE_PREFIX):
        return
    node = user.name[len(NODE_PREFIX):]
    if bound is None:
        raise Forbidden(f'serviceaccounts "{account}" is forbidden: node requested token not bound to a pod')
    if bound.spec.node_name != node:
        raise Forbidden(f'serviceaccounts "{account}" is forbidden: node requested token bound to a pod scheduled '
                        "on a different node")
