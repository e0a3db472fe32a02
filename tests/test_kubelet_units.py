"""The kubelet's pure rules, without a runtime: phase, back-off, CRI log parsing, CNI config, image names."""

from __future__ import annotations

from typing import cast

from client import Client
from nodeagent.kubelet import dns, network
from nodeagent.kubelet import status as podstatus
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.containers import expand, field_value
from nodeagent.kubelet.images import image_candidates
from nodeagent.kubelet.server import CRILogParser
from proto import core_pb2, cri_pb2, meta_pb2
from proto.errors import Conflict


def view(state: cri_pb2.ContainerState.ValueType | None, exit_code: int = 0, attempt: int = 0,
         will_restart: bool = False) -> podstatus.ContainerView:
    latest = None if state is None else cri_pb2.ContainerStatus(
        id="abc", state=state, exit_code=exit_code, metadata=cri_pb2.ContainerMetadata(name="c", attempt=attempt))
    return podstatus.ContainerView(core_pb2.Container(name="c"), latest, None, will_restart=will_restart)


def test_phase_follows_the_kubelets_rules() -> None:
    running, exited = cri_pb2.CONTAINER_RUNNING, cri_pb2.CONTAINER_EXITED
    assert podstatus.phase([view(None)], "Always") == "Pending"
    assert podstatus.phase([view(running), view(None)], "Always") == "Pending"
    assert podstatus.phase([view(running)], "Never") == "Running"
    assert podstatus.phase([view(exited, 1, will_restart=True)], "Always") == "Running"
    assert podstatus.phase([view(exited, 0), view(exited, 2)], "Never") == "Failed"
    assert podstatus.phase([view(exited, 0)], "OnFailure") == "Succeeded"
    assert podstatus.phase([view(exited, 0)], "Always") == "Running"
    assert podstatus.phase([view(cri_pb2.CONTAINER_CREATED, attempt=2)], "Always") == "Running"


def test_crash_loop_status_shows_back_off_and_the_last_termination() -> None:
    v = view(cri_pb2.CONTAINER_EXITED, 1, attempt=3, will_restart=True)
    v.waiting_reason, v.waiting_message = "CrashLoopBackOff", "back-off 20s"
    status = podstatus.container_status(v)
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 1 and status.last_state.terminated.reason == "Error"
    assert status.restart_count == 3 and not status.ready


def test_back_off_doubles_to_its_maximum_and_resets_after_a_long_run() -> None:
    b = Backoff(initial=10, maximum=40, reset=600)
    key = ("uid", "c")
    assert b.remaining(key, finished_at=100, now=100) == 0  # the first restart is immediate
    b.next(key, 100)
    assert b.remaining(key, finished_at=101, now=105) == 6
    delays = []
    for t in (120, 150, 200, 250):
        b.next(key, t)
        delays.append(b.delay(key))
    assert delays == [20, 40, 40, 40]
    b.next(key, 2000)  # ran for longer than `reset`: start over
    assert b.delay(key) == 10


def test_cri_log_lines_are_joined_across_partial_records_and_reads() -> None:
    parser = CRILogParser()
    assert parser.feed(b"2026-01-01T00:00:00Z stdout F hello\n2026-01-01T00:00:01Z stdout P par") == [b"hello\n"]
    assert parser.feed(b"t\n2026-01-01T00:00:02Z stderr F ial line\n") == [b"partial line\n"]
    stamped = CRILogParser(timestamps=True)
    assert stamped.feed(b"2026-01-01T00:00:00Z stdout F x\n") == [b"2026-01-01T00:00:00Z x\n"]


def test_conflist_is_bridge_host_local_portmap_and_loopback(tmp_path) -> None:
    config = network.conflist(network="flotilla-n1", bridge="cni0", pod_cidr="10.244.1.0/24", data_dir="/d")
    plugins = config["plugins"]
    assert isinstance(plugins, list)
    assert [p["type"] for p in plugins] == ["bridge", "portmap", "loopback"]
    assert plugins[1]["capabilities"] == {"portMappings": True}  # containerd passes hostPorts only then
    assert plugins[0]["isDefaultGateway"] is True and plugins[0]["ipMasq"] is False
    assert network.write_conflist(tmp_path, config) is True
    assert network.write_conflist(tmp_path, config) is False  # unchanged: containerd is not poked
    assert network.current_pod_cidr(tmp_path) == "10.244.1.0/24"


def test_short_image_names_try_the_cluster_registry_first() -> None:
    registry = "10.0.0.5:5000"
    assert image_candidates("nginx:1.25", registry) == ["10.0.0.5:5000/library/nginx:1.25", "nginx:1.25"]
    assert image_candidates("alice/web", registry) == ["10.0.0.5:5000/alice/web", "alice/web"]
    assert image_candidates("localhost/busybox:latest", registry) == ["localhost/busybox:latest"]
    assert image_candidates("quay.io/x/y", registry) == ["quay.io/x/y"]
    assert image_candidates("nginx", "") == ["nginx"]  # no cluster registry: the name as given


def test_dependent_environment_variables_expand() -> None:
    assert expand("$(A)-$(B)-$(MISSING)", {"A": "1", "B": "2"}) == "1-2-$(MISSING)"


def test_cluster_first_dns_gives_the_search_path_but_not_to_host_network_pods() -> None:
    pod = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="shop"))
    dns_config = cri_pb2.DNSConfig()
    dns.pod_dns(pod, dns_config, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local")
    assert list(dns_config.servers) == ["10.96.0.10"]
    assert list(dns_config.searches) == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert list(dns_config.options) == ["ndots:5"]
    pod.spec.host_network = True
    sandbox = cri_pb2.PodSandboxConfig()
    dns.pod_dns(pod, sandbox.dns_config, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local")
    assert not sandbox.HasField("dns_config")  # the node's own resolv.conf
    pod.spec.dns_policy = "ClusterFirstWithHostNet"
    dns.pod_dns(pod, sandbox.dns_config, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local")
    assert list(sandbox.dns_config.servers) == ["10.96.0.10"]


class _ConflictOnce:
    """A client whose first status write conflicts and whose fresh read returns `fresh`."""

    def __init__(self, fresh: core_pb2.Pod) -> None:
        self.fresh = fresh
        self.written: list[core_pb2.Pod] = []

    async def get(self, cls: type, name: str, namespace: str = "") -> core_pb2.Pod:
        return self.fresh

    async def update_status(self, obj: core_pb2.Pod) -> core_pb2.Pod:
        if not self.written:
            self.written.append(obj)
            raise Conflict("the pod changed")
        self.written.append(obj)
        return obj


async def test_pod_status_is_written_again_on_the_fresh_pod_unless_it_is_another_pod() -> None:
    pod = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="web", namespace="default", uid="u1"))
    status = core_pb2.PodStatus(phase="Running")
    fresh = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="web", namespace="default", uid="u1",
                                                      resource_version="7"))
    client = _ConflictOnce(fresh)
    await podstatus.update_pod_status(cast(Client, client), pod, status)
    assert [p.metadata.resource_version for p in client.written] == ["", "7"]
    assert client.written[-1].status.phase == "Running"
    fresh.metadata.uid = "u2"  # deleted and created again under the same name
    client = _ConflictOnce(fresh)
    await podstatus.update_pod_status(cast(Client, client), pod, status)
    assert len(client.written) == 1  # tried once, then left the new pod alone


def test_downward_api_reads_one_label_or_annotation() -> None:
    # Indexed Jobs hand each pod its index this way: env from metadata.annotations['...'].
    pod = core_pb2.Pod()
    pod.metadata.name = "web-0"
    pod.metadata.labels["app"] = "web"
    pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] = "2"
    fields = {"metadata.name": pod.metadata.name}
    assert field_value(pod, "metadata.annotations['batch.kubernetes.io/job-completion-index']", fields) == "2"
    assert field_value(pod, "metadata.labels['app']", fields) == "web"
    assert field_value(pod, "metadata.labels['missing']", fields) == ""
    assert field_value(pod, "metadata.name", fields) == "web-0"
