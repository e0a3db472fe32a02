"""The API benchmark: what the apiserver costs on top of the etcd it stands on, over gRPC and HTTP.

    .venv/bin/python -m bench.api [--quick]

It starts a private etcd and apiserver (gRPC and `--http-listen`) on loopback in
a temporary directory, measures five things three ways in the same run, and
removes everything after:

- through the Kubernetes HTTP API, as kubectl and client libraries call it
  (bench/api_http.py: aiohttp, keep-alive, JSON through orjson);
- through the apiserver's gRPC API, with the typed client every Flotilla
  component uses (`client.Client`): the apiserver defaults, validates,
  encodes and writes to etcd;
- straight against etcd with aetcd, the apiserver's own etcd client, making the
  one etcd call the apiserver makes for the same request (a create-if-absent
  txn, a get, a range, a compare-revision txn, a watch with prev_kv) on values
  of exactly the bytes the apiserver stores.

The ratio gRPC / raw etcd is what the API layer costs: the extra gRPC hop,
protobuf decode and re-encode, defaults, validation, and the read before every
update. The ratio HTTP / gRPC is what the HTTP transport costs on top: JSON
instead of protobuf, aiohttp instead of grpc's C core. The machine has two cores shared by etcd, the
apiserver and this process, so all load comes from here, as asyncio tasks.

Writes at a fixed rate are open loop: write i is due at start + i/rate and is
started then, whatever the earlier writes are doing, and its latency counts
from when it was due, so a stall shows in the figures instead of slowing the
load (coordinated omission). The same writes carry their due time in an
annotation, which a watcher reads to measure watch delivery latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import itertools
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import aetcd
import orjson
from aetcd import rpc

from bench import api_watchers
from bench.api_http import HttpApi, ends_of_table, object_path, route_cost_us
from client import Client
from controlplane.apiserver.storage import prefix_end
from kctl.printers import format_table
from proto import core_pb2, kinds, manifest
from provision.processes import ApiServer, Etcd, free_port, start_apiserver, start_etcd

BENCH_NS = "bench"  # created, read and listed pods
WATCH_NS = "bench-watch"  # pods rewritten at a fixed rate under a watch
HTTP_NS = "bench-http"  # pods created through the HTTP API
T = TypeVar("T")
RAW = b"/bench/raw/"  # the baseline's own keys, beside the apiserver's /registry/
SENT = "bench.flotilla.io/due-ns"  # annotation: when the write was due (perf_counter_ns)
# A 10k-pod range is ~10 MB, over gRPC's 4 MiB default (docs/etcd.md).
RAW_OPTIONS = {"grpc.max_receive_message_length": 256 * 1024 * 1024}
CREATE_SLICES = 10  # creates alternate between the paths in this many slices (bench_creates)


@dataclass(frozen=True)
class Scale:
    pods: int  # created through each path, then read and listed
    in_flight: int  # concurrent creates
    gets: int  # sequential gets per path
    list_rounds: int  # the list figures are medians of this many
    page: int  # limit for the paginated list
    rate: float  # writes per second in the paced phase
    seconds: float  # length of the paced phase
    watch_pods: int  # pods the paced writes cycle through


FULL = Scale(pods=10_000, in_flight=32, gets=2_000, list_rounds=5, page=500, rate=200, seconds=10,
             watch_pods=200)
# --quick still lists 10,000 pods (the list goal's size), but reads less and paces for 3 s.
QUICK = Scale(pods=10_000, in_flight=32, gets=300, list_rounds=3, page=500, rate=200, seconds=3,
              watch_pods=200)


def pod_manifest(name: str, namespace: str) -> core_pb2.Pod:
    """A realistic ~1 KiB pod: the shape a Deployment's template would stamp out."""
    pod = manifest.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app": "checkout", "tier": "backend", "version": "v2.14.1",
                       "team": "payments", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                            "kubernetes.io/change-cause": "release 2.14.1: faster receipts"},
        },
        "spec": {
            "containers": [{
                "name": "checkout",
                "image": "registry.example.com/payments/checkout:v2.14.1",
                "args": ["--listen=:8080", "--metrics=:9090", "--log-level=info"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "DATABASE_URL", "value": "postgres://checkout@db.payments.svc:5432/checkout"},
                        {"name": "CACHE_URL", "value": "redis://cache.payments.svc:6379/0"},
                        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel.observability.svc:4317"},
                        {"name": "FEATURE_FLAGS", "value": "new-cart,fast-checkout,async-receipts"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                              "limits": {"cpu": "1", "memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout", "readOnly": True}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": "checkout-config"}}],
            "terminationGracePeriodSeconds": 30,
        },
    })
    assert isinstance(pod, core_pb2.Pod)
    return pod


def pod_name(i: int) -> str:
    return f"pod-{i:05d}"


def decode_pod(raw: bytes) -> core_pb2.Pod:
    """What every reader of the baseline does, as the typed client does for the apiserver's readers."""
    pod = core_pb2.Pod()
    pod.ParseFromString(raw)
    return pod


# ---------------------------------------------------------------- the baseline


class RawEtcd:
    """The baseline: the apiserver's etcd calls made directly with aetcd, and nothing else."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self._etcd = aetcd.Client(host=parsed.hostname or "127.0.0.1", port=parsed.port or 2379,
                                  options=RAW_OPTIONS)

    async def connect(self) -> None:
        await self._etcd.connect()

    async def close(self) -> None:
        await self._etcd.close()

    async def create(self, key: bytes, value: bytes) -> int:
        """Put `key` if absent (the apiserver's create txn); returns the write's revision."""
        reply = await self._etcd.kvstub.Txn(rpc.TxnRequest(
            compare=[rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE,
                                 create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))]))
        if not reply.succeeded:
            raise RuntimeError(f"{key!r} exists")
        return int(reply.header.revision)

    async def update(self, key: bytes, value: bytes, revision: int) -> int:
        """Put `key` if still at `revision` (the apiserver's update txn), retrying on the latest."""
        while True:
            reply = await self._etcd.kvstub.Txn(rpc.TxnRequest(
                compare=[rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD,
                                     mod_revision=revision)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))]))
            if reply.succeeded:
                return int(reply.header.revision)
            revision = int(reply.responses[0].response_range.kvs[0].mod_revision)

    async def get(self, key: bytes) -> core_pb2.Pod:
        reply = await self._etcd.kvstub.Range(rpc.RangeRequest(key=key))
        return decode_pod(reply.kvs[0].value)

    async def get_bytes(self, key: bytes) -> bytes:
        reply = await self._etcd.kvstub.Range(rpc.RangeRequest(key=key))
        return bytes(reply.kvs[0].value)

    async def revision(self) -> int:
        reply = await self._etcd.kvstub.Range(rpc.RangeRequest(key=b"\0", limit=1, count_only=True))
        return int(reply.header.revision)

    async def range(self, prefix: bytes, *, limit: int = 0) -> int:
        """Read every pod under `prefix`, in pages of `limit` from one revision; returns the count."""
        start, end, revision, count = prefix, prefix_end(prefix), 0, 0
        while True:
            reply = await self._etcd.kvstub.Range(rpc.RangeRequest(
                key=start, range_end=end, limit=limit, revision=revision))
            count += len([decode_pod(kv.value) for kv in reply.kvs])
            revision = revision or int(reply.header.revision)
            if not reply.more or not reply.kvs:
                return count
            start = reply.kvs[-1].key + b"\0"

    async def watch_due_times(self, prefix: bytes, start_revision: int) -> AsyncGenerator[int, None]:
        """The SENT annotation of every pod written under `prefix` (decoded, as a client would)."""
        watch = await self._etcd.watch(prefix, range_end=prefix_end(prefix), start_revision=start_revision,
                                       prev_kv=True)
        try:
            async for event in watch:
                yield int(decode_pod(event.kv.value).metadata.annotations[SENT])
        finally:
            await watch.cancel()


async def api_watch_due_times(client: Client, resource_version: str) -> AsyncGenerator[int, None]:
    """The SENT annotation of every pod the apiserver reports MODIFIED in WATCH_NS."""
    async for event in client.watch(core_pb2.Pod, WATCH_NS, resource_version=resource_version):
        if event.type == "MODIFIED" and event.object is not None:
            yield int(event.object.metadata.annotations[SENT])


# ---------------------------------------------------------------- load shapes


async def closed_loop(count: int, in_flight: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Run op(0) .. op(count-1) from `in_flight` workers, each starting its next when one ends; ops/s."""
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - start)


async def sequential(count: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    """Latencies (ms) of op(0) .. op(count-1), one at a time."""
    latencies = []
    for i in range(count):
        start = time.perf_counter_ns()
        await op(i)
        latencies.append((time.perf_counter_ns() - start) / 1e6)
    return latencies


async def paced(rate: float, count: int, write: Callable[[int, int], Awaitable[object]]) -> list[float]:
    """Start write(i, due_ns) when due at `rate`/s, open loop; latencies (ms) from when each was due."""
    latencies: list[float] = []

    async def one(i: int, due: int) -> None:
        await write(i, due)
        latencies.append((time.perf_counter_ns() - due) / 1e6)

    start, interval = time.perf_counter_ns(), 1e9 / rate
    tasks = []
    for i in range(count):
        due = start + int(i * interval)
        wait = (due - time.perf_counter_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return latencies


async def deliveries(due_times: AsyncGenerator[int, None], count: int, delays: list[float]) -> None:
    """Append to `delays` how late (ms) each of the next `count` watched writes arrives."""
    async with contextlib.aclosing(due_times):
        async for due in due_times:
            delays.append((time.perf_counter_ns() - due) / 1e6)
            if len(delays) == count:
                return


async def paced_under_watch(rate: float, count: int, write: Callable[[int, int], Awaitable[object]],
                            *watches: AsyncGenerator[int, None]) -> tuple[list[float], list[list[float]]]:
    """(write latencies, each watcher's delivery latencies) of `count` writes at `rate`/s."""
    delays: list[list[float]] = [[] for _ in watches]
    watchers = [asyncio.create_task(deliveries(w, count, d)) for w, d in zip(watches, delays, strict=True)]
    latencies = await paced(rate, count, write)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*watchers)), 10)
    for watcher in watchers:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return latencies, delays


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with p% of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Goal:
    text: str
    met: Callable[[Row], bool]


@dataclass(frozen=True)
class Row:
    """One figure through each path (None: not measured that way)."""

    metric: str
    http: float | None
    grpc: float | None
    raw: float | None
    goals: tuple[Goal, ...] = ()

    @property
    def http_ratio(self) -> float:
        return self.http / self.grpc if self.http is not None and self.grpc else math.nan

    @property
    def grpc_ratio(self) -> float:
        return self.grpc / self.raw if self.grpc is not None and self.raw else math.nan

    def cells(self) -> list[str]:
        return [self.metric, _figure(self.http), _figure(self.grpc), _figure(self.raw), _ratio(self.http_ratio),
                _ratio(self.grpc_ratio), ", ".join(g.text for g in self.goals) or "-",
                ", ".join("PASS" if g.met(self) else "MISS" for g in self.goals)]


GRPC_HALF_OF_ETCD = Goal("grpc >= 0.5x etcd", lambda row: row.grpc_ratio >= 0.5)
HTTP_NEAR_GRPC_RATE = Goal("http >= 0.8x grpc", lambda row: row.http_ratio >= 0.8)
HTTP_LIST_2X = Goal("http <= 2x grpc", lambda row: row.http_ratio <= 2)
HTTP_WATCH_2X = Goal("http <= 2x grpc", lambda row: row.http_ratio <= 2)
P99_50MS = Goal("<= 50 ms", lambda row: all(v <= 50 for v in (row.http, row.grpc) if v is not None))
FAN_OUT_200MS = Goal(f"<= {api_watchers.GOAL_MS:.0f} ms", lambda row: row.grpc is not None
                     and row.grpc <= api_watchers.GOAL_MS)


def _figure(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def render(rows: list[Row]) -> str:
    header = ["METRIC", "HTTP", "GRPC", "RAW ETCD", "HTTP/GRPC", "GRPC/RAW", "GOAL", "MET"]
    return "\n".join(format_table([header, *(row.cells() for row in rows)]))


@dataclass
class Fixture:
    """Everything the paths share: the clients, the baseline, the pods."""

    client: Client
    http: HttpApi
    raw: RawEtcd
    scale: Scale
    template: core_pb2.Pod
    apiserver_pid: int
    stored: bytes = b""  # a pod exactly as the apiserver stores it in etcd
    template_json: dict[str, Any] = field(default_factory=dict)  # the template as an HTTP client holds it

    def apiserver_cpu(self) -> float:
        """CPU seconds the apiserver has used (user + system): its cost, whatever else runs on the box."""
        fields = Path(f"/proc/{self.apiserver_pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def costs(self, op: Awaitable[T]) -> tuple[T, float]:
        """`op`'s result and the apiserver CPU seconds spent meanwhile."""
        before = self.apiserver_cpu()
        result = await op
        return result, self.apiserver_cpu() - before

    def pod(self, name: str, namespace: str) -> core_pb2.Pod:
        pod = core_pb2.Pod()
        pod.CopyFrom(self.template)
        pod.metadata.name, pod.metadata.namespace = name, namespace
        return pod

    def pod_json(self, name: str, namespace: str) -> bytes:
        """The same pod as an HTTP client sends it: its object, named, encoded per request.

        The client holds the template as JSON-shaped data, as the gRPC side holds it as a
        message: converting the message with json_format for every request (140 µs) would
        bill the HTTP column for a step no HTTP client makes, on the cores the apiserver uses.
        """
        if not self.template_json:
            self.template_json = manifest.to_dict(self.template)
        body = self.template_json
        return orjson.dumps({**body, "metadata": {**body["metadata"], "name": name, "namespace": namespace}})


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def setup(fx: Fixture) -> None:
    """The namespaces, and the bytes the apiserver stores for one pod, for the baseline to write."""
    for name in (BENCH_NS, WATCH_NS, HTTP_NS):
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = name
        await fx.client.create(ns)
    first = await fx.client.create(fx.pod("warm-up", BENCH_NS))
    fx.stored = await fx.raw.get_bytes(f"/registry/pods/{BENCH_NS}/{first.metadata.name}".encode())
    await fx.client.delete(core_pb2.Pod, first.metadata.name, BENCH_NS)
    await fx.http.create(HTTP_NS, fx.pod_json("warm-up", HTTP_NS))  # connections, imports, caches


def create_ops(fx: Fixture, first: int) -> dict[str, Callable[[int], Awaitable[object]]]:
    """The create of pod `first + i` through each path."""
    return {"grpc": lambda i: fx.client.create(fx.pod(pod_name(first + i), BENCH_NS)),
            "http": lambda i: fx.http.create(HTTP_NS, fx.pod_json(pod_name(first + i), HTTP_NS)),
            "raw": lambda i: fx.raw.create(RAW + b"pods/" + pod_name(first + i).encode(), fx.stored)}


async def bench_creates(fx: Fixture) -> list[Row]:
    """Creates through each path in alternating slices, so the box's load falls on all three alike.

    The box is shared and its load moves within seconds: a phase of 10,000 creates per
    path, one after the other, measured whatever arrived meanwhile (the same code gave
    0.58x and 1.06x). Ten slices of 1,000, gRPC then HTTP then etcd, each closed loop
    with its own 32 workers, add up to the same 10,000 per path.
    """
    n, in_flight, slices = fx.scale.pods, fx.scale.in_flight, CREATE_SLICES
    log(f"creates: {n:,} pods per path, {in_flight} in flight, in {slices} alternating slices "
        f"(gRPC, HTTP, etcd create txns of {len(fx.stored)} bytes)")
    seconds = {"grpc": 0.0, "http": 0.0, "raw": 0.0}
    cpu = {"grpc": 0.0, "http": 0.0}
    bounds = [n * k // slices for k in range(slices + 1)]
    for first, end in itertools.pairwise(bounds):
        for path, op in create_ops(fx, first).items():
            start = time.perf_counter()
            _, used = await fx.costs(closed_loop(end - first, in_flight, op))
            seconds[path] += time.perf_counter() - start
            if path in cpu:
                cpu[path] += used
    grpc, http, raw = (n / seconds[path] for path in ("grpc", "http", "raw"))
    return [Row(f"creates/s ({in_flight} in flight)", http, grpc, raw, (HTTP_NEAR_GRPC_RATE, GRPC_HALF_OF_ETCD)),
            Row("apiserver CPU per create (us)", cpu["http"] / n * 1e6, cpu["grpc"] / n * 1e6, None)]


async def bench_gets(fx: Fixture) -> list[Row]:
    rng = random.Random(7)
    picks = [pod_name(rng.randrange(fx.scale.pods)) for _ in range(fx.scale.gets)]
    log(f"gets: {len(picks):,} one at a time, each path")
    grpc = await sequential(len(picks), lambda i: fx.client.get(core_pb2.Pod, picks[i], BENCH_NS))
    http = await sequential(len(picks), lambda i: fx.http.get(f"/api/v1/namespaces/{BENCH_NS}/pods/{picks[i]}"))
    raw = await sequential(len(picks), lambda i: fx.raw.get(f"/registry/pods/{BENCH_NS}/{picks[i]}".encode()))
    return [Row("get p50 (ms)", percentile(http, 50), percentile(grpc, 50), percentile(raw, 50)),
            Row("get p99 (ms)", percentile(http, 99), percentile(grpc, 99), percentile(raw, 99))]


async def api_list(client: Client, limit: int) -> int:
    """List every pod in BENCH_NS, following continue tokens; returns the count."""
    count, token = 0, ""
    while True:
        page = await client.list(core_pb2.Pod, BENCH_NS, limit=limit, continue_token=token)
        count += len(page.items)
        token = page.continue_token
        if not token:
            return count


async def bench_lists(fx: Fixture) -> list[Row]:
    n, page, rounds = fx.scale.pods, fx.scale.page, fx.scale.list_rounds
    prefix = f"/registry/pods/{BENCH_NS}/".encode()
    log(f"lists: {n:,} pods whole, as a Table and in pages of {page}, {rounds} round(s), each path")

    async def http_list(limit: int = 0, table: bool = False) -> int:
        return (await fx.http.list(BENCH_NS, limit=limit, table=table))[0]

    listers: dict[str, Callable[[], Awaitable[int]]] = {
        "grpc": lambda: api_list(fx.client, 0), "http": http_list, "http-table": lambda: http_list(table=True),
        "raw": lambda: fx.raw.range(prefix), "grpc-paged": lambda: api_list(fx.client, page),
        "http-paged": lambda: http_list(page), "raw-paged": lambda: fx.raw.range(prefix, limit=page)}
    times: dict[str, list[float]] = {name: [] for name in listers}
    cpus: dict[str, list[float]] = {name: [] for name in listers}  # the apiserver's, ms
    for _ in range(rounds):
        for name, lister in listers.items():
            start = time.perf_counter()
            count, cpu = await fx.costs(lister())
            times[name].append((time.perf_counter() - start) * 1000)
            cpus[name].append(cpu * 1000)
            if count != n:
                log(f"lists: {name} returned {count:,} items, not {n:,}")
    median = {name: statistics.median(values) for name, values in times.items()}
    first = {name: values[0] for name, values in times.items()}
    return [Row(f"list {n:,} pods, first (ms)", first["http"], first["grpc"], first["raw"], (HTTP_LIST_2X,)),
            Row(f"list {n:,} pods (ms)", median["http"], median["grpc"], median["raw"], (HTTP_LIST_2X,)),
            Row(f"apiserver CPU per list of {n:,}, first (ms)", cpus["http"][0], cpus["grpc"][0], None),
            Row(f"apiserver CPU per list of {n:,} (ms)", statistics.median(cpus["http"]),
                statistics.median(cpus["grpc"]), None),
            Row(f"list {n:,} pods as Table (ms)", median["http-table"], median["grpc"], median["raw"]),
            Row(f"list {n:,} pods, limit={page} (ms)", median["http-paged"], median["grpc-paged"],
                median["raw-paged"])]


async def bench_paced(fx: Fixture) -> list[Row]:
    """Updates at a fixed rate: through gRPC (watched over gRPC and HTTP), through HTTP, straight to etcd."""
    rate, k = fx.scale.rate, fx.scale.watch_pods
    count = int(rate * fx.scale.seconds)
    # The pods the writes cycle through: resourceVersion cleared, so each update is
    # unconditional (the apiserver merges onto the latest) and never a Conflict.
    pods = [await fx.client.create(fx.pod(pod_name(i), WATCH_NS)) for i in range(k)]
    for pod in pods:
        pod.metadata.resource_version = ""
    bodies = [manifest.to_dict(pod) for pod in pods]  # the same pods as an HTTP client holds them
    keys = [RAW + b"watch/" + pod_name(i).encode() for i in range(k)]
    revisions = [await fx.raw.create(key, fx.stored) for key in keys]
    raw_pod = decode_pod(fx.stored)

    async def grpc_write(i: int, due: int) -> None:
        pod = pods[i % k]
        pod.metadata.annotations[SENT] = str(due)
        await fx.client.update(pod)

    async def http_write(i: int, due: int) -> None:
        body = bodies[i % k]
        body["metadata"]["annotations"][SENT] = str(due)
        await fx.http.update(WATCH_NS, body["metadata"]["name"], orjson.dumps(body))

    async def raw_write(i: int, due: int) -> None:
        raw_pod.metadata.annotations[SENT] = str(due)
        revisions[i % k] = await fx.raw.update(keys[i % k], raw_pod.SerializeToString(), revisions[i % k])

    # The two transports watch the same writes at once, so their deliveries differ by the watch alone.
    log(f"paced: {count:,} updates at {rate:.0f}/s through gRPC, under a gRPC and an HTTP watch")
    listed = await fx.client.list(core_pb2.Pod, WATCH_NS, limit=1)
    (grpc_lat, (grpc_watch, http_watch)), grpc_cpu = await fx.costs(paced_under_watch(
        rate, count, grpc_write, api_watch_due_times(fx.client, listed.resource_version),
        fx.http.watch_due_times(WATCH_NS, listed.resource_version, SENT)))
    log(f"paced: {count:,} updates at {rate:.0f}/s through HTTP")
    http_lat, http_cpu = await fx.costs(paced(rate, count, http_write))
    log(f"paced: {count:,} update txns at {rate:.0f}/s under a watch, straight to etcd")
    raw_lat, (raw_watch,) = await paced_under_watch(
        rate, count, raw_write, fx.raw.watch_due_times(RAW + b"watch/", await fx.raw.revision() + 1))
    for name, got in (("gRPC", grpc_watch), ("HTTP", http_watch), ("etcd", raw_watch)):
        if len(got) < count:
            log(f"paced: the {name} watcher saw {len(got):,} of {count:,} writes")
    at = f"@{rate:.0f}/s"

    def row(metric: str, p: float, http: list[float], grpc: list[float], raw: list[float],
            goals: tuple[Goal, ...] = ()) -> Row:
        return Row(metric, percentile(http, p), percentile(grpc, p), percentile(raw, p), goals)
    return [row(f"watch delivery p50 {at} (ms)", 50, http_watch, grpc_watch, raw_watch),
            row(f"watch delivery p99 {at} (ms)", 99, http_watch, grpc_watch, raw_watch, (HTTP_WATCH_2X,)),
            row(f"update p50 {at} (ms)", 50, http_lat, grpc_lat, raw_lat),
            row(f"update p99 {at} (ms)", 99, http_lat, grpc_lat, raw_lat, (P99_50MS,)),
            # gRPC's includes serving both watches; HTTP's has no watcher.
            Row("apiserver CPU per update (us)", http_cpu / count * 1e6, grpc_cpu / count * 1e6, None)]


async def bench_fan_out(address: str, fx: Fixture) -> list[Row]:
    """Watch delivery to 1,000 concurrent gRPC watchers of one namespace's pods (issue 19; bench/api_watchers.py)."""
    watchers = 1000
    delays = await api_watchers.fan_out(address, watchers=watchers, rate=10, seconds=fx.scale.seconds)
    return [Row(f"watch delivery p99, {watchers:,} watchers @10/s (ms)", None, percentile(delays, 99), None,
                (FAN_OUT_200MS,))]


async def bench_kinds(fx: Fixture) -> str:
    """The per-request cost of finding a kind, at both ends of the kinds table (api_http.py)."""
    first, last = ends_of_table()
    log(f"kinds: routing and a GET of a missing object, {first.resource} (first) and {last.resource} (last)")
    lines = [["KIND (POSITION IN TABLE)", "ROUTE + RESOLVE (US)", "GET OF A MISSING OBJECT P50 / P99 (MS)"]]
    served = list(kinds.SERVED)
    for kind in (first, last):
        path = object_path(kind, BENCH_NS, "missing")

        async def get_missing(_i: int, path: str = path) -> object:
            return await fx.http.get(path, 404)
        await get_missing(0)  # warm
        latencies = await sequential(fx.scale.gets // 2, get_missing)
        lines.append([f"{kind.qualified_resource} ({served.index(kind) + 1} of {len(served)})",
                      f"{route_cost_us(path, 5_000):.2f}",
                      f"{percentile(latencies, 50):.2f} / {percentile(latencies, 99):.2f}"])
    return "\n".join(format_table(lines))


async def run(address: str, http_url: str, etcd_url: str, apiserver_pid: int, scale: Scale
              ) -> tuple[list[Row], str, str, int]:
    """All figures, the per-kind table, etcd's version, and the stored size of one pod."""
    raw = RawEtcd(etcd_url)
    await raw.connect()
    http = HttpApi(http_url, connections=scale.in_flight)
    async with Client(address) as client:
        await client.wait_ready()
        fx = Fixture(client, http, raw, scale, pod_manifest("template", BENCH_NS), apiserver_pid)
        try:
            await setup(fx)
            rows = [*await bench_creates(fx), *await bench_gets(fx), *await bench_lists(fx),
                    *await bench_paced(fx), *await bench_fan_out(address, fx)]
            by_kind = await bench_kinds(fx)
            version = (await client.version()).etcd_version
        finally:
            await raw.close()
            await http.close()
    return rows, by_kind, version, len(fx.stored)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind as Ctrl-C does, so etcd, the apiserver and the temp dir go


@contextlib.contextmanager
def control_plane() -> Iterator[tuple[Etcd, ApiServer, str]]:
    """etcd and a quiet apiserver serving gRPC and plaintext HTTP, in a temporary folder removed after."""
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp, contextlib.ExitStack() as stop:
        base = Path(tmp)
        etcd = start_etcd(base / "etcd", log_dir=base)
        stop.callback(etcd.process.stop)
        grpc_port = free_port()
        http_port = free_port()
        while http_port == grpc_port:  # free_port() releases what it found: it can answer twice
            http_port = free_port()
        http_listen = f"127.0.0.1:{http_port}"
        apiserver = start_apiserver(etcd.url, base, port=grpc_port,
                                    extra=["--log-level", "WARNING", "--http-listen", http_listen])
        stop.callback(apiserver.process.stop)
        yield etcd, apiserver, f"http://{http_listen}"


def measure(scale: Scale) -> tuple[list[Row], str, str, int]:
    """Start etcd and the apiserver in a temporary directory, run, stop them, remove it."""
    with control_plane() as (etcd, apiserver, http_url):
        log(f"etcd pid {etcd.process.pid} at {etcd.url}; apiserver pid {apiserver.process.pid} "
            f"at {apiserver.address} (gRPC) and {http_url}")
        try:
            return asyncio.run(run(apiserver.address, http_url, etcd.url, apiserver.process.pid, scale))
        except Exception:
            print(apiserver.process.tail(), file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer gets and list rounds, 3 s of paced writes: about 1.5 minutes")
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    try:
        rows, by_kind, version, size = measure(QUICK if opts.quick else FULL)
    except KeyboardInterrupt:
        sys.exit("interrupted; etcd and the apiserver are stopped")
    print(f"Flotilla API benchmark{' (--quick)' if opts.quick else ''}, "
          f"{_dt.datetime.now().isoformat(timespec='seconds')}: etcd {version}, {os.cpu_count()} CPUs, "
          f"pods of {size:,} bytes in etcd, {time.monotonic() - began:.0f} s")
    print(render(rows))
    print("HTTP/GRPC: how many times gRPC's figure HTTP's is; GRPC/RAW: for creates/s the share of etcd's rate, "
          "for times how many times slower. The Table list's GRPC and RAW are the plain lists.")
    print(f"\nPer-request cost at both ends of the kinds table ({len(kinds.SERVED)} kinds served; "
          "the router looks kinds up in a dict by (group, version, resource)):")
    print(by_kind)


if __name__ == "__main__":
    main()
