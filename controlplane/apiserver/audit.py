"""The audit log: one JSON line per mutating request and per read of a Secret, in a size-rotated file.

Who did what to which object, whether it worked and how long it took — the
record an operator reads after an incident. Reads (get, list, watch) are not
logged, except of Secrets: those change nothing but are what an intruder is
after, so who read which Secret is kept (Kubernetes' recommended policies log
secrets at the Metadata level). A record never holds an object's body, so a
Secret's value never reaches this file. Dry-run requests are marked
(`"dryRun": true`): they were checked, not carried out. Admission plugins may
add annotations to a request's record (Pod Security's
`pod-security.kubernetes.io/audit-violations`, say); they appear under
`annotations`, as in Kubernetes' audit events.

The file and its rotated copies are the owner's only (0600), as
kube-apiserver writes them: they name every user and object of the cluster.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import time
from collections.abc import Mapping
from pathlib import Path

from controlplane.apiserver.admission import warnings
from controlplane.apiserver.auth import Attributes

MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READS = frozenset({"get", "list", "watch"})
# Reads worth a record: who looked at which of these is evidence after a leak.
AUDITED_READS = frozenset({"secrets"})
FILE_MODE = 0o600


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files (the first and every one after a rotation) are 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # a file left by an older apiserver with a wider mode
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def audited(attrs: Attributes) -> bool:
    """Whether a request gets a record: every write, and reads of Secrets."""
    return attrs.verb in MUTATING or (attrs.verb in READS and attrs.resource in AUDITED_READS)


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"flotilla.audit.{path}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler = _PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def record(self, attrs: Attributes, result: str, started: float, *,
               annotations: Mapping[str, str] | None = None) -> None:
        """Log one request that has finished (`result` is "OK" or the error's reason)."""
        if not audited(attrs):
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
        if warnings.dry_run():  # the request's recording says so: the registry saw dryRun
            event["dryRun"] = True
        if annotations:
            event["annotations"] = dict(annotations)
        self._logger.info(json.dumps(event, separators=(",", ":")))
