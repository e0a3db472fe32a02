"""Continue tokens: how a paged list resumes where its last page ended, in the same snapshot.

A token names the etcd key after the last item returned and the revision the
first page was read at, so every page of one list comes from one consistent
snapshot (Kubernetes' `continue`). It is opaque to clients: base64 of a small
JSON document, checked on the way back in so a token cannot be pointed at
another resource's keys.
"""

from __future__ import annotations

import base64
import json

from proto.errors import BadRequest


def encode_continue(key: bytes, revision: int) -> str:
    raw = json.dumps({"v": 1, "rv": revision, "start": base64.b64encode(key).decode()})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str, prefix: bytes) -> tuple[bytes, int]:
    """(start key, revision) of a token for the list under `prefix`; BadRequest for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        key, revision = base64.b64decode(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest("continue key is not valid: malformed token") from exc
    if not key.startswith(prefix):
        raise BadRequest("continue key is not valid: it belongs to another list")
    return key, revision
