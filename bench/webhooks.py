"""Benchmark of admission webhooks: what a webhook costs a write.

    .venv/bin/python -m bench.webhooks [--quick]

It starts its own etcd and apiserver on free loopback ports
(provision.processes.throwaway_control_plane) and an HTTPS webhook server on
loopback in a process of its own (aiohttp, a certificate from a CA made here,
the configurations' caBundle). ConfigMaps are created over gRPC with 32 in flight, in three
namespaces that differ only in which webhook selects them:

- none: no webhook selects it (the baseline; the webhook stages still run and
  find nothing to call);
- validating: one validating webhook that allows everything;
- mutating: one mutating webhook that adds a label (a JSONPatch, applied, then
  the object defaulted and validated again).

Slices of each mode alternate (none, validating, mutating, none, ...) so the
box's moving load falls on all three alike. Printed per mode: creates/s, p50
and p99 latency, and each as a ratio to the baseline measured in the same run.
Issue 16 sets no goal; Kubernetes pays one HTTPS round trip per webhook called.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from client import Client
from client.certificates import create_ca, create_serving_cert
from proto import core_pb2, manifest
from provision.processes import free_port, throwaway_control_plane

MODES = ("none", "validating", "mutating")
IN_FLIGHT = 32
PATCH = base64.b64encode(json.dumps([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
                         .encode()).decode()


async def _answer(request: web.Request) -> web.Response:
    uid = (await request.json())["request"]["uid"]
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if request.path == "/mutate":
        response.update(patchType="JSONPatch", patch=PATCH)
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})


def _serve(cert: Path, key: Path, port: int) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/validate", _answer)
    app.router.add_post("/mutate", _answer)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=tls, access_log=None, print=None)


def serve_webhooks(cert: Path, key: Path, port: int) -> multiprocessing.Process:
    """Allow (/validate) or label (/mutate) every review, in a process of its own (not this one's GIL)."""
    server = multiprocessing.Process(target=_serve, args=(cert, key, port), daemon=True)
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def configuration(kind: str, mode: str, url: str, ca: bytes) -> Any:
    return manifest.from_dict({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": f"bench-{mode}"},
        "webhooks": [{"name": f"{mode}.bench.flotilla.dev", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                      "clientConfig": {"url": url, "caBundle": base64.b64encode(ca).decode()},
                      "namespaceSelector": {"matchLabels": {"bench": mode}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["configmaps"]}]}]})


async def create_slice(client: Client, mode: str, start: int, count: int) -> list[float]:
    """`count` creates in namespace `mode`, IN_FLIGHT at a time; each one's latency in seconds."""
    latencies: list[float] = []
    names = iter(range(start, start + count))

    async def worker() -> None:
        for n in names:
            cm = core_pb2.ConfigMap()
            cm.metadata.name, cm.metadata.namespace = f"cm-{n}", mode
            cm.metadata.labels["app"] = "bench"  # the mutating webhook adds a label beside it
            cm.data["k"] = "v"
            began = time.perf_counter()
            created = await client.create(cm)
            latencies.append(time.perf_counter() - began)
            assert mode != "mutating" or created.metadata.labels["mutated"] == "yes"

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return latencies


Results = dict[str, tuple[float, list[float]]]  # mode -> (creates/s, each create's latency)


async def measure(address: str, url: str, ca: bytes, slices: int, per_slice: int) -> Results:
    async with Client(address) as client:
        for mode in MODES:
            ns = core_pb2.Namespace()
            ns.metadata.name = mode
            ns.metadata.labels["bench"] = mode
            await client.create(ns)
        await client.create(configuration("ValidatingWebhookConfiguration", "validating", f"{url}/validate", ca))
        await client.create(configuration("MutatingWebhookConfiguration", "mutating", f"{url}/mutate", ca))
        await asyncio.sleep(1)  # the apiserver's watch of the configurations
        await create_slice(client, "none", 10**6, 200)  # warm-up: connections, caches
        seconds = dict.fromkeys(MODES, 0.0)
        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        for s in range(slices):
            for mode in MODES:
                began = time.perf_counter()
                latencies[mode] += await create_slice(client, mode, s * per_slice, per_slice)
                seconds[mode] += time.perf_counter() - began
                print(f"slice {s + 1}/{slices} {mode}: done", file=sys.stderr)
        return {m: (len(latencies[m]) / seconds[m], latencies[m]) for m in MODES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 slices of 300 per mode instead of 6 of 500")
    opts = parser.parse_args()
    slices, per_slice = (3, 300) if opts.quick else (6, 500)
    with throwaway_control_plane("flotilla-bench-webhooks-") as plane:
        ca = create_ca("bench-webhooks")
        cert, key = create_serving_cert(ca, "webhook", ["127.0.0.1"]).write(plane.base / "tls", "webhook")
        port = free_port()
        server = serve_webhooks(cert, key, port)
        try:
            results = asyncio.run(measure(plane.apiserver.address, f"https://127.0.0.1:{port}", ca.cert_pem,
                                          slices, per_slice))
        finally:
            server.terminate()
    base_rate, base = results["none"]
    base_p50, base_p99 = _percentiles(base)
    print(f"{'mode':<12}{'creates/s':>11}{'ratio':>8}{'p50 ms':>9}{'ratio':>8}{'p99 ms':>9}{'ratio':>8}")
    for mode in MODES:
        rate, lat = results[mode]
        p50, p99 = _percentiles(lat)
        print(f"{mode:<12}{rate:>11.0f}{rate / base_rate:>7.2f}x{p50 * 1000:>9.1f}{p50 / base_p50:>7.2f}x"
              f"{p99 * 1000:>9.1f}{p99 / base_p99:>7.2f}x")


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[98]


if __name__ == "__main__":
    main()
