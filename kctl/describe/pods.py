"""Describing a pod: its node and status, each container's image, state and probes, volumes, tolerations."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.printers.text import NONE, age, now, timestamp
from kctl.describe.section import Section, annotation_lines, controlled_by, pairs, rfc1123
from proto import core_pb2


def _container_ports(c: core_pb2.Container) -> tuple[str, str]:
    ports = ",".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports) or NONE
    host = ",".join(f"{p.host_port}/{p.protocol or 'TCP'}" for p in c.ports) or NONE
    return ports, host


def _state(s: Section, level: int, key: str, state: core_pb2.ContainerState) -> None:
    if state.HasField("running"):
        s.kv(level, key, "Running")
        s.kv(level + 1, "Started", rfc1123(timestamp(state.running, "started_at")))
    elif state.HasField("terminated"):
        t = state.terminated
        s.kv(level, key, "Terminated")
        s.kv(level + 1, "Reason", t.reason or NONE)
        if t.message:
            s.kv(level + 1, "Message", t.message)
        s.kv(level + 1, "Exit Code", t.exit_code)
        if t.signal:
            s.kv(level + 1, "Signal", t.signal)
        s.kv(level + 1, "Started", rfc1123(timestamp(t, "started_at")))
        s.kv(level + 1, "Finished", rfc1123(timestamp(t, "finished_at")))
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


def containers(s: Section, level: int, title: str, containers: Sequence[core_pb2.Container],
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
    start = timestamp(status, "start_time")
    if start is not None:
        s.kv(0, "Start Time", rfc1123(start))
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    if meta.HasField("deletion_timestamp"):
        grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") else 0
        s.kv(0, "Status", f"Terminating (lasts {age(pod, now())})")
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
    owner = controlled_by(meta)
    if owner:
        s.kv(0, "Controlled By", owner)
    containers(s, 0, "Init Containers", spec.init_containers, status.init_container_statuses)
    containers(s, 0, "Containers", spec.containers, status.container_statuses)
    if status.conditions:
        s.header(0, "Conditions:")
        s.table(1, [["Type", "Status"], *[[c.type, c.status] for c in status.conditions]], underline=False)
    _volumes(s, spec.volumes)
    s.kv(0, "QoS Class", status.qos_class or NONE)
    s.many(0, "Node-Selectors", pairs(spec.node_selector))
    s.many(0, "Tolerations", _tolerations(spec.tolerations))
    return s
