"""Calling a webhook: where it is, how it is trusted, and a hard deadline on the answer.

A webhook's clientConfig is either a URL or an in-cluster Service. A Service
is resolved by the apiserver itself, as kube-apiserver does with
--enable-aggregator-routing: the Service's port gives the port name, its
EndpointSlices a ready endpoint address and the target port, and the
connection goes straight to that pod. Either way the server's certificate must
chain to the configuration's caBundle (the system's roots when it has none)
and name the URL's host, or for a Service `<name>.<namespace>.svc`.

Every call runs under the webhook's timeoutSeconds as a hard deadline
(asyncio.timeout around connect, send and read), so a webhook that hangs costs
one request its timeout and never holds the apiserver: other requests are
served meanwhile on the same loop. Failures are `CallError`s whose text is what
Kubernetes reports after `failed to call webhook: ` (`Post "https://...":
dial tcp 127.0.0.1:9443: connect: connection refused`, `context deadline
exceeded`), so operators can search for them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from google.protobuf.message import Message

from proto import admissionregistration_pb2, core_pb2, discovery_pb2, kinds

MAX_RESPONSE_BYTES = 3 * 1024 * 1024  # an AdmissionReview holds at most two objects of 1.5 MiB
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# One namespace's objects of a kind as stored now (the registry's stored_objects).
StoredObjects = Callable[[kinds.Kind, str], Awaitable[Sequence[Message]]]


class CallError(Exception):
    """The webhook could not be asked, or gave no usable answer; str() is Kubernetes' reason text."""


@dataclass(frozen=True)
class Target:
    """Where one call goes: the URL dialed, the name its certificate must carry, the URL as reported."""

    url: str
    server_hostname: str | None
    shown: str  # `https://svc.ns.svc:443/path`: the address errors name, as Kubernetes'


@functools.lru_cache(maxsize=64)
def _tls(ca_bundle: bytes) -> ssl.SSLContext:
    """A client TLS context trusting `ca_bundle` (or the system's roots when empty); cached per bundle."""
    if not ca_bundle:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=ca_bundle.decode(errors="replace"))


class EndpointResolver:
    """A Service reference to one ready endpoint `ip:port` of it, read from storage at each call."""

    def __init__(self, stored_objects: StoredObjects) -> None:
        self._stored = stored_objects

    async def resolve(self, ref: admissionregistration_pb2.AdmissionServiceReference) -> str:
        port = ref.port if ref.HasField("port") else 443
        service = await self._find(kinds.resolve("services"), ref.namespace, ref.name)
        if not isinstance(service, core_pb2.Service):
            raise CallError(f'services "{ref.name}" not found')
        if service.spec.type == "ExternalName":
            return f"{service.spec.external_name}:{port}"
        service_port = next((p for p in service.spec.ports if p.port == port), None)
        if service_port is None:
            raise CallError(f'no service port {port} found for service "{ref.name}"')
        slices = await self._stored(kinds.resolve("endpointslices"), ref.namespace)
        choices = [f"[{address}]:{slice_port.port}" if ":" in address else f"{address}:{slice_port.port}"
                   for endpoint_slice in slices
                   if isinstance(endpoint_slice, discovery_pb2.EndpointSlice)
                   and endpoint_slice.metadata.labels.get(SERVICE_NAME_LABEL) == ref.name
                   for slice_port in endpoint_slice.ports if slice_port.name == service_port.name
                   for endpoint in endpoint_slice.endpoints if _ready(endpoint)
                   for address in endpoint.addresses[:1]]
        if not choices:
            raise CallError(f'no endpoints available for service "{ref.name}"')
        return random.choice(choices)  # spreading calls over the endpoints

    async def _find(self, kind: kinds.Kind, namespace: str, name: str) -> Message | None:
        return next((o for o in await self._stored(kind, namespace)
                     if o.metadata.name == name), None)  # type: ignore[attr-defined]


def _ready(endpoint: discovery_pb2.Endpoint) -> bool:
    # An unset ready condition means ready, as EndpointSlice consumers read it.
    return not endpoint.conditions.HasField("ready") or endpoint.conditions.ready


class WebhookClient:
    """POSTs AdmissionReviews over HTTPS with one connection pool for every webhook."""

    def __init__(self, resolver: EndpointResolver) -> None:
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def target(self, config: admissionregistration_pb2.AdmissionWebhookClientConfig,
                     timeout_seconds: int) -> Target:
        shown = shown_url(config, timeout_seconds)
        if config.HasField("url"):
            return Target(shown, None, shown)
        ref = config.service
        path = ref.path if ref.HasField("path") else ""
        try:
            address = await self._resolver.resolve(ref)
        except CallError as exc:
            raise CallError(f'Post "{shown}": {exc}') from None
        return Target(f"https://{address}{path}?timeout={timeout_seconds}s", service_host(ref), shown)

    async def post(self, config: admissionregistration_pb2.AdmissionWebhookClientConfig, body: dict[str, Any],
                   timeout_seconds: int) -> Any:
        """The parsed JSON answer to `body`, within `timeout_seconds` all told, or CallError."""
        try:
            async with asyncio.timeout(timeout_seconds):
                target = await self.target(config, timeout_seconds)
                return await self._post(target, _tls(bytes(config.ca_bundle)), orjson.dumps(body))
        except TimeoutError:
            raise CallError(f'Post "{shown_url(config, timeout_seconds)}": context deadline exceeded') from None

    async def _post(self, target: Target, tls: ssl.SSLContext, payload: bytes) -> Any:
        session = self._session_now()
        try:
            async with session.post(target.url, data=payload, ssl=tls, server_hostname=target.server_hostname,
                                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                                    allow_redirects=False) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise CallError(f'Post "{target.shown}": the response is larger than {MAX_RESPONSE_BYTES} bytes')
                if response.status != 200:
                    raise CallError(f'Post "{target.shown}": {_http_failure(response.status)}')
        except aiohttp.ClientConnectorCertificateError as exc:
            raise CallError(f'Post "{target.shown}": tls: failed to verify certificate: '
                            f"{_verify_message(exc.certificate_error)}") from None
        except aiohttp.ClientConnectorError as exc:
            raise CallError(f'Post "{target.shown}": dial tcp {exc.host}:{exc.port}: connect: '
                            f"{_os_error(exc)}") from None
        except aiohttp.ClientError as exc:
            raise CallError(f'Post "{target.shown}": {exc or type(exc).__name__}') from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CallError(f"couldn't get version/kind; json parse error: {exc}") from None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Made on first use, inside the apiserver's running loop.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def service_host(ref: admissionregistration_pb2.AdmissionServiceReference) -> str:
    """The name a Service's webhook certificate must carry."""
    return f"{ref.name}.{ref.namespace}.svc"


def shown_url(config: admissionregistration_pb2.AdmissionWebhookClientConfig, timeout_seconds: int) -> str:
    """The URL Kubernetes names in its errors, with the deadline it tells the webhook in the query."""
    query = f"?timeout={timeout_seconds}s"
    if config.HasField("url"):
        return config.url + query
    ref = config.service
    port = ref.port if ref.HasField("port") else 443
    return f"https://{service_host(ref)}:{port}{ref.path if ref.HasField('path') else ''}{query}"


def _os_error(exc: aiohttp.ClientConnectorError) -> str:
    """Go's words for a failed dial: `connection refused`, `no route to host`."""
    return (os.strerror(exc.errno) if exc.errno else str(exc.os_error)).lower()


def _verify_message(error: Exception) -> str:
    return str(getattr(error, "verify_message", "") or error)


def _http_failure(status: int) -> str:
    """client-go's words for a non-200 answer that is not a Status."""
    if status == 404:
        return "the server could not find the requested resource"
    return f"the server responded with the status code {status} but did not return more information"
