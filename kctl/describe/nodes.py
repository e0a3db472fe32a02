"""Describing a node: conditions, addresses, capacity, system info, and the requests of the pods it runs."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.printers.core import node_roles
from controlplane.printers.text import age, now, timestamp
from kctl.describe.section import Section, annotation_lines, pairs, rfc1123
from proto import core_pb2, quantity


def _taints(taints: Sequence[core_pb2.Taint]) -> list[str]:
    return [f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in taints]


def _percent(part: int, whole: int) -> str:
    return f"{int(part * 100 / whole)}%" if whole else "0%"


def describe_node(node: core_pb2.Node, pods: Sequence[core_pb2.Pod]) -> Section:
    s = Section()
    meta, spec, status = node.metadata, node.spec, node.status
    s.kv(0, "Name", meta.name)
    s.kv(0, "Roles", node_roles(node))
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    s.kv(0, "CreationTimestamp", rfc1123(timestamp(meta, "creation_timestamp")))
    s.many(0, "Taints", _taints(spec.taints))
    s.kv(0, "Unschedulable", "true" if spec.unschedulable else "false")
    s.header(0, "Conditions:")
    rows = [["Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"]]
    for c in status.conditions:
        rows.append([c.type, c.status, rfc1123(timestamp(c, "last_heartbeat_time")),
                     rfc1123(timestamp(c, "last_transition_time")), c.reason, c.message])
    s.table(1, rows)
    s.header(0, "Addresses:")
    for a in status.addresses:
        s.kv(1, a.type, a.address)
    for title, values in (("Capacity", status.capacity), ("Allocatable", status.allocatable)):
        s.header(0, f"{title}:")
        for k, v in sorted(values.items()):
            s.kv(1, k, v)
    info = status.node_info
    s.header(0, "System Info:")
    for key, value in (("Machine ID", info.machine_id), ("System UUID", info.system_uuid),
                       ("Boot ID", info.boot_id), ("Kernel Version", info.kernel_version),
                       ("OS Image", info.os_image), ("Operating System", info.operating_system),
                       ("Architecture", info.architecture),
                       ("Container Runtime Version", info.container_runtime_version),
                       ("Kubelet Version", info.kubelet_version),
                       ("Kube-Proxy Version", info.kube_proxy_version)):
        s.kv(1, key, value)
    s.kv(0, "PodCIDR", spec.pod_cidr)
    s.kv(0, "PodCIDRs", ",".join(spec.pod_cidrs))
    if spec.provider_id:
        s.kv(0, "ProviderID", spec.provider_id)
    _node_pods(s, node, pods)
    return s


def _requests(pod: core_pb2.Pod, which: str, resource: str) -> int:
    """A pod's total request or limit of one resource, in millis for cpu, units otherwise."""
    total = 0
    for c in pod.spec.containers:
        value = getattr(c.resources, which).get(resource)
        if value:
            total += quantity.milli_value(value) if resource == "cpu" else quantity.int_value(value)
    return total


def _node_pods(s: Section, node: core_pb2.Node, pods: Sequence[core_pb2.Pod]) -> None:
    running = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
    alloc = node.status.allocatable
    cpu_alloc = quantity.milli_value(alloc["cpu"]) if alloc.get("cpu") else 0
    mem_alloc = quantity.int_value(alloc["memory"]) if alloc.get("memory") else 0

    def cpu(v: int) -> str:
        return f"{quantity.format_milli(v)} ({_percent(v, cpu_alloc)})"

    def mem(v: int) -> str:
        return f"{quantity.format_bytes(v)} ({_percent(v, mem_alloc)})"

    s.header(0, f"Non-terminated Pods:          ({len(running)} in total)")
    rows = [["Namespace", "Name", "CPU Requests", "CPU Limits", "Memory Requests", "Memory Limits", "Age"]]
    at = now()
    totals = {"rc": 0, "lc": 0, "rm": 0, "lm": 0}
    for p in running:
        rc, lc = _requests(p, "requests", "cpu"), _requests(p, "limits", "cpu")
        rm, lm = _requests(p, "requests", "memory"), _requests(p, "limits", "memory")
        for k, v in (("rc", rc), ("lc", lc), ("rm", rm), ("lm", lm)):
            totals[k] += v
        rows.append([p.metadata.namespace, p.metadata.name, cpu(rc), cpu(lc), mem(rm), mem(lm),
                     age(p, at)])
    s.table(1, rows)
    s.header(0, "Allocated resources:")
    s.header(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    s.table(1, [["Resource", "Requests", "Limits"], ["cpu", cpu(totals["rc"]), cpu(totals["lc"])],
                ["memory", mem(totals["rm"]), mem(totals["lm"])]])
