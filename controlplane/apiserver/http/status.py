"""Every failure of the HTTP API as a meta/v1 Status: the one ApiError → HTTP mapping.

Clients read the Status, not the text: kubectl prints `Error from server
(<reason>): <message>`, and for 422 Invalid it prints `The <Kind> "<name>" is
invalid:` and one `* <field>: <message>` line per cause, from `details.kind`,
`details.name` and `details.causes`. A 429 TooManyRequests (an eviction its
PodDisruptionBudget refuses) names the budget's situation as a `DisruptionBudget`
cause, and when to come back (`details.retryAfterSeconds` and a `Retry-After`
header) if it knows. The Python client raises ApiException with the HTTP code and
reason; kopf and client-go retry on 409 Conflict and relist on 410 Expired. So
each ApiError's reason picks its code here, once, and handlers only raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from controlplane.apiserver.fieldmanager import ApplyConflict
from proto.errors import ApiError, Invalid, TooManyRequests

# Kubernetes' HTTP code for each Status reason (k8s.io/apimachinery/pkg/api/errors).
CODES: dict[str, int] = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NamespaceTerminating": 403,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "NotAcceptable": 406,
    "AlreadyExists": 409,
    "Conflict": 409,
    "Gone": 410,
    "Expired": 410,
    "RequestEntityTooLarge": 413,
    "UnsupportedMediaType": 415,
    "Invalid": 422,
    "TooManyRequests": 429,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "Timeout": 504,
}
# Flotilla reasons Kubernetes spells differently on the wire.
_WIRE_REASON = {"NamespaceTerminating": "Forbidden"}
# A cause's reason (metav1.CauseType) from the start of its message, as field.ErrorType prints them.
_CAUSE_TYPES = (
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Forbidden", "FieldValueForbidden"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ('unknown field "', "FieldValueInvalid"),
)
_WHAT = re.compile(r'^(?P<kind>\S+) "(?P<name>.*)"$')
# `pods "web" not found`, `deployments.apps "web" already exists`: the resource and name in a message.
_NAMED = re.compile(r'^(?P<resource>[a-z0-9.-]+) "(?P<name>[^"]*)"')

STATUS_CONTENT_TYPE = "application/json"


def code_of(err: ApiError) -> int:
    return CODES.get(err.reason, getattr(err, "http_code", 500))


def _cause_type(message: str) -> str:
    for prefix, cause in _CAUSE_TYPES:
        if message.startswith(prefix):
            return cause
    return "FieldValueInvalid"


def _cause(field: str, message: str, reason: str) -> dict[str, str]:
    # A cause without a field (a patch that does not apply) is only its message, as Kubernetes sends it.
    return {"reason": reason, "message": message, "field": field} if field else {"message": message}


def status_dict(err: ApiError, *, name: str = "", group: str = "", kind: str = "") -> dict[str, Any]:
    """The Status a client gets for `err`; `name`, `group` and `kind` (the resource) fill in its details."""
    details: dict[str, Any] = {}
    message = str(err)
    if isinstance(err, ApplyConflict):
        # Server-side apply: one cause per (field, manager), which kubectl prints under its advice.
        details["causes"] = [{"reason": err.cause_type, "message": m, "field": f} for f, m in err.causes]
    elif isinstance(err, Invalid):
        # kubectl prints `The <details.kind> "<details.name>" is invalid:` then one line per cause.
        what = _WHAT.match(err.what or "")
        if what:
            details["name"], details["kind"] = what["name"], what["kind"]
        if group:
            details["group"] = group
        details["causes"] = [_cause(f, m, _cause_type(m)) for f, m in err.causes]
        if err.what:  # else (a patch that does not apply) the message is already complete
            message = f"{err.what} is invalid: " + ", ".join(f"{f}: {m}" if f else m for f, m in err.causes)
    elif isinstance(err, TooManyRequests):
        # NewTooManyRequests names no object; an eviction adds its budget as a cause (policyv1.DisruptionBudgetCause).
        if err.causes:
            details["causes"] = [{"reason": reason, "message": text} for reason, text in err.causes]
        if err.retry_after_seconds > 0:
            details["retryAfterSeconds"] = err.retry_after_seconds
    else:
        named = _NAMED.match(message)
        if name or named:
            details["name"] = name or (named["name"] if named else "")
        if group:
            details["group"] = group
        if kind or named:
            details["kind"] = kind or (named["resource"].partition(".")[0] if named else "")
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _WIRE_REASON.get(err.reason, err.reason),
        "code": code_of(err),
    }
    if details:
        status["details"] = details
    return status


def status_response(err: ApiError, *, headers: Mapping[str, str] | None = None, **details: str) -> web.Response:
    """`err` as the HTTP answer: its code, and the Status as JSON."""
    body = status_dict(err, **details)
    retry_after = body.get("details", {}).get("retryAfterSeconds", 0)
    if retry_after:  # kube-apiserver's ErrorNegotiated says it in the header too
        headers = {**(headers or {}), "Retry-After": str(retry_after)}
    return web.Response(status=body["code"], body=orjson.dumps(body), content_type=STATUS_CONTENT_TYPE,
                        headers=headers)


def success_status(details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Status a delete of a collection (or an object already gone) answers with."""
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        status["details"] = details
    return status
