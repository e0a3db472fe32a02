"""Projected volumes: several sources in one directory, the `kube-api-access-*` volume among them.

As Kubernetes' projected volume plugin, one volume gathers files from:

- `serviceAccountToken`: a token for the pod's service account, bound to the pod,
  requested from the apiserver (TokenRequest, serviceaccounts/<sa>/token) with the
  node's credentials; the apiserver only grants a node tokens for pods bound to it;
- `configMap` and `secret`: their keys, as configMap and secret volumes (projection.py);
- `downwardAPI`: the pod's own metadata (namespace, name, uid, labels, annotations).

Tokens are kept by `TokenManager` and requested again once 80% of their lifetime has
passed (or 24 hours, whichever is sooner), as the kubelet's token manager does; every
refresh of a running pod re-writes the volume, so the file a client re-reads is
always a live token. The directory is a tmpfs, as Kubernetes', since it holds credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client import Client
from nodeagent.kubelet import atomic_writer
from nodeagent.kubelet.atomic_writer import FileProjection
from nodeagent.kubelet.volumes import projection
from nodeagent.kubelet.volumes.errors import ConfigError, SetUpError
from proto import core_pb2
from proto.errors import ApiError

REFRESH_FRACTION = 0.8  # of a token's lifetime, after which it is requested again
MAX_TOKEN_AGE = 24 * 3600.0


@dataclass
class _Token:
    token: str
    issued: float
    expires: float

    def due(self, now: float) -> bool:
        lifetime = self.expires - self.issued
        return now - self.issued >= min(lifetime * REFRESH_FRACTION, MAX_TOKEN_AGE)


class TokenManager:
    """The node's service-account tokens for its pods, each requested again before it expires."""

    def __init__(self, client: Client, *, now: Callable[[], float] = time.time) -> None:
        self.client = client
        self.now = now
        self._tokens: dict[tuple[str, str, int], _Token] = {}  # (pod uid, audience, seconds) -> token

    async def token(self, pod: core_pb2.Pod, audience: str, seconds: int) -> str:
        key = (pod.metadata.uid, audience, seconds)
        cached = self._tokens.get(key)
        now = self.now()
        if cached is not None and not cached.due(now):
            return cached.token
        account = pod.spec.service_account_name or "default"
        try:
            answer = await self.client.create_token(pod.metadata.namespace, account,
                                                    audiences=[audience] if audience else [],
                                                    expiration_seconds=seconds, bound_pod=pod)
        except ApiError as err:
            if cached is not None and now < cached.expires:
                return cached.token  # keep serving the still-valid one; the next refresh tries again
            raise SetUpError(f'failed to fetch token: {err}') from None
        expires = answer.status.expiration_timestamp.ToSeconds() or now + seconds
        self._tokens[key] = _Token(answer.status.token, now, float(expires))
        return answer.status.token

    def forget(self, uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == uid]:
            del self._tokens[key]


def downward_value(pod: core_pb2.Pod, field_path: str) -> bytes:
    """A pod field as a downwardAPI file holds it (labels and annotations as key="value" lines)."""
    meta = pod.metadata
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = meta.labels if field_path == "metadata.labels" else meta.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items())).encode()
    for prefix, values in (("metadata.labels['", meta.labels), ("metadata.annotations['", meta.annotations)):
        if field_path.startswith(prefix) and field_path.endswith("']"):
            return values.get(field_path[len(prefix):-2], "").encode()
    simple = {"metadata.namespace": meta.namespace, "metadata.name": meta.name, "metadata.uid": meta.uid}
    if field_path not in simple:
        raise SetUpError(f"unsupported fieldPath: {field_path}")
    return simple[field_path].encode()


async def payload(objects: projection.ObjectData, tokens: TokenManager, pod: core_pb2.Pod,
                  source: core_pb2.ProjectedVolumeSource) -> dict[str, FileProjection]:
    """Every file of the volume, source by source."""
    default_mode = source.default_mode if source.HasField("default_mode") else projection.DEFAULT_MODE
    files: dict[str, FileProjection] = {}
    for item in source.sources:
        if item.HasField("service_account_token"):
            token = item.service_account_token
            value = await tokens.token(pod, token.audience, token.expiration_seconds or 3600)
            files[token.path] = FileProjection(value.encode(), default_mode)
        elif item.HasField("config_map") or item.HasField("secret"):
            is_config_map = item.HasField("config_map")
            ref = item.config_map if is_config_map else item.secret
            kind = "configmap" if is_config_map else "secret"
            optional = ref.optional if ref.HasField("optional") else False
            fetch = objects.config_map if is_config_map else objects.secret
            try:
                data, _ = await fetch(pod.metadata.namespace, ref.name, optional)
            except ConfigError as err:
                raise SetUpError(str(err)) from None
            files.update(projection.payload(projection.Source(kind, ref.name, list(ref.items), default_mode,
                                                              optional), data))
        elif item.HasField("downward_api"):
            for file in item.downward_api.items:
                if file.HasField("resource_field_ref"):
                    raise SetUpError("downwardAPI resourceFieldRef files are not supported on this node yet")
                mode = file.mode if file.HasField("mode") else default_mode
                files[file.path] = FileProjection(downward_value(pod, file.field_ref.field_path), mode)
    return files


async def project(objects: projection.ObjectData, tokens: TokenManager, pod: core_pb2.Pod,
                  volume: core_pb2.Volume, path: Path) -> bool:
    """Write the projected volume at `path` (a tmpfs of its own); True if its files changed."""
    files = await payload(objects, tokens, pod, volume.projected)
    await asyncio.to_thread(projection.secret_tmpfs, pod, path)
    try:
        return await asyncio.to_thread(atomic_writer.write, path, files)
    except (atomic_writer.ProjectionError, OSError) as err:
        raise SetUpError(str(err)) from None
