"""Output of `kctl get`: kubectl's tables per kind, and -o yaml|json|name.

Each kind has a column list mirroring kubectl's built-in printers (pods: NAME
READY STATUS RESTARTS AGE, plus IP NODE ... with -o wide); cells are computed
from the protobuf object exactly as kubectl computes them from the Go object
(pod STATUS walks init and app container states; node STATUS reads the Ready
condition). `format_table` is the one place in kctl that aligns columns, with
kubectl's three spaces between them; describe uses it too.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf.message import Message

from kctl import resources
from proto import autoscaling_pb2, certificates_pb2, core_pb2, kinds, manifest, meta_pb2, selectors

NONE = "<none>"
UNKNOWN = "<unknown>"
OUTPUTS = ("wide", "yaml", "json", "name")


# ---------------------------------------------------------------- time


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def timestamp(msg: Message, field: str) -> _dt.datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not msg.HasField(field):
        return None
    ts = getattr(msg, field)
    return _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, _dt.UTC)


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration: 45s, 3m12s, 15m, 4h, 5h30m, 2d3h, 30d, 2y10d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(when: _dt.datetime | None, at: _dt.datetime) -> str:
    """AGE of a timestamp; `<unknown>` when unset."""
    return human_duration((at - when).total_seconds()) if when is not None else UNKNOWN


def age(obj: Message, at: _dt.datetime) -> str:
    return since(timestamp(obj.metadata, "creation_timestamp"), at)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- small formatters


def labels_text(labels: Any) -> str:
    """`app=web,tier=db` sorted, or <none>."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def selector_text(selector: meta_pb2.LabelSelector) -> str:
    """metav1.FormatLabelSelector: `app=web,tier in (a,b)`, or <none> when empty."""
    return str(selectors.from_message(selector)) or NONE


def joined(values: Iterable[str]) -> str:
    return ",".join(values) or NONE


def _or_none(value: str) -> str:
    return value or NONE


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


# ---------------------------------------------------------------- services, endpoints


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
        if not wide and len(lb) > 16:
            lb = lb[:13] + "..."
        found = ([lb] if lb else []) + list(svc.spec.external_ips)
        return ",".join(found) or "<pending>"
    if kind == "ExternalName":
        return svc.spec.external_name
    return UNKNOWN


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


# ---------------------------------------------------------------- hpa


def hpa_targets(hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> str:
    """TARGETS: `cpu: 40%/80%` per metric (current/target), `<unknown>` before the first reading."""
    out = []
    for i, spec in enumerate(hpa.spec.metrics):
        current = hpa.status.current_metrics[i] if i < len(hpa.status.current_metrics) else None
        source = spec.resource if spec.type == "Resource" else (
            spec.container_resource if spec.type == "ContainerResource" else None)
        if source is None:
            out.append("<unknown type>" if spec.type not in ("Pods", "Object", "External") else
                       f"<unknown>/{_metric_target(_target_of(spec))}")
            continue
        have = current.resource.current if current is not None and current.HasField("resource") else None
        target = source.target
        if target.average_value:
            now_value = have.average_value if have is not None and have.average_value else UNKNOWN
            out.append(f"{source.name}: {now_value}/{target.average_value}")
        else:
            now_value = (f"{have.average_utilization}%" if have is not None
                         and have.HasField("average_utilization") else UNKNOWN)
            want = f"{target.average_utilization}%" if target.HasField("average_utilization") else "<auto>"
            out.append(f"{source.name}: {now_value}/{want}")
    if not out:
        return NONE
    if len(out) > 2:
        return ", ".join(out[:2]) + f" + {len(out) - 2} more..."
    return ", ".join(out)


def _target_of(spec: autoscaling_pb2.MetricSpec) -> autoscaling_pb2.MetricTarget:
    source: Any = {"Pods": spec.pods, "Object": spec.object, "External": spec.external}[spec.type]
    return source.target


def _metric_target(target: autoscaling_pb2.MetricTarget) -> str:
    return target.average_value or target.value or (
        f"{target.average_utilization}%" if target.HasField("average_utilization") else UNKNOWN)


def csr_condition(csr: certificates_pb2.CertificateSigningRequest) -> str:
    """kubectl's CONDITION of a CSR: its condition types, "Pending" if none, plus "Issued" once signed."""
    types = [c.type for c in csr.status.conditions]
    if not types:
        types = ["Pending"]
    if csr.status.certificate:
        types.append("Issued")
    return ",".join(types)


# ---------------------------------------------------------------- columns per kind


@dataclass(frozen=True)
class Cells:
    """What a cell function may need besides the object."""

    now: _dt.datetime
    name_prefix: str = ""
    wide: bool = False


CellFn = Callable[[Any, Cells], str]


@dataclass(frozen=True)
class Column:
    header: str
    cell: CellFn
    wide: bool = False  # only with -o wide


def _name(obj: Any, c: Cells) -> str:
    return c.name_prefix + obj.metadata.name


def _age(obj: Any, c: Cells) -> str:
    return age(obj, c.now)


NAME = Column("NAME", _name)
AGE = Column("AGE", _age)


def _template_columns(spec_of: Callable[[Any], Any]) -> tuple[Column, ...]:
    """CONTAINERS IMAGES SELECTOR, the -o wide columns of deployments and replicasets."""
    return (
        Column("CONTAINERS", lambda o, c: joined(x.name for x in spec_of(o).template.spec.containers), True),
        Column("IMAGES", lambda o, c: joined(x.image for x in spec_of(o).template.spec.containers), True),
        Column("SELECTOR", lambda o, c: selector_text(spec_of(o).selector), True),
    )


def desired_replicas(spec: Any) -> int:
    """spec.replicas of a Deployment or ReplicaSet; unset means 1, as the API defaults it."""
    return int(spec.replicas) if spec.HasField("replicas") else 1


COLUMNS: dict[str, tuple[Column, ...]] = {
    "Pod": (
        NAME,
        Column("READY", lambda o, c: pod_ready(o)),
        Column("STATUS", lambda o, c: pod_status(o)),
        Column("RESTARTS", lambda o, c: pod_restarts(o, c.now)),
        AGE,
        Column("IP", lambda o, c: _or_none(o.status.pod_ip), True),
        Column("NODE", lambda o, c: _or_none(o.spec.node_name), True),
        Column("NOMINATED NODE", lambda o, c: _or_none(o.status.nominated_node_name), True),
        Column("READINESS GATES", lambda o, c: NONE, True),
    ),
    "Node": (
        NAME,
        Column("STATUS", lambda o, c: node_status(o)),
        Column("ROLES", lambda o, c: node_roles(o)),
        AGE,
        Column("VERSION", lambda o, c: o.status.node_info.kubelet_version),
        Column("INTERNAL-IP", lambda o, c: node_address(o, "InternalIP"), True),
        Column("EXTERNAL-IP", lambda o, c: node_address(o, "ExternalIP"), True),
        Column("OS-IMAGE", lambda o, c: o.status.node_info.os_image or UNKNOWN, True),
        Column("KERNEL-VERSION", lambda o, c: o.status.node_info.kernel_version or UNKNOWN, True),
        Column("CONTAINER-RUNTIME", lambda o, c: o.status.node_info.container_runtime_version or UNKNOWN,
               True),
    ),
    "Deployment": (
        NAME,
        Column("READY", lambda o, c: f"{o.status.ready_replicas}/{desired_replicas(o.spec)}"),
        Column("UP-TO-DATE", lambda o, c: str(o.status.updated_replicas)),
        Column("AVAILABLE", lambda o, c: str(o.status.available_replicas)),
        AGE,
        *_template_columns(lambda o: o.spec),
    ),
    "ReplicaSet": (
        NAME,
        Column("DESIRED", lambda o, c: str(desired_replicas(o.spec))),
        Column("CURRENT", lambda o, c: str(o.status.replicas)),
        Column("READY", lambda o, c: str(o.status.ready_replicas)),
        AGE,
        *_template_columns(lambda o: o.spec),
    ),
    "Service": (
        NAME,
        Column("TYPE", lambda o, c: o.spec.type or "ClusterIP"),
        Column("CLUSTER-IP", lambda o, c: _or_none(o.spec.cluster_ip)),
        Column("EXTERNAL-IP", lambda o, c: service_external_ip(o, c.wide)),
        Column("PORT(S)", lambda o, c: service_ports(o)),
        AGE,
        Column("SELECTOR", lambda o, c: labels_text(o.spec.selector), True),
    ),
    "Endpoints": (NAME, Column("ENDPOINTS", lambda o, c: endpoints_text(o)), AGE),
    "Event": (
        Column("LAST SEEN", lambda o, c: event_last_seen(o, c.now)),
        Column("TYPE", lambda o, c: o.type),
        Column("REASON", lambda o, c: o.reason),
        Column("OBJECT", lambda o, c: f"{o.involved_object.kind.lower()}/{o.involved_object.name}"),
        Column("SUBOBJECT", lambda o, c: o.involved_object.field_path, True),
        Column("SOURCE", lambda o, c: event_source(o), True),
        Column("MESSAGE", lambda o, c: o.message.strip()),
        Column("FIRST SEEN", lambda o, c: since(timestamp(o, "first_timestamp")
                                                 or timestamp(o, "event_time"), c.now), True),
        Column("COUNT", lambda o, c: str(o.count or 1), True),
        Column("NAME", _name, True),
    ),
    "Namespace": (NAME, Column("STATUS", lambda o, c: o.status.phase or "Active"), AGE),
    "Lease": (NAME, Column("HOLDER", lambda o, c: o.spec.holder_identity), AGE),
    "ConfigMap": (NAME, Column("DATA", lambda o, c: str(len(o.data) + len(o.binary_data))), AGE),
    "Secret": (
        NAME,
        Column("TYPE", lambda o, c: o.type or "Opaque"),
        Column("DATA", lambda o, c: str(len(o.data) + len(o.string_data))),
        AGE,
    ),
    "CertificateSigningRequest": (
        NAME,
        AGE,
        Column("SIGNERNAME", lambda o, c: o.spec.signer_name),
        Column("REQUESTOR", lambda o, c: o.spec.username),
        Column("REQUESTEDDURATION", lambda o, c: human_duration(o.spec.expiration_seconds)
               if o.spec.HasField("expiration_seconds") else NONE),
        Column("CONDITION", lambda o, c: csr_condition(o)),
    ),
    "HorizontalPodAutoscaler": (
        NAME,
        Column("REFERENCE", lambda o, c: f"{o.spec.scale_target_ref.kind}/{o.spec.scale_target_ref.name}"),
        Column("TARGETS", lambda o, c: hpa_targets(o)),
        Column("MINPODS", lambda o, c: str(o.spec.min_replicas) if o.spec.HasField("min_replicas")
               else "<unset>"),
        Column("MAXPODS", lambda o, c: str(o.spec.max_replicas)),
        Column("REPLICAS", lambda o, c: str(o.status.current_replicas)),
        AGE,
    ),
}
GENERIC: tuple[Column, ...] = (NAME, AGE)

# ---------------------------------------------------------------- tables


def format_table(rows: Sequence[Sequence[str]], *, widths: Sequence[int] | None = None,
                 indent: str = "", gap: int = 3) -> list[str]:
    """Rows as aligned lines: each column as wide as its widest cell plus `gap` spaces.

    kubectl's tables use three spaces, describe's two. `widths` (from an earlier
    `column_widths`) keeps later rows in line with a table already printed, as
    `get --watch` needs.
    """
    sizes = list(widths) if widths is not None else column_widths(rows)
    sep = " " * gap
    lines = []
    for row in rows:
        cells = [cell.ljust(sizes[i]) if i < len(sizes) else cell for i, cell in enumerate(row)]
        lines.append((indent + sep.join(cells)).rstrip())
    return lines


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    return widths


@dataclass
class Table:
    """The header and row builder for one kind under the chosen flags."""

    kind: kinds.Kind
    wide: bool = False
    namespace_column: bool = False
    show_labels: bool = False
    name_prefix: str = ""

    @property
    def columns(self) -> list[Column]:
        return [c for c in COLUMNS.get(self.kind.kind, GENERIC) if self.wide or not c.wide]

    def header(self) -> list[str]:
        names = [c.header for c in self.columns]
        if self.namespace_column and self.kind.namespaced:
            names.insert(0, "NAMESPACE")
        if self.show_labels:
            names.append("LABELS")
        return names

    def row(self, obj: Message, at: _dt.datetime) -> list[str]:
        cells = Cells(now=at, name_prefix=self.name_prefix, wide=self.wide)
        out = [c.cell(obj, cells) for c in self.columns]
        meta = obj.metadata  # type: ignore[attr-defined]
        if self.namespace_column and self.kind.namespaced:
            out.insert(0, meta.namespace)
        if self.show_labels:
            out.append(labels_text(meta.labels))
        return out

    def lines(self, objs: Sequence[Message], *, headers: bool = True) -> list[str]:
        at = now()
        rows = ([self.header()] if headers else []) + [self.row(o, at) for o in objs]
        return format_table(rows)


# ---------------------------------------------------------------- -o yaml|json|name


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, as kubectl prints last-applied-configuration."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    """YAML as kubectl prints it: keys sorted, block style, no line folding."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True,
                     width=1 << 30)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def as_dict(obj: Message) -> dict[str, Any]:
    """The object in Kubernetes JSON shape, apiVersion and kind always set."""
    data = manifest.to_dict(obj)
    kind = kinds.for_message(obj)
    return {"apiVersion": kind.api_version, "kind": kind.kind, **{k: v for k, v in data.items()
                                                                   if k not in ("apiVersion", "kind")}}


def as_list(objs: Sequence[Message]) -> dict[str, Any]:
    """`kind: List`, what kubectl prints for several objects."""
    return {"apiVersion": "v1", "items": [as_dict(o) for o in objs], "kind": "List",
            "metadata": {"resourceVersion": ""}}


def render(objs: Sequence[Message], output: str, *, single: bool) -> str:
    """-o yaml/json/name text for objects; `single` prints one object rather than a List."""
    if output == "name":
        return "".join(resources.ref_of(o) + "\n" for o in objs)
    data = as_dict(objs[0]) if single and len(objs) == 1 else as_list(objs)
    return to_yaml(data) if output == "yaml" else to_json(data)
