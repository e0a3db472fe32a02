"""A container's CRI config: what the runtime is told to run for one container of a pod.

kuberuntime_container.go's generateContainerConfig and the kubelet's
makeEnvironmentVariables, written for Flotilla: the command and args with
`$(VAR)` expanded, the environment (the Services' variables, envFrom, then env
with values, field references and ConfigMap/Secret keys), the volume mounts, CPU and memory as
cgroup settings, the security context, and the labels that let a restarted
kubelet find the container again. Starting it is the pod sync's business
(pods.py); this module only says what to start.
"""

from __future__ import annotations

import re

from nodeagent.kubelet import serviceenv
from nodeagent.kubelet.runtime import LABEL_CONTAINER_NAME, pod_labels
from nodeagent.kubelet.sandbox import namespaces_for_pod
from nodeagent.kubelet.volumes import ConfigError, Volumes
from proto import core_pb2, cri_pb2
from proto.errors import ApiError
from proto.quantity import int_value, milli_value

CPU_PERIOD = 100_000  # microseconds: CFS quota is expressed against this period
MIN_SHARES = 2  # what a pod without a cpu request gets (BestEffort), as in the kubelet

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values; unknown references stay."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def generate_container_config(pod: core_pb2.Pod, spec: core_pb2.Container, *, image: str, attempt: int,
                     env: dict[str, str], mounts: list[tuple[str, str, bool]]) -> cri_pb2.ContainerConfig:
    """The CreateContainer config; `mounts` are (host path, container path, read-only) from volumes.py."""
    config = cri_pb2.ContainerConfig(
        metadata=cri_pb2.ContainerMetadata(name=spec.name, attempt=attempt),
        image=cri_pb2.ImageSpec(image=image),
        command=[expand(a, env) for a in spec.command],
        args=[expand(a, env) for a in spec.args],
        working_dir=spec.working_dir,
        envs=[cri_pb2.KeyValue(key=k, value=v) for k, v in env.items()],
        labels={**pod_labels(pod), LABEL_CONTAINER_NAME: spec.name},
        log_path=f"{spec.name}/{attempt}.log",
        stdin=spec.stdin, stdin_once=spec.stdin_once, tty=spec.tty)
    config.mounts.extend(cri_pb2.Mount(host_path=host, container_path=path, readonly=read_only)
                         for host, path, read_only in mounts)
    resources = config.linux.resources
    requests, limits = spec.resources.requests, spec.resources.limits
    cpu_request = requests.get("cpu") or limits.get("cpu")
    resources.cpu_shares = max(MIN_SHARES, milli_value(cpu_request) * 1024 // 1000) if cpu_request else MIN_SHARES
    if "cpu" in limits:
        resources.cpu_period = CPU_PERIOD
        resources.cpu_quota = max(1000, milli_value(limits["cpu"]) * CPU_PERIOD // 1000)
    if "memory" in limits:
        resources.memory_limit_in_bytes = int_value(limits["memory"])
    security = spec.security_context
    # The container joins the sandbox's namespaces, or the node's where the pod shares them.
    config.linux.security_context.namespace_options.CopyFrom(namespaces_for_pod(pod))
    if security.HasField("privileged"):
        config.linux.security_context.privileged = security.privileged
    if security.HasField("run_as_user"):
        config.linux.security_context.run_as_user.value = security.run_as_user
    if security.HasField("read_only_root_filesystem"):
        config.linux.security_context.readonly_rootfs = security.read_only_root_filesystem
    return config


_METADATA_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: core_pb2.Pod, path: str, fields: dict[str, str]) -> str:
    """The downward API's value of `path`: a pod field, or one label or annotation (`metadata.labels['k']`)."""
    keyed = _METADATA_KEY.match(path)
    if keyed is not None:
        values = pod.metadata.labels if keyed.group(1) == "labels" else pod.metadata.annotations
        return values.get(keyed.group(2), "")
    return fields.get(path, "")


async def environment(pod: core_pb2.Pod, spec: core_pb2.Container, *, pod_ip: str, host_ip: str,
                      volumes: Volumes) -> dict[str, str]:
    """The container's environment: the Services' variables (serviceenv.py), envFrom, then env (values,
    field and key references).

    Raises ConfigError when a referenced ConfigMap, Secret or key is missing and not optional:
    the container then waits (CreateContainerConfigError) until it appears.
    """
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
              "spec.serviceAccountName": pod.spec.service_account_name,
              "status.podIP": pod_ip, "status.hostIP": host_ip}
    namespace = pod.metadata.namespace
    try:
        # The Services' variables come first: the container's own env may use and override them.
        env = await serviceenv.for_pod(volumes.client, pod)
    except ApiError as err:
        raise ConfigError(f"failed to list services for the environment: {err}") from None
    for source in spec.env_from:
        if source.HasField("config_map_ref"):
            data = await volumes.config_map(namespace, source.config_map_ref.name, False)
        else:
            optional = source.secret_ref.optional if source.secret_ref.HasField("optional") else False
            data = await volumes.secret(namespace, source.secret_ref.name, optional)
        env.update({source.prefix + k: v.decode(errors="replace") for k, v in data.items()})
    for var in spec.env:
        ref = var.value_from
        if not var.HasField("value_from"):
            env[var.name] = expand(var.value, env)
        elif ref.HasField("field_ref"):
            env[var.name] = field_value(pod, ref.field_ref.field_path, fields)
        elif ref.HasField("config_map_key_ref") or ref.HasField("secret_key_ref"):
            key_ref = ref.config_map_key_ref if ref.HasField("config_map_key_ref") else ref.secret_key_ref
            optional = key_ref.optional if key_ref.HasField("optional") else False
            lookup = volumes.config_map if ref.HasField("config_map_key_ref") else volumes.secret
            data = await lookup(namespace, key_ref.name, optional)
            if key_ref.key in data:
                env[var.name] = data[key_ref.key].decode(errors="replace")
            elif not optional:
                raise ConfigError(f"couldn't find key {key_ref.key} in {key_ref.name}")
    return env
