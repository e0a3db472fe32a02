"""`kctl describe`: an object as readable sections, ending with its Events.

Pods, nodes, deployments and services have describers shaped like kubectl's
(a pod's containers with their state, a node's conditions and the pods it
runs, a deployment's replica counts and ReplicaSets, a service's ports and
endpoints); every other kind falls back to its fields as nested key/values.
Events are fetched with the field selector involvedObject.name=NAME (and kind),
oldest first. Keys are aligned per block as kubectl's tabwriter does.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from client import Client
from kctl import printers
from kctl.printers import desired_replicas
from proto import apps_pb2, certificates_pb2, core_pb2, kinds, manifest, quantity, selectors
from proto.errors import ApiError
from proto.wellknown import ANNOTATION_LAST_APPLIED

NONE = printers.NONE


# ---------------------------------------------------------------- the writer


@dataclass
class Section:
    """Lines of `Key: value` at indent levels, aligned per run of same-level keys."""

    entries: list[tuple[int, str, str | None]] = field(default_factory=list)

    def kv(self, level: int, key: str, value: object = "") -> None:
        """`Key:  value`; the lines of a multi-line value continue under its first."""
        self.many(level, key, str(value).rstrip("\n").split("\n"))

    def many(self, level: int, key: str, values: Sequence[str]) -> None:
        """`Labels: a=b` with further values on following lines, under the first."""
        values = list(values) or [NONE]
        self.entries.append((level, f"{key}:", values[0]))
        for value in values[1:]:
            self.entries.append((level, "", value))

    def header(self, level: int, text: str) -> None:
        self.entries.append((level, text, None))

    def lines(self, level: int, lines: Iterable[str]) -> None:
        for line in lines:
            self.header(level, line)

    def table(self, level: int, rows: Sequence[Sequence[str]], underline: bool = True) -> None:
        """A kubectl describe table: headers, a dashed line, rows; two-space gaps."""
        rows = list(rows)
        if underline and rows:
            rows.insert(1, ["-" * len(h) for h in rows[0]])
        self.lines(level, printers.format_table(rows, gap=2))

    def render(self) -> str:
        out: list[str] = []
        i = 0
        while i < len(self.entries):
            level, key, value = self.entries[i]
            if value is None:
                out.append(("  " * level + key).rstrip())
                i += 1
                continue
            j = i
            while j < len(self.entries) and self.entries[j][0] == level and self.entries[j][2] is not None:
                j += 1
            width = max(len(k) for _, k, _ in self.entries[i:j]) + 2
            for _, k, v in self.entries[i:j]:
                out.append(("  " * level + k.ljust(width) + (v or "")).rstrip())
            i = j
        return "\n".join(out) + "\n"


def rfc1123(when: _dt.datetime | None) -> str:
    """`Mon, 02 Jan 2006 15:04:05 +0000`, kubectl's describe time format."""
    return when.strftime("%a, %d %b %Y %H:%M:%S %z") if when is not None else NONE


def _pairs(mapping: Any) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(mapping.items())]


def _annotations(mapping: Any) -> list[str]:
    """Annotations but the last-applied manifest, which kubectl describe leaves out too."""
    return [f"{k}: {v}" for k, v in sorted(mapping.items()) if k != ANNOTATION_LAST_APPLIED]


def _metadata(s: Section, obj: Message, kind: kinds.Kind) -> None:
    meta = obj.metadata  # type: ignore[attr-defined]
    s.kv(0, "Name", meta.name)
    if kind.namespaced:
        s.kv(0, "Namespace", meta.namespace)
    s.many(0, "Labels", _pairs(meta.labels))
    s.many(0, "Annotations", _annotations(meta.annotations))
    s.kv(0, "CreationTimestamp", rfc1123(printers.timestamp(meta, "creation_timestamp")))


def _controlled_by(meta: Any) -> str | None:
    owner = next((o for o in meta.owner_references if o.controller), None)
    return f"{owner.kind}/{owner.name}" if owner is not None else None


# ---------------------------------------------------------------- pods


def _container_ports(c: core_pb2.Container) -> tuple[str, str]:
    ports = ",".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports) or NONE
    host = ",".join(f"{p.host_port}/{p.protocol or 'TCP'}" for p in c.ports) or NONE
    return ports, host


def _state(s: Section, level: int, key: str, state: core_pb2.ContainerState) -> None:
    if state.HasField("running"):
        s.kv(level, key, "Running")
        s.kv(level + 1, "Started", rfc1123(printers.timestamp(state.running, "started_at")))
    elif state.HasField("terminated"):
        t = state.terminated
        s.kv(level, key, "Terminated")
        s.kv(level + 1, "Reason", t.reason or NONE)
        if t.message:
            s.kv(level + 1, "Message", t.message)
        s.kv(level + 1, "Exit Code", t.exit_code)
        if t.signal:
            s.kv(level + 1, "Signal", t.signal)
        s.kv(level + 1, "Started", rfc1123(printers.timestamp(t, "started_at")))
        s.kv(level + 1, "Finished", rfc1123(printers.timestamp(t, "finished_at")))
    elif state.HasField("waiting"):
        s.kv(level, key, "Waiting")
        s.kv(level + 1, "Reason", state.waiting.reason or NONE)
        if state.waiting.message:
            s.kv(level + 1, "Message", state.waiting.message)
    else:
        s.kv(level, key, "Waiting" if key == "State" else NONE)


def _probe(p: core_pb2.Probe) -> str:
    if p.HasField("http_get"):
        h = p.http_get
        action = f"http-get {(h.scheme or 'HTTP').lower()}://{h.host or ''}:{h.port}{h.path}"
    elif p.HasField("tcp_socket"):
        action = f"tcp-socket :{p.tcp_socket.port}"
    elif p.HasField("exec"):
        action = f"exec {list(p.exec.command)}"
    elif p.HasField("grpc"):
        action = f"grpc <pod>:{p.grpc.port}"
    else:
        action = "unknown"
    return (f"{action} delay={p.initial_delay_seconds}s timeout={p.timeout_seconds or 1}s "
            f"period={p.period_seconds or 10}s #success={p.success_threshold or 1} "
            f"#failure={p.failure_threshold or 3}")


def _env(c: core_pb2.Container) -> list[str]:
    out = []
    for e in c.env:
        if e.HasField("value_from"):
            src = e.value_from
            if src.HasField("field_ref"):
                out.append(f"{e.name}:  ({src.field_ref.api_version or 'v1'}:{src.field_ref.field_path})")
            elif src.HasField("config_map_key_ref"):
                out.append(f"{e.name}:  <set to the key '{src.config_map_key_ref.key}' of config map "
                           f"'{src.config_map_key_ref.name}'>")
            elif src.HasField("secret_key_ref"):
                out.append(f"{e.name}:  <set to the key '{src.secret_key_ref.key}' in secret "
                           f"'{src.secret_key_ref.name}'>")
            else:
                out.append(f"{e.name}:  <set from a resource field>")
        else:
            out.append(f"{e.name}:  {e.value}")
    return out


def _containers(s: Section, level: int, title: str, containers: Sequence[core_pb2.Container],
                statuses: Sequence[core_pb2.ContainerStatus] | None) -> None:
    if not containers:
        return
    s.header(level, f"{title}:")
    by_name = {cs.name: cs for cs in statuses or []}
    for c in containers:
        s.header(level + 1, f"{c.name}:")
        cs = by_name.get(c.name)
        lv = level + 2
        if cs is not None:
            s.kv(lv, "Container ID", cs.container_id)
        s.kv(lv, "Image", c.image)
        if cs is not None:
            s.kv(lv, "Image ID", cs.image_id)
        ports, host = _container_ports(c)
        s.kv(lv, "Port" if len(c.ports) <= 1 else "Ports", ports)
        s.kv(lv, "Host Port" if len(c.ports) <= 1 else "Host Ports", host)
        if c.command:
            s.many(lv, "Command", list(c.command))
        if c.args:
            s.many(lv, "Args", list(c.args))
        if statuses is not None:
            status = cs or core_pb2.ContainerStatus()
            _state(s, lv, "State", status.state)
            if cs is not None and cs.last_state.ListFields():
                _state(s, lv, "Last State", cs.last_state)
            s.kv(lv, "Ready", "True" if status.ready else "False")
            s.kv(lv, "Restart Count", status.restart_count)
        for title_, values in (("Limits", c.resources.limits), ("Requests", c.resources.requests)):
            if values:
                s.header(lv, f"{title_}:")
                for k, v in sorted(values.items()):
                    s.kv(lv + 1, k, v)
        for title_, present, probe in (("Liveness", c.HasField("liveness_probe"), c.liveness_probe),
                                       ("Readiness", c.HasField("readiness_probe"), c.readiness_probe),
                                       ("Startup", c.HasField("startup_probe"), c.startup_probe)):
            if present:
                s.kv(lv, title_, _probe(probe))
        env = _env(c)
        if env:
            s.header(lv, "Environment:")
            s.lines(lv + 1, env)
        else:
            s.kv(lv, "Environment", NONE)
        mounts = [f"{m.mount_path} from {m.name} ({'ro' if m.read_only else 'rw'})" for m in c.volume_mounts]
        if mounts:
            s.header(lv, "Mounts:")
            s.lines(lv + 1, mounts)
        else:
            s.kv(lv, "Mounts", NONE)


def _volumes(s: Section, volumes: Sequence[core_pb2.Volume]) -> None:
    if not volumes:
        s.kv(0, "Volumes", NONE)
        return
    s.header(0, "Volumes:")
    for v in volumes:
        s.header(1, f"{v.name}:")
        if v.HasField("empty_dir"):
            s.kv(2, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
            s.kv(2, "Medium", v.empty_dir.medium)
            s.kv(2, "SizeLimit", v.empty_dir.size_limit or "<unset>")
        elif v.HasField("host_path"):
            s.kv(2, "Type", "HostPath (bare host directory volume)")
            s.kv(2, "Path", v.host_path.path)
        elif v.HasField("config_map"):
            s.kv(2, "Type", "ConfigMap (a volume populated by a ConfigMap)")
            s.kv(2, "Name", v.config_map.name)
        elif v.HasField("secret"):
            s.kv(2, "Type", "Secret (a volume populated by a Secret)")
            s.kv(2, "SecretName", v.secret.secret_name)
        elif v.HasField("persistent_volume_claim"):
            s.kv(2, "Type", "PersistentVolumeClaim")
            s.kv(2, "ClaimName", v.persistent_volume_claim.claim_name)


def _tolerations(tolerations: Sequence[core_pb2.Toleration]) -> list[str]:
    """`node.kubernetes.io/not-ready:NoExecute op=Exists for 300s`, as kubectl prints them."""
    out = []
    for t in tolerations:
        text = t.key + (f"={t.value}" if t.value else "") + (f":{t.effect}" if t.effect else "")
        if t.operator == "Exists" and not t.value:
            text += " op=Exists"
        if t.HasField("toleration_seconds"):
            text += f" for {t.toleration_seconds}s"
        out.append(text.strip())
    return out


def describe_pod(pod: core_pb2.Pod) -> Section:
    s = Section()
    meta, spec, status = pod.metadata, pod.spec, pod.status
    s.kv(0, "Name", meta.name)
    s.kv(0, "Namespace", meta.namespace)
    s.kv(0, "Priority", spec.priority if spec.HasField("priority") else 0)
    if spec.priority_class_name:
        s.kv(0, "Priority Class Name", spec.priority_class_name)
    s.kv(0, "Service Account", spec.service_account_name or "default")
    node = f"{spec.node_name}/{status.host_ip}" if spec.node_name and status.host_ip else spec.node_name
    s.kv(0, "Node", node or NONE)
    start = printers.timestamp(status, "start_time")
    if start is not None:
        s.kv(0, "Start Time", rfc1123(start))
    s.many(0, "Labels", _pairs(meta.labels))
    s.many(0, "Annotations", _annotations(meta.annotations))
    if meta.HasField("deletion_timestamp"):
        grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") else 0
        s.kv(0, "Status", f"Terminating (lasts {printers.age(pod, printers.now())})")
        s.kv(0, "Termination Grace Period", f"{grace}s")
    else:
        s.kv(0, "Status", status.phase or "Pending")
    if status.reason:
        s.kv(0, "Reason", status.reason)
    if status.message:
        s.kv(0, "Message", status.message)
    s.kv(0, "IP", status.pod_ip)
    if status.pod_ips:
        s.header(0, "IPs:")
        for ip in status.pod_ips:
            s.kv(1, "IP", ip.ip)
    else:
        s.kv(0, "IPs", NONE)
    owner = _controlled_by(meta)
    if owner:
        s.kv(0, "Controlled By", owner)
    _containers(s, 0, "Init Containers", spec.init_containers, status.init_container_statuses)
    _containers(s, 0, "Containers", spec.containers, status.container_statuses)
    if status.conditions:
        s.header(0, "Conditions:")
        s.table(1, [["Type", "Status"], *[[c.type, c.status] for c in status.conditions]], underline=False)
    _volumes(s, spec.volumes)
    s.kv(0, "QoS Class", status.qos_class or NONE)
    s.many(0, "Node-Selectors", _pairs(spec.node_selector))
    s.many(0, "Tolerations", _tolerations(spec.tolerations))
    return s


# ---------------------------------------------------------------- nodes


def _taints(taints: Sequence[core_pb2.Taint]) -> list[str]:
    return [f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in taints]


def _percent(part: int, whole: int) -> str:
    return f"{int(part * 100 / whole)}%" if whole else "0%"


def describe_node(node: core_pb2.Node, pods: Sequence[core_pb2.Pod]) -> Section:
    s = Section()
    meta, spec, status = node.metadata, node.spec, node.status
    s.kv(0, "Name", meta.name)
    s.kv(0, "Roles", printers.node_roles(node))
    s.many(0, "Labels", _pairs(meta.labels))
    s.many(0, "Annotations", _annotations(meta.annotations))
    s.kv(0, "CreationTimestamp", rfc1123(printers.timestamp(meta, "creation_timestamp")))
    s.many(0, "Taints", _taints(spec.taints))
    s.kv(0, "Unschedulable", "true" if spec.unschedulable else "false")
    s.header(0, "Conditions:")
    rows = [["Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"]]
    for c in status.conditions:
        rows.append([c.type, c.status, rfc1123(printers.timestamp(c, "last_heartbeat_time")),
                     rfc1123(printers.timestamp(c, "last_transition_time")), c.reason, c.message])
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
    at = printers.now()
    totals = {"rc": 0, "lc": 0, "rm": 0, "lm": 0}
    for p in running:
        rc, lc = _requests(p, "requests", "cpu"), _requests(p, "limits", "cpu")
        rm, lm = _requests(p, "requests", "memory"), _requests(p, "limits", "memory")
        for k, v in (("rc", rc), ("lc", lc), ("rm", rm), ("lm", lm)):
            totals[k] += v
        rows.append([p.metadata.namespace, p.metadata.name, cpu(rc), cpu(lc), mem(rm), mem(lm),
                     printers.age(p, at)])
    s.table(1, rows)
    s.header(0, "Allocated resources:")
    s.header(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    s.table(1, [["Resource", "Requests", "Limits"], ["cpu", cpu(totals["rc"]), cpu(totals["lc"])],
                ["memory", mem(totals["rm"]), mem(totals["lm"])]])


# ---------------------------------------------------------------- deployments


def _rs_line(rs: apps_pb2.ReplicaSet) -> str:
    return f"{rs.metadata.name} ({rs.status.replicas}/{desired_replicas(rs.spec)} replicas created)"


def describe_deployment(dep: apps_pb2.Deployment, replicasets: Sequence[apps_pb2.ReplicaSet]) -> Section:
    s = Section()
    spec, status = dep.spec, dep.status
    _metadata(s, dep, kinds.resolve("deployments"))
    s.kv(0, "Selector", printers.selector_text(spec.selector))
    s.kv(0, "Replicas", f"{desired_replicas(spec)} desired | {status.updated_replicas} updated | "
                        f"{status.replicas} total | {status.available_replicas} available | "
                        f"{status.unavailable_replicas} unavailable")
    strategy = spec.strategy.type or "RollingUpdate"
    s.kv(0, "StrategyType", strategy)
    s.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if strategy == "RollingUpdate":
        ru = spec.strategy.rolling_update
        s.kv(0, "RollingUpdateStrategy", f"{ru.max_unavailable or '25%'} max unavailable, "
                                         f"{ru.max_surge or '25%'} max surge")
    s.header(0, "Pod Template:")
    s.many(1, "Labels", _pairs(spec.template.metadata.labels))
    if spec.template.metadata.annotations:
        s.many(1, "Annotations", _annotations(spec.template.metadata.annotations))
    _containers(s, 1, "Containers", spec.template.spec.containers, None)
    if status.conditions:
        s.header(0, "Conditions:")
        s.table(1, [["Type", "Status", "Reason"], *[[c.type, c.status, c.reason] for c in status.conditions]])
    owned = [rs for rs in replicasets
             if any(o.uid == dep.metadata.uid for o in rs.metadata.owner_references)]
    new = [rs for rs in owned if _same_template(rs.spec.template, spec.template)]
    old = [rs for rs in owned if rs not in new and (desired_replicas(rs.spec) or rs.status.replicas)]
    s.kv(0, "OldReplicaSets", ", ".join(_rs_line(rs) for rs in old) or NONE)
    s.kv(0, "NewReplicaSet", ", ".join(_rs_line(rs) for rs in new) or NONE)
    return s


def _same_template(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Equal but for the pod-template-hash label the deployment controller adds."""
    left, right = core_pb2.PodTemplateSpec(), core_pb2.PodTemplateSpec()
    left.CopyFrom(a)
    right.CopyFrom(b)
    for t in (left, right):
        t.metadata.labels.pop("pod-template-hash", None)
    return left == right


# ---------------------------------------------------------------- services


def describe_service(svc: core_pb2.Service, endpoints: core_pb2.Endpoints | None) -> Section:
    s = Section()
    spec = svc.spec
    _metadata(s, svc, kinds.resolve("services"))
    s.kv(0, "Selector", ",".join(_pairs(spec.selector)) or NONE)
    s.kv(0, "Type", spec.type or "ClusterIP")
    if spec.ip_family_policy:
        s.kv(0, "IP Family Policy", spec.ip_family_policy)
    if spec.ip_families:
        s.kv(0, "IP Families", ",".join(spec.ip_families))
    s.kv(0, "IP", spec.cluster_ip or NONE)
    s.kv(0, "IPs", ",".join(spec.cluster_ips) or spec.cluster_ip or NONE)
    if spec.external_ips:
        s.kv(0, "External IPs", ",".join(spec.external_ips))
    ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
    if ingress:
        s.kv(0, "LoadBalancer Ingress", ", ".join(ingress))
    for port in spec.ports:
        proto = port.protocol or "TCP"
        s.kv(0, "Port", f"{port.name or '<unset>'}  {port.port}/{proto}")
        s.kv(0, "TargetPort", f"{port.target_port or port.port}/{proto}")
        if port.node_port:
            s.kv(0, "NodePort", f"{port.name or '<unset>'}  {port.node_port}/{proto}")
        s.kv(0, "Endpoints", _service_endpoints(endpoints, port.name))
    s.kv(0, "Session Affinity", spec.session_affinity or "None")
    if spec.external_traffic_policy:
        s.kv(0, "External Traffic Policy", spec.external_traffic_policy)
    return s


def _service_endpoints(ep: core_pb2.Endpoints | None, port_name: str) -> str:
    if ep is None:
        return NONE
    found = []
    for subset in ep.subsets:
        for p in subset.ports:
            if p.name == port_name:
                found += [f"{a.ip}:{p.port}" for a in subset.addresses]
    return ",".join(found) or NONE


# ---------------------------------------------------------------- everything else


def _words(key: str) -> str:
    """`holderIdentity` -> `Holder Identity`, as kubectl's generic describer titles fields.

    Only names shaped like fields are titled; map keys (`game.properties`) stay as written.
    """
    if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", key):
        return key
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key)
    return spaced[:1].upper() + spaced[1:]


def _generic_value(s: Section, level: int, key: str, value: Any) -> None:
    if isinstance(value, dict):
        if not value:
            s.kv(level, key, NONE)
            return
        s.header(level, f"{key}:")
        for k, v in value.items():
            _generic_value(s, level + 1, _words(str(k)), v)
    elif isinstance(value, list):
        if not value or not any(isinstance(v, dict | list) for v in value):
            s.many(level, key, [str(v) for v in value])
            return
        s.header(level, f"{key}:")
        for item in value:
            if isinstance(item, dict):
                s.header(level + 1, "-")
                for k, v in item.items():
                    _generic_value(s, level + 2, _words(str(k)), v)
            else:
                s.header(level + 1, f"- {item}")
    else:
        s.kv(level, key, value)


def describe_csr(csr: certificates_pb2.CertificateSigningRequest, kind: kinds.Kind) -> Section:
    """kubectl's CSR description: who asked, which signer, where it stands, and the subject asked for."""
    s = Section()
    _metadata(s, csr, kind)
    s.kv(0, "Requesting User", csr.spec.username)
    s.kv(0, "Signer", csr.spec.signer_name)
    if csr.spec.HasField("expiration_seconds"):
        s.kv(0, "Requested Duration", printers.human_duration(csr.spec.expiration_seconds))
    s.kv(0, "Status", printers.csr_condition(csr))
    for cond in csr.status.conditions:
        if cond.message:
            s.kv(1, cond.type, f"{cond.reason}: {cond.message}" if cond.reason else cond.message)
    try:
        request = x509.load_pem_x509_csr(csr.spec.request)
    except ValueError:
        s.kv(0, "Subject", "<unparseable request>")
        return s
    s.header(0, "Subject:")
    for label, oid in (("Common Name", NameOID.COMMON_NAME), ("Serial Number", NameOID.SERIAL_NUMBER),
                       ("Organization", NameOID.ORGANIZATION_NAME)):
        values = [str(a.value) for a in request.subject.get_attributes_for_oid(oid)]
        s.kv(1, label, ", ".join(values))
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        s.header(0, "Subject Alternative Names:")
        for label, kind_ in (("DNS Names", x509.DNSName), ("IP Addresses", x509.IPAddress)):
            names = [str(v) for v in sans.get_values_for_type(kind_)]
            if names:
                s.kv(1, label, ", ".join(names))
    except x509.ExtensionNotFound:
        pass
    return s


def describe_generic(obj: Message, kind: kinds.Kind) -> Section:
    s = Section()
    _metadata(s, obj, kind)
    s.kv(0, "API Version", kind.api_version)
    s.kv(0, "Kind", kind.kind)
    data = manifest.to_dict(obj)
    for key, value in data.items():
        if key not in ("apiVersion", "kind", "metadata"):
            _generic_value(s, 0, _words(key), value)
    return s


# ---------------------------------------------------------------- events and the entry point


def events_section(s: Section, events: Sequence[core_pb2.Event]) -> None:
    if not events:
        s.kv(0, "Events", NONE)
        return
    s.header(0, "Events:")
    at = printers.now()
    rows = [["Type", "Reason", "Age", "From", "Message"]]
    for ev in sorted(events, key=printers.event_time):
        rows.append([ev.type, ev.reason, printers.event_last_seen(ev, at), printers.event_source(ev),
                     ev.message.strip()])
    s.table(1, rows)


async def _events_for(client: Client, obj: Message, kind: kinds.Kind) -> list[core_pb2.Event]:
    meta = obj.metadata  # type: ignore[attr-defined]
    selector = f"involvedObject.name={meta.name},involvedObject.kind={kind.kind}"
    try:
        found = await client.list(core_pb2.Event, meta.namespace if kind.namespaced else "",
                                  field_selector=selector)
    except ApiError:
        return []  # events are a courtesy: describe still shows the object
    return list(found.items)


async def describe(client: Client, kind: kinds.Kind, obj: Message) -> str:
    """The description of one object, related objects and events fetched as needed."""
    ns = obj.metadata.namespace  # type: ignore[attr-defined]
    name = obj.metadata.name  # type: ignore[attr-defined]
    if isinstance(obj, core_pb2.Pod):
        section = describe_pod(obj)
    elif isinstance(obj, core_pb2.Node):
        pods = await client.list(core_pb2.Pod, "", field_selector=f"spec.nodeName={name}")
        section = describe_node(obj, pods.items)
    elif isinstance(obj, apps_pb2.Deployment):
        rs = await client.list(apps_pb2.ReplicaSet, ns,
                               label_selector=str(selectors.from_message(obj.spec.selector)))
        section = describe_deployment(obj, rs.items)
    elif isinstance(obj, certificates_pb2.CertificateSigningRequest):
        section = describe_csr(obj, kind)
    elif isinstance(obj, core_pb2.Service):
        try:
            ep: core_pb2.Endpoints | None = await client.get(core_pb2.Endpoints, name, ns)
        except ApiError:
            ep = None
        section = describe_service(obj, ep)
    else:
        section = describe_generic(obj, kind)
    events_section(section, await _events_for(client, obj, kind))
    return section.render()
