"""Table columns of the core/v1 kinds: pods, nodes, services, endpoints, events, namespaces, config.

Each kind's columns mirror Kubernetes' printers (pods: Name Ready Status Restarts
Age, plus IP Node Nominated Node Readiness Gates with -o wide), and its cells are
computed from the protobuf object as printPod, printNode… compute them from the
Go object: a pod's STATUS walks its init and app container states, a node's
STATUS reads the Ready condition.
"""

from __future__ import annotations

import datetime as _dt

from controlplane.printers.table import (
    AGE,
    CREATED_AT,
    NAME,
    Cell,
    GenerateOptions,
    TableColumnDefinition,
    TableConvertor,
    name_column,
)
from controlplane.printers.text import (
    NONE,
    UNKNOWN,
    age,
    created_at,
    joined,
    labels_text,
    or_none,
    since,
    timestamp,
)
from proto import core_pb2

# ---------------------------------------------------------------- pods


def pod_status(pod: core_pb2.Pod) -> str:
    """The STATUS column, computed as kubectl's printPod does.

    The phase (or status.reason, e.g. Evicted) is the start; an init container
    that has not finished shows `Init:N/M` or `Init:<reason>`; otherwise the last
    app container with a waiting/terminated reason wins (CrashLoopBackOff,
    ContainerCreating, Completed, Error); a deleted pod not yet finished shows
    Terminating. A pod with no phase yet is Pending.
    """
    status = pod.status
    reason = status.reason or status.phase or "Pending"
    sidecars = {c.name for c in pod.spec.init_containers if c.restart_policy == "Always"}

    initializing = False
    for i, cs in enumerate(status.init_container_statuses):
        state = cs.state
        terminated = state.terminated if state.HasField("terminated") else None
        waiting = state.waiting if state.HasField("waiting") else None
        if terminated is not None and terminated.exit_code == 0:
            continue
        if cs.name in sidecars and cs.started:
            continue
        if terminated is not None:
            if terminated.reason:
                reason = f"Init:{terminated.reason}"
            elif terminated.signal:
                reason = f"Init:Signal:{terminated.signal}"
            else:
                reason = f"Init:ExitCode:{terminated.exit_code}"
        elif waiting is not None and waiting.reason and waiting.reason != "PodInitializing":
            reason = f"Init:{waiting.reason}"
        else:
            reason = f"Init:{i}/{len(pod.spec.init_containers)}"
        initializing = True
        break

    initialized = any(c.type == "Initialized" and c.status == "True" for c in status.conditions)
    if not initializing or initialized:
        has_running = False
        for cs in reversed(status.container_statuses):
            state = cs.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated") and state.terminated.reason:
                reason = state.terminated.reason
            elif state.HasField("terminated"):
                t = state.terminated
                reason = f"Signal:{t.signal}" if t.signal else f"ExitCode:{t.exit_code}"
            elif cs.ready and state.HasField("running"):
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
            reason = "Running" if ready else "NotReady"

    if pod.metadata.HasField("deletion_timestamp"):
        if status.reason == "NodeLost":
            reason = "Unknown"
        elif status.phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason


def pod_ready(pod: core_pb2.Pod) -> str:
    """READY: ready/total app containers (sidecar init containers count, as in kubectl)."""
    sidecars = {c.name for c in pod.spec.init_containers if c.restart_policy == "Always"}
    total = len(pod.spec.containers) + len(sidecars)
    ready = sum(1 for cs in pod.status.container_statuses if cs.ready)
    ready += sum(1 for cs in pod.status.init_container_statuses if cs.name in sidecars and cs.ready)
    return f"{ready}/{total}"


def pod_restarts(pod: core_pb2.Pod, at: _dt.datetime) -> str:
    """RESTARTS: the sum of restart counts, with `(5m ago)` for the latest restart."""
    statuses = list(pod.status.container_statuses) + list(pod.status.init_container_statuses)
    restarts = sum(cs.restart_count for cs in statuses)
    last: _dt.datetime | None = None
    for cs in statuses:
        if cs.last_state.HasField("terminated"):
            finished = timestamp(cs.last_state.terminated, "finished_at")
            if finished is not None and (last is None or finished > last):
                last = finished
    if restarts and last is not None:
        return f"{restarts} ({since(last, at)} ago)"
    return str(restarts)


def _pod_cells(pod: core_pb2.Pod, o: GenerateOptions) -> list[Cell]:
    return [pod.metadata.name, pod_ready(pod), pod_status(pod), pod_restarts(pod, o.now), age(pod, o.now),
            or_none(pod.status.pod_ip), or_none(pod.spec.node_name), or_none(pod.status.nominated_node_name),
            NONE]  # readiness gates: Flotilla pods have none


POD = TableConvertor[core_pb2.Pod]((
    NAME,
    TableColumnDefinition("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    TableColumnDefinition("Status", description="The aggregate status of the containers in this pod."),
    TableColumnDefinition("Restarts", description="The number of times the containers in this pod have been "
                          "restarted and when the last container in this pod has restarted."),
    AGE,
    TableColumnDefinition("IP", priority=1, description="IP address allocated to the pod."),
    TableColumnDefinition("Node", priority=1, description="The node the pod is bound to."),
    TableColumnDefinition("Nominated Node", priority=1,
                          description="The node the scheduler preempted other pods on to make room for this one."),
    TableColumnDefinition("Readiness Gates", priority=1,
                          description="Conditions, besides its containers' readiness, the pod's readiness waits on."),
), _pod_cells)


# ---------------------------------------------------------------- nodes


def node_status(node: core_pb2.Node) -> str:
    """Ready / NotReady / Unknown from the Ready condition, plus SchedulingDisabled when cordoned."""
    parts = []
    for cond in node.status.conditions:
        if cond.type == "Ready":
            parts = ["Ready" if cond.status == "True" else "NotReady"]
    parts = parts or ["Unknown"]
    if node.spec.unschedulable:
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(node: core_pb2.Node) -> str:
    """From node-role.kubernetes.io/<role> labels (and kubernetes.io/role=<role>)."""
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/") and key.partition("/")[2]:
            roles.add(key.partition("/")[2])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return joined(sorted(roles))


def node_address(node: core_pb2.Node, kind: str) -> str:
    return next((a.address for a in node.status.addresses if a.type == kind), NONE)


def _node_cells(node: core_pb2.Node, o: GenerateOptions) -> list[Cell]:
    info = node.status.node_info
    return [node.metadata.name, node_status(node), node_roles(node), age(node, o.now), info.kubelet_version,
            node_address(node, "InternalIP"), node_address(node, "ExternalIP"), info.os_image or UNKNOWN,
            info.kernel_version or UNKNOWN, info.container_runtime_version or UNKNOWN]


NODE = TableConvertor[core_pb2.Node]((
    NAME,
    TableColumnDefinition("Status", description="The status of the node"),
    TableColumnDefinition("Roles", description="The roles of the node"),
    AGE,
    TableColumnDefinition("Version", description="Kubelet Version reported by the node."),
    TableColumnDefinition("Internal-IP", priority=1, description="The node's InternalIP address."),
    TableColumnDefinition("External-IP", priority=1, description="The node's ExternalIP address."),
    TableColumnDefinition("OS-Image", priority=1, description="OS Image reported by the node."),
    TableColumnDefinition("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
    TableColumnDefinition("Container-Runtime", priority=1,
                          description="ContainerRuntime Version reported by the node."),
), _node_cells)


# ---------------------------------------------------------------- services, endpoints

# printService shortens a load balancer's ingress list to this many characters (without -o wide).
LOAD_BALANCER_WIDTH = 16


def service_ports(svc: core_pb2.Service) -> str:
    """PORT(S): `80/TCP`, or `80:30080/TCP` with a node port."""
    pieces = []
    for p in svc.spec.ports:
        proto = p.protocol or "TCP"
        pieces.append(f"{p.port}:{p.node_port}/{proto}" if p.node_port else f"{p.port}/{proto}")
    return joined(pieces)


def service_external_ip(svc: core_pb2.Service, wide: bool = False) -> str:
    """EXTERNAL-IP: <none>, the load balancer's ingress, or <pending> while it has none."""
    kind = svc.spec.type or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return joined(svc.spec.external_ips)
    if kind == "LoadBalancer":
        ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress if i.ip or i.hostname]
        lb = ",".join(ingress)
        if not wide and len(lb) > LOAD_BALANCER_WIDTH:
            lb = lb[:LOAD_BALANCER_WIDTH - 3] + "..."
        found = ([lb] if lb else []) + list(svc.spec.external_ips)
        return ",".join(found) or "<pending>"
    if kind == "ExternalName":
        return svc.spec.external_name
    return UNKNOWN


def _service_cells(svc: core_pb2.Service, o: GenerateOptions) -> list[Cell]:
    return [svc.metadata.name, svc.spec.type or "ClusterIP", or_none(svc.spec.cluster_ip),
            service_external_ip(svc, o.wide), service_ports(svc), age(svc, o.now), labels_text(svc.spec.selector)]


SERVICE = TableConvertor[core_pb2.Service]((
    NAME,
    TableColumnDefinition("Type", description="How the Service is exposed: ClusterIP, NodePort, LoadBalancer "
                          "or ExternalName."),
    TableColumnDefinition("Cluster-IP", description="The IP address of the service, allocated by the apiserver."),
    TableColumnDefinition("External-IP", description="Addresses the service is reachable at from outside: "
                          "the load balancer's ingress or spec.externalIPs."),
    TableColumnDefinition("Port(s)", description="The ports exposed by this service."),
    AGE,
    TableColumnDefinition("Selector", priority=1,
                          description="The labels of the pods traffic is routed to."),
), _service_cells)


def endpoints_text(ep: core_pb2.Endpoints, limit: int = 3) -> str:
    """ENDPOINTS: up to three ip:port pairs, then ` + N more...`."""
    listed: list[str] = []
    count = 0
    for subset in ep.subsets:
        ports: list[int | None] = [p.port for p in subset.ports] or [None]
        for port in ports:
            for addr in subset.addresses:
                count += 1
                if len(listed) < limit:
                    listed.append(addr.ip if port is None else _host_port(addr.ip, port))
    text = ",".join(listed) or NONE
    return f"{text} + {count - limit} more..." if count > limit else text


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


ENDPOINTS = TableConvertor[core_pb2.Endpoints]((
    NAME,
    TableColumnDefinition("Endpoints", description="The addresses and ports of the service's ready pods."),
    AGE,
), lambda ep, o: [ep.metadata.name, endpoints_text(ep), age(ep, o.now)])


# ---------------------------------------------------------------- events


def event_last_seen(ev: core_pb2.Event, at: _dt.datetime) -> str:
    """LAST SEEN: `5m`, or `5m (x3 over 20m)` for a repeated event."""
    first = timestamp(ev, "first_timestamp") or timestamp(ev, "event_time")
    last = timestamp(ev, "last_timestamp") or first
    text = since(last, at)
    if ev.count > 1:
        text = f"{text} (x{ev.count} over {since(first, at)})"
    return text


def event_time(ev: core_pb2.Event) -> _dt.datetime:
    """For sorting events oldest first, as kubectl describe does."""
    return (timestamp(ev, "last_timestamp") or timestamp(ev, "event_time")
            or timestamp(ev, "first_timestamp") or _dt.datetime.min.replace(tzinfo=_dt.UTC))


def event_source(ev: core_pb2.Event) -> str:
    """FROM: the reporting component, with its host when known."""
    component = ev.source.component or ev.reporting_component
    host = ev.source.host
    return f"{component}, {host}" if component and host else component or host


def _event_cells(ev: core_pb2.Event, o: GenerateOptions) -> list[Cell]:
    first = timestamp(ev, "first_timestamp") or timestamp(ev, "event_time")
    return [event_last_seen(ev, o.now), ev.type, ev.reason,
            f"{ev.involved_object.kind.lower()}/{ev.involved_object.name}", ev.involved_object.field_path,
            event_source(ev), ev.message.strip(), since(first, o.now), ev.count or 1, ev.metadata.name]


EVENT = TableConvertor[core_pb2.Event]((
    TableColumnDefinition("Last Seen", description="The time at which the most recent occurrence of this event "
                          "was recorded."),
    TableColumnDefinition("Type", description="Type of this event (Normal, Warning)."),
    TableColumnDefinition("Reason", description="A short, machine understandable string that gives the reason "
                          "for this event."),
    TableColumnDefinition("Object", description="The object that this event is about."),
    TableColumnDefinition("Subobject", priority=1, description="The part of the object the event is about, "
                          "e.g. a container: spec.containers{name}."),
    TableColumnDefinition("Source", priority=1, description="The component reporting this event."),
    TableColumnDefinition("Message", description="A human-readable description of the status of this operation."),
    TableColumnDefinition("First Seen", priority=1, description="The time at which the event was first recorded."),
    TableColumnDefinition("Count", type="integer", priority=1,
                          description="The number of times this event has occurred."),
    name_column(priority=1),
), _event_cells)


# ---------------------------------------------------------------- namespaces, configmaps, secrets


NAMESPACE = TableConvertor[core_pb2.Namespace]((
    NAME, TableColumnDefinition("Status", description="The status of the namespace"), AGE,
), lambda ns, o: [ns.metadata.name, ns.status.phase or "Active", age(ns, o.now)])

CONFIG_MAP = TableConvertor[core_pb2.ConfigMap]((
    NAME, TableColumnDefinition("Data", type="integer", description="The number of keys in data and binaryData."),
    AGE,
), lambda cm, o: [cm.metadata.name, len(cm.data) + len(cm.binary_data), age(cm, o.now)])

SECRET = TableConvertor[core_pb2.Secret]((
    NAME,
    TableColumnDefinition("Type", description="Used to facilitate programmatic handling of secret data."),
    TableColumnDefinition("Data", type="integer", description="The number of keys in data and stringData."),
    AGE,
), lambda s, o: [s.metadata.name, s.type or "Opaque", len(s.data) + len(s.string_data), age(s, o.now)])

SERVICE_ACCOUNT = TableConvertor[core_pb2.ServiceAccount]((
    NAME, TableColumnDefinition("Secrets", type="string", description="Secrets is a list of the secrets in the "
                                "same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
), lambda sa, o: [sa.metadata.name, str(len(sa.secrets)), age(sa, o.now)])


# ---------------------------------------------------------------- resource quotas, limit ranges


def quota_columns(quota: core_pb2.ResourceQuota) -> tuple[str, str]:
    """REQUEST and LIMIT: `pods: 2/10, requests.cpu: 500m/2` per hard limit (limits.* in LIMIT), sorted by name."""
    request: list[str] = []
    limit: list[str] = []
    for resource in sorted(quota.status.hard):
        cell = f"{resource}: {quota.status.used.get(resource, '0')}/{quota.status.hard[resource]}"
        (limit if resource.startswith("limits.") else request).append(cell)
    return ", ".join(request), ", ".join(limit)


RESOURCE_QUOTA = TableConvertor[core_pb2.ResourceQuota]((
    NAME,
    AGE,
    TableColumnDefinition("Request", description="Request represents a minimum amount of cpu/memory that a "
                          "container may consume."),
    TableColumnDefinition("Limit", description="Limits control the maximum amount of cpu/memory that a container "
                          "may use independent of contention on the node."),
), lambda q, o: [q.metadata.name, age(q, o.now), *quota_columns(q)])

LIMIT_RANGE = TableConvertor[core_pb2.LimitRange]((NAME, CREATED_AT), lambda lr, o: [lr.metadata.name,
                                                                                    created_at(lr)])
