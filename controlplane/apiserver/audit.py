"""The audit log: one JSON line per mutating request, in a size-rotated file.

Who did what to which object, whether it worked and how long it took — the
record an operator reads after an incident. Reads (get, list, watch) are not
logged: they change nothing and would drown the writes. Admission plugins may
add annotations to a request's record (Pod Security's `pod-security.kubernetes.io/audit-violations`,
say); they appear under `annotations`, as in Kubernetes' audit events.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from collections.abc import Mapping
from pathlib import Path

from controlplane.apiserver.auth import Attributes

MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"flotilla.audit.{path}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def record(self, attrs: Attributes, result: str, started: float, *,
               annotations: Mapping[str, str] | None = None) -> None:
        """Log one request that has finished (`result` is "OK" or the error's reason)."""
        if attrs.verb not in MUTATING:
            return
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": attrs.user.name,
            "groups": list(attrs.user.groups),
            "verb": attrs.verb,
            "resource": f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource,
            "apiGroup": attrs.api_group,
            "namespace": attrs.namespace,
            "name": attrs.name,
            "result": result,
            "latencyMs": round((time.monotonic() - started) * 1000, 2),
        }
        if annotations:
            event["annotations"] = dict(annotations)
        self._logger.info(json.dumps(event, separators=(",", ":")))
