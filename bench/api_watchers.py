"""Watch fan-out (issue 19): how late a write reaches each of 1,000 concurrent watchers of one resource.

    .venv/bin/python -m bench.api_watchers [--watchers 1000] [--rate 10] [--seconds 10]

Standalone, it starts a private etcd and two apiservers on it — one with the
watch cache, one with `--watch-cache=false` (one etcd watch per client watch) —
and measures each in turn; `bench.api` runs the same phase against its own
apiserver for its table. The watchers are gRPC watches of every pod in one
namespace, spread over several connections (as kubelets and controllers are);
a pacer updates pods there at `--rate`/s, each update carrying when it was due
(perf_counter_ns) in an annotation, and every watcher records how late each
event reached it. Every watcher runs in this process, so its decoding shares
the two cores with the apiserver: the figures are an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from bench.workloads import cpu_seconds
from client import Client
from kctl.printers import format_table
from proto import core_pb2
from provision.processes import start_apiserver, start_etcd

NAMESPACE = "bench-fanout"
DUE = "bench.flotilla.io/due-ns"
GOAL_MS = 200.0  # issue 19: watch delivery p99 with 1,000 watchers
CONNECTIONS = 20  # watchers are spread over this many client connections


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def fan_out(address: str, *, watchers: int, rate: float, seconds: float, pods: int = 20) -> list[float]:
    """Delivery delays (ms) of `rate * seconds` pod updates to each of `watchers` watches."""
    clients = [Client(address) for _ in range(min(CONNECTIONS, watchers))]
    for client in clients:
        await client.__aenter__()
    writer = clients[0]
    try:
        with contextlib.suppress(Exception):
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = NAMESPACE
            await writer.create(ns)
        made = []
        for index in range(pods):
            pod = core_pb2.Pod(api_version="v1", kind="Pod")
            pod.metadata.name, pod.metadata.namespace = f"fanout-{index}", NAMESPACE
            pod.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
            with contextlib.suppress(Exception):
                await writer.create(pod)
            made.append(await writer.get(core_pb2.Pod, pod.metadata.name, NAMESPACE))
        start = (await writer.list(core_pb2.Pod, NAMESPACE)).resource_version
        count = int(rate * seconds)
        delays: list[float] = []

        async def watch(client: Client) -> None:
            seen = 0
            events = client.watch(core_pb2.Pod, NAMESPACE, resource_version=start)
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if event.type != "MODIFIED" or event.object is None:
                        continue
                    due = event.object.metadata.annotations.get(DUE)
                    if due:
                        delays.append((time.perf_counter_ns() - int(due)) / 1e6)
                        seen += 1
                        if seen == count:
                            return

        log(f"fan-out: {watchers} watchers over {len(clients)} connections, {count} updates at {rate:g}/s")
        tasks = [asyncio.create_task(watch(clients[i % len(clients)])) for i in range(watchers)]
        await asyncio.sleep(2.0)  # every watch established
        began, interval = time.perf_counter_ns(), 1e9 / rate
        for index in range(count):
            due = began + int(index * interval)
            await asyncio.sleep(max(0.0, (due - time.perf_counter_ns()) / 1e9))
            pod = made[index % len(made)]
            pod.metadata.resource_version = ""  # unconditional: never a Conflict
            pod.metadata.annotations[DUE] = str(due)
            await writer.update(pod)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if len(delays) < count * watchers:
            log(f"fan-out: {len(delays):,} of {count * watchers:,} deliveries arrived")
        return delays
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_watchers", description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="pod updates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cache", choices=["on", "off", "both"], default="both")
    opts = parser.parse_args(argv)
    rows = [["APISERVER", "WATCHERS", "DELIVERIES", "P50 (MS)", "P99 (MS)", "MAX (MS)", "APISERVER CPU (US/DELIVERY)",
             "GOAL", "MET"]]
    with tempfile.TemporaryDirectory(prefix="flotilla-fanout-") as tmp, contextlib.ExitStack() as stop:
        base = Path(tmp)
        etcd = start_etcd(base / "etcd", log_dir=base)
        stop.callback(etcd.process.stop)
        modes = {"on": ["true"], "off": ["false"], "both": ["true", "false"]}[opts.cache]
        for flag in modes:
            label = "watch cache on" if flag == "true" else "watch cache off"
            folder = base / flag
            folder.mkdir()
            apiserver = start_apiserver(etcd.url, folder, extra=["--log-level", "WARNING", "--watch-cache", flag])
            try:
                cpu = cpu_seconds(apiserver.process.pid)
                delays = asyncio.run(fan_out(apiserver.address, watchers=opts.watchers, rate=opts.rate,
                                             seconds=opts.seconds))
                cpu = cpu_seconds(apiserver.process.pid) - cpu  # watches and writes, set-up included
            finally:
                apiserver.process.stop()
            p99 = percentile(delays, 0.99)
            rows.append([label, str(opts.watchers), f"{len(delays):,}", f"{percentile(delays, 0.5):.1f}",
                         f"{p99:.1f}", f"{max(delays, default=float('nan')):.1f}",
                         f"{cpu * 1e6 / max(1, len(delays)):.0f}", f"<= {GOAL_MS:.0f}",
                         "PASS" if p99 <= GOAL_MS else "MISS"])
    print(f"Watch fan-out: {opts.watchers} gRPC watchers of one namespace's pods, {opts.rate:g} updates/s "
          f"for {opts.seconds:g} s")
    print("\n".join(format_table(rows)))


if __name__ == "__main__":
    main()
