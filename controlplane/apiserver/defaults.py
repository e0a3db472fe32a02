"""Defaulting: the values the apiserver writes into fields a client left empty.

Kubernetes stores objects fully spelled out: a Pod that said nothing about its
restart policy is stored with `restartPolicy: Always`, a Service port without a
protocol with `protocol: TCP`. Every component downstream (scheduler, kubelet,
proxy, controllers) then reads one explicit value instead of re-deriving the
default, and `kctl get -o yaml` shows what the cluster will actually do.

Each kind's strategy (strategies/) calls its function here on every create and
update, before validation, so validation sees (and may rely on) the defaulted
object. Lease, Event, ConfigMap and Node have nothing to default.
Defaulting only fills what is unset; it never overrides what a client wrote, and
applying it twice changes nothing. The values are those of Kubernetes'
`SetDefaults_*` functions (pkg/apis/*/v1/defaults.go).
"""

from __future__ import annotations

from controlplane.apiserver.validation.podspec import VOLUME_SOURCES
from proto import apps_pb2, autoscaling_pb2, batch_pb2, core_pb2, discovery_pb2, policy_pb2, storage_pb2

_DEFAULT_FILE_MODE = 0o644  # what configMap and secret volume files get unless told otherwise


# ---------------------------------------------------------------- Pod spec


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image (the tag means "whatever is newest"), else IfNotPresent.

    A digest pins the content exactly, so `nginx@sha256:...` is IfNotPresent.
    """
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]  # a registry host may carry a port: localhost:5000/nginx has no tag
    tag = last.rpartition(":")[2] if ":" in last else ""
    if tag == "latest" or (not tag and not digest):
        return "Always"
    return "IfNotPresent"


def _http_get(action: core_pb2.HTTPGetAction) -> None:
    if not action.path:
        action.path = "/"
    if not action.scheme:
        action.scheme = "HTTP"


def _probe(probe: core_pb2.Probe) -> None:
    if not probe.timeout_seconds:
        probe.timeout_seconds = 1
    if not probe.period_seconds:
        probe.period_seconds = 10
    if not probe.success_threshold:
        probe.success_threshold = 1
    if not probe.failure_threshold:
        probe.failure_threshold = 3
    if probe.HasField("http_get"):
        _http_get(probe.http_get)


def _container(c: core_pb2.Container, *, host_network: bool) -> None:
    if not c.termination_message_path:
        c.termination_message_path = "/dev/termination-log"
    if not c.termination_message_policy:
        c.termination_message_policy = "File"
    if not c.image_pull_policy:
        c.image_pull_policy = image_pull_policy(c.image)
    for port in c.ports:
        if not port.protocol:
            port.protocol = "TCP"
        if host_network and not port.host_port:
            # On the host's network the container binds the node's port itself.
            port.host_port = port.container_port
    if c.HasField("liveness_probe"):
        _probe(c.liveness_probe)
    if c.HasField("readiness_probe"):
        _probe(c.readiness_probe)
    if c.HasField("startup_probe"):
        _probe(c.startup_probe)
    for hook in (c.lifecycle.post_start, c.lifecycle.pre_stop):
        if hook.HasField("http_get"):
            _http_get(hook.http_get)
    # A limit alone means "exactly this much": the scheduler and the kubelet's QoS
    # class read requests, so a limit-only container must not count as requesting nothing.
    for name, limit in c.resources.limits.items():
        if name not in c.resources.requests:
            c.resources.requests[name] = limit
    for var in c.env:
        if var.value_from.HasField("field_ref") and not var.value_from.field_ref.api_version:
            var.value_from.field_ref.api_version = "v1"


def _volume(volume: core_pb2.Volume) -> None:
    if not any(volume.HasField(s) for s in VOLUME_SOURCES):  # type: ignore[arg-type]
        volume.empty_dir.SetInParent()  # a bare `- name: scratch` is scratch space
    if volume.HasField("config_map") and not volume.config_map.HasField("default_mode"):
        volume.config_map.default_mode = _DEFAULT_FILE_MODE
    if volume.HasField("secret") and not volume.secret.HasField("default_mode"):
        volume.secret.default_mode = _DEFAULT_FILE_MODE
    if volume.HasField("projected"):
        if not volume.projected.HasField("default_mode"):
            volume.projected.default_mode = _DEFAULT_FILE_MODE
        for source in volume.projected.sources:
            token = source.service_account_token
            if source.HasField("service_account_token") and not token.HasField("expiration_seconds"):
                token.expiration_seconds = 3600  # an hour, as Kubernetes
            for item in source.downward_api.items:
                if item.HasField("field_ref") and not item.field_ref.api_version:
                    item.field_ref.api_version = "v1"


def default_pod_spec(spec: core_pb2.PodSpec) -> None:
    """A Pod's spec, or a ReplicaSet's or Deployment's template spec: the same defaults everywhere.

    Templates are defaulted too, so a Deployment's stored template equals the pods
    it stamps out, and the controller's template hash does not change on a re-apply.
    NoExecute tolerations for not-ready/unreachable nodes are not added here:
    that is admission's job in Kubernetes (DefaultTolerationSeconds).
    """
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.scheduler_name:
        spec.scheduler_name = "default-scheduler"
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    spec.security_context.SetInParent()
    for c in (*spec.init_containers, *spec.containers):
        _container(c, host_network=spec.host_network)
    for volume in spec.volumes:
        _volume(volume)


def default_pod(pod: core_pb2.Pod) -> None:
    default_pod_spec(pod.spec)


# ---------------------------------------------------------------- Service, Endpoints


def default_service(svc: core_pb2.Service) -> None:
    spec = svc.spec
    if not spec.type:
        spec.type = "ClusterIP"
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "ClientIP" and not spec.session_affinity_config.client_ip.HasField(
            "timeout_seconds"):
        spec.session_affinity_config.client_ip.timeout_seconds = 10800  # three hours
    for port in spec.ports:
        if not port.protocol:
            port.protocol = "TCP"
        if port.target_port in ("", "0"):
            # The common case: the pod listens on the same port the Service exposes.
            port.target_port = str(port.port)
    if spec.type != "ExternalName" and not spec.internal_traffic_policy:
        spec.internal_traffic_policy = "Cluster"
    if spec.type != "ExternalName":
        # Flotilla's clusters are IPv4 only: every Service gets one family, as a single-stack Kubernetes records.
        if not spec.ip_family_policy:
            spec.ip_family_policy = "SingleStack"
        if not spec.ip_families:
            spec.ip_families.append("IPv4")
    if spec.type in ("NodePort", "LoadBalancer") and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.type == "LoadBalancer" and not spec.HasField("allocate_load_balancer_node_ports"):
        spec.allocate_load_balancer_node_ports = True


def default_endpoints(ep: core_pb2.Endpoints) -> None:
    for subset in ep.subsets:
        for port in subset.ports:
            if not port.protocol:
                port.protocol = "TCP"


def default_endpoint_slice(eps: discovery_pb2.EndpointSlice) -> None:
    """Every port named ("") and TCP unless said (SetDefaults_EndpointPort)."""
    for port in eps.ports:
        if not port.HasField("name"):
            port.name = ""
        if not port.HasField("protocol"):
            port.protocol = "TCP"


# ---------------------------------------------------------------- ReplicaSet, Deployment


def default_replica_set(rs: apps_pb2.ReplicaSet) -> None:
    if not rs.spec.HasField("replicas"):
        rs.spec.replicas = 1
    default_pod_spec(rs.spec.template.spec)


def default_deployment(d: apps_pb2.Deployment) -> None:
    spec = d.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.strategy.type:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        rolling = spec.strategy.rolling_update
        # 25% either way: a rollout keeps three quarters of the pods serving and
        # never runs more than a quarter extra.
        if not rolling.max_unavailable:
            rolling.max_unavailable = "25%"
        if not rolling.max_surge:
            rolling.max_surge = "25%"
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = 600
    default_pod_spec(spec.template.spec)


def default_daemon_set(ds: apps_pb2.DaemonSet) -> None:
    """RollingUpdate one node at a time, ten revisions kept (SetDefaults_DaemonSet)."""
    spec = ds.spec
    strategy = spec.update_strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update  # touching it sets it: RollingUpdate always has one
        rolling.SetInParent()
        if not rolling.max_unavailable:
            rolling.max_unavailable = "1"
        if not rolling.max_surge:
            rolling.max_surge = "0"
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    default_pod_spec(spec.template.spec)


def default_stateful_set(sts: apps_pb2.StatefulSet) -> None:
    """One replica, OrderedReady, RollingUpdate from partition 0, ten revisions, claims retained
    (SetDefaults_StatefulSet); each claim template defaulted as a claim is."""
    spec = sts.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.pod_management_policy:
        spec.pod_management_policy = "OrderedReady"
    strategy = spec.update_strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        rolling.SetInParent()
        if not rolling.HasField("partition"):
            rolling.partition = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    # Claims are kept unless the user asks otherwise: losing data must be a choice.
    retention = spec.persistent_volume_claim_retention_policy
    if not retention.when_deleted:
        retention.when_deleted = "Retain"
    if not retention.when_scaled:
        retention.when_scaled = "Retain"
    for claim in spec.volume_claim_templates:
        default_persistent_volume_claim(claim)
    default_pod_spec(spec.template.spec)


# ---------------------------------------------------------------- Job, CronJob


def default_job_spec(spec: batch_pb2.JobSpec) -> None:
    """A Job's spec: one pod at a time, one success, six retries (SetDefaults_Job)."""
    if not spec.HasField("completions") and not spec.HasField("parallelism"):
        # Neither said: a single pod that must succeed once.
        spec.completions = 1
    if not spec.HasField("parallelism"):
        spec.parallelism = 1
    if not spec.HasField("backoff_limit"):
        spec.backoff_limit = 6
    if not spec.HasField("completion_mode"):
        spec.completion_mode = "NonIndexed"
    if not spec.HasField("suspend"):
        spec.suspend = False
    for rule in spec.pod_failure_policy.rules:
        for pattern in rule.on_pod_conditions:
            if not pattern.status:
                pattern.status = "True"
    if not spec.HasField("pod_replacement_policy"):
        # With a podFailurePolicy the controller must see how a pod ended before replacing it.
        spec.pod_replacement_policy = "Failed" if spec.HasField("pod_failure_policy") else "TerminatingOrFailed"
    # restartPolicy is defaulted to Always like any pod's, which Job validation then
    # refuses: a Job's pods must be allowed to finish, and the user must say how.
    default_pod_spec(spec.template.spec)


def default_job(job: batch_pb2.Job) -> None:
    default_job_spec(job.spec)
    if job.spec.template.metadata.labels and not job.metadata.labels:
        # A Job without labels of its own is labelled as its pods are (kubectl get -l finds both).
        job.metadata.labels.update(job.spec.template.metadata.labels)


def default_cron_job(cj: batch_pb2.CronJob) -> None:
    spec = cj.spec
    if not spec.concurrency_policy:
        spec.concurrency_policy = "Allow"
    if not spec.HasField("suspend"):
        spec.suspend = False
    if not spec.HasField("successful_jobs_history_limit"):
        spec.successful_jobs_history_limit = 3
    if not spec.HasField("failed_jobs_history_limit"):
        spec.failed_jobs_history_limit = 1
    # Only the pod template is defaulted here; each Job made from the template gets
    # the Job defaults when it is created, as in Kubernetes.
    default_pod_spec(spec.job_template.spec.template.spec)


# ---------------------------------------------------------------- the small kinds


def default_namespace(ns: core_pb2.Namespace) -> None:
    # The "kubernetes" finalizer holds a deleted namespace until the namespace
    # controller has emptied it. Once deletion has begun, the finalizer list only
    # shrinks: adding it back would keep the namespace forever.
    if not ns.spec.finalizers and not ns.metadata.HasField("deletion_timestamp"):
        ns.spec.finalizers.append("kubernetes")
    if not ns.status.phase:
        ns.status.phase = "Active"


def default_secret(secret: core_pb2.Secret) -> None:
    if not secret.type:
        secret.type = "Opaque"
    # stringData is a write-only convenience: Kubernetes folds it into data (it wins
    # over data on the same key) and never stores or returns it.
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")


def default_horizontal_pod_autoscaler(hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> None:
    spec = hpa.spec
    if not spec.HasField("min_replicas"):
        spec.min_replicas = 1
    if not spec.metrics:
        metric = spec.metrics.add(type="Resource")
        metric.resource.name = "cpu"
        metric.resource.target.type = "Utilization"
        metric.resource.target.average_utilization = 80


def default_pod_disruption_budget(pdb: policy_pb2.PodDisruptionBudget) -> None:
    """A budget that names neither bound keeps at least one pod (minAvailable 1), as policy/v1 does."""
    spec = pdb.spec
    if not spec.min_available and not spec.max_unavailable:
        spec.min_available = "1"


# ---------------------------------------------------------------- PersistentVolume, PersistentVolumeClaim, StorageClass


def default_persistent_volume(pv: core_pb2.PersistentVolume) -> None:
    """Retain, Filesystem, phase Pending (SetDefaults_PersistentVolume): a volume made by hand is kept."""
    if not pv.spec.persistent_volume_reclaim_policy:
        pv.spec.persistent_volume_reclaim_policy = "Retain"
    if not pv.spec.HasField("volume_mode"):
        pv.spec.volume_mode = "Filesystem"
    if not pv.status.phase:
        pv.status.phase = "Pending"


def default_persistent_volume_claim(pvc: core_pb2.PersistentVolumeClaim) -> None:
    """Filesystem, phase Pending (SetDefaults_PersistentVolumeClaim); the class is admission's (DefaultStorageClass)."""
    if not pvc.spec.HasField("volume_mode"):
        pvc.spec.volume_mode = "Filesystem"
    if not pvc.status.phase:
        pvc.status.phase = "Pending"


def default_storage_class(sc: storage_pb2.StorageClass) -> None:
    """Delete and Immediate (SetDefaults_StorageClass): provisioned volumes go with their claims."""
    if not sc.HasField("reclaim_policy"):
        sc.reclaim_policy = "Delete"
    if not sc.HasField("volume_binding_mode"):
        sc.volume_binding_mode = "Immediate"
