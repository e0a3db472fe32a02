"""The dynamic client: objects of kinds this library has no message for, over the Kubernetes HTTP API.

client-go's dynamic client, for the few components that meet kinds the kinds
table does not know — custom resources, which the apiserver serves only over
HTTP (controlplane/apiserver/crd/). The garbage collector uses it to learn
whether a custom object that owns built-in ones still exists.

It reaches the cluster's HTTP API as the component's kubeconfig names it (the
cluster `server` URL, its CA, the client certificate or token), resolves a
kind to its resource through aggregated discovery (cached for `discovery_ttl`;
refreshed at once when a kind is not found, since CRDs come and go) and reads
objects as JSON dicts.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from client.config import ClientConfig
from proto.errors import ApiError, NotFound

if TYPE_CHECKING:
    import aiohttp

DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Resource:
    """A served resource of one group/version, as aggregated discovery lists it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    def path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{quote(namespace)}" if self.namespaced and namespace else ""
        return f"{base}{scope}/{self.plural}" + (f"/{quote(name)}" if name else "")


def _tls(config: ClientConfig, folder: Path) -> ssl.SSLContext | None:
    if not config.url.startswith("https://"):
        return None
    tls = ssl.create_default_context(cadata=(config.certificate_authority_data or b"").decode() or None)
    if config.client_certificate_data and config.client_key_data:
        # ssl loads a client certificate from files only: the client's own private directory.
        cert, key = folder / "cert.pem", folder / "key.pem"
        for path, data in ((cert, config.client_certificate_data), (key, config.client_key_data)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        tls.load_cert_chain(cert, key)
    return tls


class DynamicClient:
    """`async with DynamicClient(config) as dynamic: await dynamic.get(api_version, kind, ns, name)`."""

    def __init__(self, config: ClientConfig, *, timeout: float = 30.0, discovery_ttl: float = 30.0) -> None:
        if "://" not in config.url:
            raise ValueError("the dynamic client needs the cluster's HTTP API URL (a kubeconfig `server`)")
        self.config = config
        self.base = config.url.rstrip("/")
        self.timeout = timeout
        self.discovery_ttl = discovery_ttl
        self._folder = tempfile.TemporaryDirectory(prefix="flotilla-dynamic-")
        self._session: aiohttp.ClientSession | None = None
        self._resources: dict[tuple[str, str], Resource] = {}  # (group, kind) -> its resource
        self._discovered = float("-inf")

    async def __aenter__(self) -> DynamicClient:
        # aiohttp on first use: the controller manager imports this module, and only a garbage collector
        # with custom owners opens one (aiohttp's import is a fifth of a second of every start).
        import aiohttp

        tls = _tls(self.config, Path(self._folder.name))
        headers = {"User-Agent": "flotilla-dynamic"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                              connector=aiohttp.TCPConnector(ssl=tls if tls is not None else False))
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
        self._folder.cleanup()

    async def _call(self, path: str, accept: str = "application/json") -> Any:
        assert self._session is not None, "use `async with DynamicClient(...)`"
        async with self._session.get(self.base + path, headers={"Accept": accept}) as reply:
            body = await reply.json(content_type=None)
            if reply.status == 404:
                raise NotFound(str((body or {}).get("message") or f"{path} not found"))
            if reply.status >= 400:
                raise ApiError(f"{path}: {reply.status} {(body or {}).get('message', '')}".rstrip())
            return body

    async def _discover(self) -> None:
        found: dict[tuple[str, str], Resource] = {}
        for legacy, root in ((True, "/api"), (False, "/apis")):
            doc = await self._call(root, DISCOVERY)
            for group in doc.get("items", []):
                name = "" if legacy else group["metadata"]["name"]
                for version in group.get("versions", []):
                    for r in version.get("resources", []):
                        kind = r.get("responseKind", {}).get("kind", "")
                        # The first (preferred) version a kind is served in wins.
                        found.setdefault((name, kind), Resource(name, version["version"], r["resource"], kind,
                                                                r.get("scope") == "Namespaced"))
        self._resources, self._discovered = found, time.monotonic()

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind` in `api_version`'s group; NotFound if the cluster serves no such kind."""
        group, _, version = api_version.rpartition("/")
        key = (group, kind)
        if key not in self._resources or time.monotonic() - self._discovered > self.discovery_ttl:
            await self._discover()
        found = self._resources.get(key)
        if found is None:
            raise NotFound(f'no matches for kind "{kind}" in version "{api_version}"')
        return Resource(group, version, found.plural, kind, found.namespaced)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The object as the server serves it; NotFound if it (or its kind) does not exist."""
        resource = await self.resource(api_version, kind)
        obj: dict[str, Any] = await self._call(resource.path(namespace, name))
        return obj
