"""The API benchmark's HTTP side: the apiserver's Kubernetes HTTP API as kubectl and client-go use it.

bench/api.py measures each figure through gRPC (`client.Client`), through the
HTTP API (this module) and straight against etcd. The HTTP client is what a
fast Python client would be: aiohttp with keep-alive connections (one per
request in flight, so 32 concurrent creates use 32 connections, as gRPC's
32 concurrent calls share its one channel), JSON bodies in and out through
orjson, every answer decoded into dicts (as the gRPC client decodes its
answers into messages), so both columns end with the objects in hand.

`kinds_lookup` shows what a request costs as a function of the kinds table:
the router maps a path to its kind by dict lookups (requestinfo.parse splits
the path; discovery.resolve looks up (group, version, resource) in a dict
built once from proto/kinds.py), so the first kind of the table and the last
cost the same, and adding kinds adds nothing per request.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from controlplane.apiserver.http import discovery, requestinfo
from proto import kinds

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
TABLE_HEADERS = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


def decode(raw: bytes) -> Any:
    """JSON into dicts with the garbage collector paused, as a client decoding big lists should.

    A decoded tree has no cycles, yet building 10,000 pods' dicts (~600,000 objects)
    sets off collections that walk the whole heap again and again: 330 ms to decode
    a 14 MB list instead of 85 ms, more than the apiserver spends answering it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(raw)
    finally:
        if enabled:
            gc.enable()


class HttpError(RuntimeError):
    """An answer the benchmark did not expect (it stops the run: figures of failures mean nothing)."""


class HttpApi:
    """Pods through the Kubernetes HTTP API on the apiserver's `--http-listen` (the local admin)."""

    def __init__(self, base_url: str, connections: int) -> None:
        self.base_url = base_url
        # No decompression or cookies to handle; keep-alive is aiohttp's default.
        self._session = aiohttp.ClientSession(
            base_url, connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, expect: int, *, body: bytes | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        async with self._session.request(method, path, data=body, headers=headers or JSON_HEADERS) as resp:
            data = await resp.read()
            if resp.status != expect:
                raise HttpError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return decode(data)

    async def create(self, namespace: str, body: bytes) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/api/v1/namespaces/{namespace}/pods", 201, body=body)
        return result

    async def update(self, namespace: str, name: str, body: bytes) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("PUT", f"/api/v1/namespaces/{namespace}/pods/{name}", 200,
                                                  body=body)
        return result

    async def get(self, path: str, expect: int = 200) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", path, expect)
        return result

    async def list(self, namespace: str, *, limit: int = 0, table: bool = False) -> tuple[int, str]:
        """Every pod in `namespace` (following `continue`), as objects or Table rows: (count, resourceVersion)."""
        count, token, version = 0, "", ""
        while True:
            params = {k: v for k, v in (("limit", str(limit) if limit else ""), ("continue", token)) if v}
            async with self._session.get(f"/api/v1/namespaces/{namespace}/pods", params=params,
                                         headers=TABLE_HEADERS if table else JSON_HEADERS) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise HttpError(f"list: {resp.status} {raw[:300]!r}")
            data = decode(raw)
            count += len(data["rows" if table else "items"])
            version = version or data["metadata"]["resourceVersion"]
            token = data["metadata"].get("continue", "")
            if not token:
                return count, version

    async def watch_due_times(self, namespace: str, resource_version: str, annotation: str
                              ) -> AsyncGenerator[int, None]:
        """`annotation` of every pod the watch reports MODIFIED, one JSON line per event."""
        params = {"watch": "true", "resourceVersion": resource_version}
        async with self._session.get(f"/api/v1/namespaces/{namespace}/pods", params=params,
                                     headers=JSON_HEADERS) as resp:
            if resp.status != 200:
                raise HttpError(f"watch: {resp.status} {(await resp.read())[:300]!r}")
            async for line in resp.content:
                event = decode(line)
                if event["type"] == "MODIFIED":
                    yield int(event["object"]["metadata"]["annotations"][annotation])


# ---------------------------------------------------------------- cost per kind


@dataclass(frozen=True)
class KindCost:
    kind: kinds.Kind
    route_us: float  # requestinfo.parse + discovery.resolve, in process
    get_missing_ms: float  # p50 of an HTTP GET of a missing object of this kind, end to end


def object_path(kind: kinds.Kind, namespace: str, name: str) -> str:
    root = f"/api/{kind.version}" if not kind.group else f"/apis/{kind.group}/{kind.version}"
    scope = f"/namespaces/{namespace}" if kind.namespaced else ""
    return f"{root}{scope}/{kind.http_resource}/{name}"


def route_cost_us(path: str, rounds: int) -> float:
    """µs to turn a request path into its kind, as the router does for every request (best of 5 runs)."""
    query: dict[str, str] = {}
    best = math.inf
    for _ in range(5):  # the best run: other processes on the box only ever add time
        start = time.process_time_ns()
        for _ in range(rounds):
            info = requestinfo.parse("GET", path, query)
            found = discovery.resolve(info.api_group, info.api_version, info.resource)
        best = min(best, (time.process_time_ns() - start) / rounds / 1000)
        if found is None:
            raise HttpError(f"{path} resolves to no kind")
    return best


def ends_of_table() -> tuple[kinds.Kind, kinds.Kind]:
    """The first and the last stored, gettable kind of the table (the two ends of any linear search)."""
    gettable = [k for k in kinds.SERVED if not k.in_memory and "get" in k.verbs]
    return gettable[0], gettable[-1]
