"""Issue 18: a highly available control plane -- three masters, a 3-member etcd, one API address.

Given `kctl cluster up --masters 3 --workers 2` (its own name, subnet
192.168.84.0/24, bridge flt84h and pod network 10.84.0.0/16; its own HOME and
KUBECONFIG):

- five Nodes are Ready, the three masters with the control-plane role and
  NoSchedule taint; `kctl etcd member list` shows three started members named
  after them; kubectl and kctl reach the API through the virtual IP, which one
  master holds, and the scheduler and controller manager hold their Leases;
- the apiserver of the master holding the VIP is SIGKILLed during writes: the
  API answers through the VIP again within 5 s (another master's), nothing
  acknowledged is lost;
- while clients write ConfigMaps through the VIP and a Deployment is scaled
  from 2 to 4, the master holding the VIP *and* both leaderships is frozen
  and cut off: the API answers through the VIP again within 5 s, both
  leaderships move within 20 s, no acknowledged write is lost, no pod is
  duplicated, the Deployment converges (4 pods, each bound to a node: the
  control plane's part); healed, the master's etcd member is healthy again;
- with two of the three masters frozen and cut off, a write through the VIP
  fails with a clear "no quorum" error (504) within the request timeout (etcd
  may still apply it once a quorum returns, which the message says); one
  master back, writes resume;
- `kctl cluster add-master` makes a fourth master (member, Node, kube-dns) and
  `remove-master` takes it out again (member first).

In the default run (about two minutes, 30 processes; CI runs it), marked `ha`:
`tests/run -m "not ha"` leaves it out. Needs root, containerd, runc and the
CNI plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from client import config as clientconfig
from client.api import Client
from proto import apps_pb2, coordination_pb2, core_pb2
from proto.errors import ApiError, Timeout
from provision import components, etcd_members, localha
from provision.localplan import ClusterState, load_state
from provision.processes import free_port
from tests.e2e.test_seed_journey import KCTL, Cluster, table_rows
from tests.faults.support import Acknowledged, create_until_acknowledged, eventually, lost_and_duplicated, report

NAME = "hac"
SUBNET_PREFIX = "192.168.84"
BRIDGE = "flt84h"
POD_NETWORK = "10.84.0.0/16"
VIP = f"{SUBNET_PREFIX}.254"
MASTERS = [f"{NAME}-master-{i}" for i in (1, 2, 3)]
WORKERS = [f"{NAME}-worker-{i}" for i in (1, 2)]
WRITERS = 16  # concurrent writing clients (each as fast as the API answers it)
LEASES = ("flotilla-scheduler", "flotilla-controller-manager")

pytestmark = [
    pytest.mark.ha,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
                       reason="needs root, containerd and the CNI plugins (the local provider makes namespaces)"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("ha"))
    home = os.environ.get("FLOTILLA_HOME")
    os.environ["FLOTILLA_HOME"] = c.env["FLOTILLA_HOME"]
    try:
        started = time.monotonic()
        c.kctl("cluster", "up", "--name", NAME, "--masters", "3", "--workers", "2", "--subnet",
               f"{SUBNET_PREFIX}.0/24", "--bridge", BRIDGE, "--pod-network", POD_NETWORK,
               "--api-port", str(free_port()), "--etcd-port", str(free_port()), timeout=400)
        print(f"3-master cluster up in {time.monotonic() - started:.1f} s")
        yield c
    finally:
        state = _state(c)
        if state is not None:  # a failed test may leave a master frozen or cut: down must reach it
            for node in MASTERS:
                localha.thaw(state, node)
                with contextlib.suppress(subprocess.CalledProcessError):
                    localha.heal(state, node)
        c.kctl("cluster", "down", "--name", NAME, check=False, timeout=300)
        if home is None:
            del os.environ["FLOTILLA_HOME"]
        else:
            os.environ["FLOTILLA_HOME"] = home


def _state(c: Cluster) -> ClusterState | None:
    # The state's folder follows $FLOTILLA_HOME whenever it is read (localha finds pids.json there): the
    # fixture points this process at the cluster's home for the module's duration.
    assert os.environ.get("FLOTILLA_HOME") == c.env["FLOTILLA_HOME"]
    return load_state(NAME)


def state_of(c: Cluster) -> ClusterState:
    state = _state(c)
    assert state is not None
    return state


def kubectl(c: Cluster, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["kubectl", *args], env=c.env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def client_of(state: ClusterState, timeout: float = 5.0) -> Client:
    return clientconfig.load(kubeconfig=state.kubeconfig).client(timeout=timeout)


async def leaders(client: Client, state: ClusterState) -> dict[str, str]:
    """Lease -> the master its holder runs on."""
    found = {}
    for name in LEASES:
        lease = await client.get(coordination_pb2.Lease, name, "kube-system")
        found[name] = localha.leader_node(state, lease.spec.holder_identity)
    return found


def test_three_masters_behind_one_address(cluster: Cluster) -> None:
    state = state_of(cluster)
    # Five Nodes Ready; the masters with the control-plane role and its NoSchedule taint.
    nodes = {r["NAME"]: r for r in table_rows(kubectl(cluster, "get", "nodes").stdout)}
    assert sorted(nodes) == sorted(MASTERS + WORKERS)
    assert all(r["STATUS"] == "Ready" for r in nodes.values()), nodes
    assert {n for n, r in nodes.items() if r["ROLES"] == "control-plane"} == set(MASTERS)
    taints = kubectl(cluster, "get", "nodes", "-o",
                     "jsonpath={range .items[*]}{.metadata.name}={.spec.taints[*].key}{'\\n'}{end}").stdout
    tainted = {line.partition("=")[0] for line in taints.splitlines() if "control-plane" in line}
    assert tainted == set(MASTERS)

    # etcd: three started members, named after the masters.
    members = table_rows(cluster.kctl("etcd", "member", "list", "--cluster", NAME))
    assert sorted(m["NAME"] for m in members) == MASTERS
    assert {m["STATUS"] for m in members} == {"started"}

    # kubectl and kctl go through the virtual IP, which exactly one master holds.
    config = kubectl(cluster, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert config == f"https://{VIP}:{state.api_address.rpartition(':')[2]}"
    assert MASTERS[0] in kubectl(cluster, "get", "nodes").stdout
    assert NAME in cluster.kctl("get", "nodes")
    assert localha.vip_holder(state) in MASTERS

    # The API's serving certificate names the VIP and every master.
    cert = x509.load_pem_x509_certificate((state.config_dir / f"{components.APISERVER}.crt").read_bytes())
    sans = {str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            .get_values_for_type(x509.IPAddress)}
    assert {VIP, *(n.address for n in state.master_infos())} <= sans, sans

    # One scheduler and one controller manager act; every copy is there to take over.
    async def held() -> dict[str, str]:
        async with client_of(state) as client:
            return await leaders(client, state)

    assert set(asyncio.run(held()).values()) <= set(MASTERS)


async def _steer_leaders_to(state: ClusterState, client: Client, node: str) -> None:
    """Have the master `node` hold every Lease: stop the other leaders (SIGTERM hands the Lease over) until the
    copy on `node` wins, so one fault takes the VIP and both leaderships at once."""
    deadline = time.monotonic() + 120
    while True:
        held = await leaders(client, state)
        if all(n == node for n in held.values()):
            return
        assert time.monotonic() < deadline, f"leaders stayed away from {node}: {held}"
        for lease, holder in held.items():
            if holder and holder != node:
                daemon = "scheduler" if lease == "flotilla-scheduler" else "controller-manager"
                with contextlib.suppress(ProcessLookupError, KeyError):
                    os.kill(localha.daemon_pids(state, holder)[daemon], 15)
        await asyncio.sleep(3)


async def _deployment_placed(client: Client, name: str, replicas: int) -> bool:
    """The control plane's part of a Deployment converged: `replicas` live pods, each bound to a node, and the
    ReplicaSet's status agreeing (the kubelets' part, containers running, is not what fails over here)."""
    pods = [p for p in (await client.list(core_pb2.Pod, "default", label_selector=f"app={name}")).items
            if not p.metadata.deletion_timestamp.seconds]
    sets = (await client.list(apps_pb2.ReplicaSet, "default", label_selector=f"app={name}")).items
    return (len(pods) == replicas and all(p.spec.node_name for p in pods)
            and sum(rs.status.replicas for rs in sets) == replicas)


async def _writer(client: Client, prefix: str, acked: Acknowledged, stop: asyncio.Event) -> None:
    """ConfigMaps `<prefix>-<i>` in namespace writes, one after the other, each until acknowledged."""
    i = 0
    while not stop.is_set():
        cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
        cm.metadata.name, cm.metadata.namespace = f"{prefix}-{i}", "writes"
        await create_until_acknowledged(client, cm, acked, deadline=time.monotonic() + 60)
        i += 1


def test_sigkill_of_the_apiserver_holding_the_vip(cluster: Cluster) -> None:
    state = state_of(cluster)
    kubectl(cluster, "create", "namespace", "writes")

    async def scenario() -> None:
        async with client_of(state) as client:
            acked, stop = Acknowledged({}), asyncio.Event()
            writers = [asyncio.create_task(_writer(client, f"kill{n}", acked, stop)) for n in range(WRITERS)]
            await asyncio.sleep(2)
            holder = localha.vip_holder(state)
            fault = time.monotonic()
            localha.kill(state, holder, "apiserver")
            answered = await localha.api_answered_after(state, fault)
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*writers)
            stored = [c for c in (await client.list(core_pb2.ConfigMap, "writes")).items
                      if c.metadata.name.startswith("kill")]  # not kube-root-ca.crt
            lost, duplicated = lost_and_duplicated(acked, stored, len(acked.uids))
            print(f"apiserver on {holder} killed: API back through the VIP after {answered:.1f} s (now on "
                  f"{localha.vip_holder(state)}), {len(acked.uids)} writes, {acked.retried} retried")
            result = report("ha: SIGKILL of the apiserver holding the VIP", checked=len(acked.uids), lost=lost,
                            duplicated=duplicated, converged=answered, bound=5)
            assert result.passed, result.line

    asyncio.run(scenario())


def test_the_master_holding_the_vip_and_the_leaderships_fails(cluster: Cluster) -> None:
    state = state_of(cluster)
    kubectl(cluster, "create", "deployment", "web", "--image=busybox", "--replicas=2", "--", "sleep", "3600")

    async def scenario() -> None:
        async with client_of(state) as client:
            await eventually(lambda: _deployment_placed(client, "web", 2), "web with 2 pods", 120)
            victim = localha.vip_holder(state)
            await _steer_leaders_to(state, client, victim)
            print(f"victim {victim}: VIP and leases {await leaders(client, state)}")
            acked = Acknowledged({})
            stop = asyncio.Event()
            writers = [asyncio.create_task(_writer(client, f"w{n}", acked, stop)) for n in range(WRITERS)]
            await asyncio.sleep(3)
            rate = len(acked.uids) / 3
            # The fault: the whole master stops and leaves the network.
            fault = time.monotonic()
            localha.freeze(state, victim)
            localha.cut(state, victim)
            answered = await localha.api_answered_after(state, fault)
            # The Deployment is scaled while its controller manager's leader is gone.
            scaled = False
            while not scaled:
                with contextlib.suppress(ApiError):
                    d = await client.get(apps_pb2.Deployment, "web", "default")
                    d.spec.replicas = 4
                    await client.update(d)
                    scaled = True
            moved = await eventually(lambda: _leaders_away(client, state, victim), "leaderships to move", 40)
            moved_after = time.monotonic() - fault
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*writers)
            converged_by = await eventually(lambda: _deployment_placed(client, "web", 4), "web with 4 pods", 120)
            converged = time.monotonic() - fault
            stored = (await client.list(core_pb2.ConfigMap, "writes")).items
            lost, duplicated = lost_and_duplicated(acked, [c for c in stored if c.metadata.name.startswith("w")],
                                                   len(acked.uids))
            pods = (await client.list(core_pb2.Pod, "default", label_selector="app=web")).items
            live = [p for p in pods if not p.metadata.deletion_timestamp.seconds]
            duplicated += max(0, len(live) - 4)
            print(f"writes {len(acked.uids)} at {rate:.0f}/s before the fault, {acked.retried} retried; API back "
                  f"through the VIP after {answered:.1f} s; leaders moved after {moved_after:.1f} s to {moved}")
            report("ha: master holding the VIP and the leaderships frozen and cut", checked=len(acked.uids) + 4,
                   lost=lost, duplicated=duplicated, converged=converged, bound=120)
            assert converged_by
            assert answered <= 5.0, f"the API answered through the VIP only after {answered:.1f} s"
            assert moved_after <= 20.0, f"leadership moved only after {moved_after:.1f} s"
            assert lost == 0 and duplicated == 0

            # Healed: the member rejoins and is healthy; all three started.
            localha.thaw(state, victim)
            await asyncio.sleep(1.5)  # the thawed announcer lets go of the VIP before the link returns
            localha.heal(state, victim)
            tls = _etcd_tls(state)
            url = next(u for u in state.etcd_endpoints() if state.master_infos()[MASTERS.index(victim)].address in u)
            await eventually(lambda: etcd_members.healthy(url, tls), f"{victim}'s etcd member healthy", 60)
            members = await etcd_members.members(state.etcd_endpoints(), tls)
            assert sorted(m.name for m in members) == MASTERS and {m.status for m in members} == {"started"}
            assert len([h for h in [localha.vip_holder(state)] if h]) == 1

    asyncio.run(scenario())


def test_losing_two_of_three_masters_refuses_writes_clearly(cluster: Cluster) -> None:
    state = state_of(cluster)
    lost_masters = MASTERS[1:]  # master-1 survives

    async def scenario() -> None:
        try:
            for node in lost_masters:
                localha.freeze(state, node)
                localha.cut(state, node)
            async with client_of(state, timeout=15) as client:
                # The survivor's announcer holds the VIP as the last resort; its apiserver answers every write
                # with the no-quorum error instead of leaving clients to time out.
                refused = None
                started = time.monotonic()
                while refused is None and time.monotonic() - started < 60:
                    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
                    cm.metadata.name, cm.metadata.namespace = "no-quorum", "default"
                    t0 = time.monotonic()
                    try:
                        await client.create(cm)
                        raise AssertionError("a write succeeded without an etcd quorum")
                    except Timeout as err:
                        refused, took = err, time.monotonic() - t0
                    except ApiError:
                        await asyncio.sleep(0.5)  # the VIP is not yet held by the survivor
                assert refused is not None, "no clear no-quorum answer within 60 s"
                print(f"refused in {took:.1f} s: {refused}")
                assert "no quorum" in str(refused) and took < 15
            kubectl_out = kubectl(cluster, "create", "configmap", "no-quorum-2", check=False,
                                  timeout=30)
            assert kubectl_out.returncode != 0 and "no quorum" in kubectl_out.stderr, kubectl_out.stderr
            # One master back: a quorum of two, writes resume.
            back = time.monotonic()
            localha.thaw(state, lost_masters[0])
            localha.heal(state, lost_masters[0])
            async with client_of(state) as client:
                cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
                cm.metadata.name, cm.metadata.namespace = "quorum-back", "default"
                await eventually(lambda: _created(client, cm), "a write after one master returned", 60)
                resumed = time.monotonic() - back
                names = {c.metadata.name for c in (await client.list(core_pb2.ConfigMap, "default")).items}
            print(f"writes resumed {resumed:.1f} s after one master returned")
            report("ha: two of three masters lost, one back", checked=1, lost=0,
                   duplicated=0, converged=resumed, bound=60)
        finally:
            for node in lost_masters:
                localha.thaw(state, node)
                localha.heal(state, node)
        assert "quorum-back" in names

    asyncio.run(scenario())


async def _created(client: Client, obj: core_pb2.ConfigMap) -> bool:
    with contextlib.suppress(ApiError):
        await client.create(obj)
        return True
    with contextlib.suppress(ApiError):
        await client.get(core_pb2.ConfigMap, obj.metadata.name, obj.metadata.namespace)
        return True
    return False


def _etcd_tls(state: ClusterState) -> etcd_members.EtcdClientTLS:
    files = components.etcd_backup_tls(state.config_dir)
    return etcd_members.EtcdClientTLS.from_files(files.ca, files.cert, files.key)


async def _leaders_away(client: Client, state: ClusterState, victim: str) -> dict[str, str] | None:
    held = await leaders(client, state)
    return held if all(n and n != victim for n in held.values()) else None



def test_a_master_is_added_and_removed(cluster: Cluster) -> None:
    state = state_of(cluster)
    added = f"{NAME}-master-4"
    # add-master: a fourth etcd member joins (member add, then an empty member copying the data), its
    # control plane and Node follow.
    cluster.kctl("cluster", "add-master", "--name", NAME, timeout=300)
    members = table_rows(cluster.kctl("etcd", "member", "list", "--cluster", NAME))
    assert sorted(m["NAME"] for m in members) == [*MASTERS, added]
    assert {m["STATUS"] for m in members} == {"started"}
    nodes = {r["NAME"]: r for r in table_rows(kubectl(cluster, "get", "nodes").stdout)}
    assert nodes[added]["STATUS"] == "Ready" and nodes[added]["ROLES"] == "control-plane"
    dns = kubectl(cluster, "get", "endpoints", "kube-dns", "-n", "kube-system", "-o",
                  "jsonpath={.subsets[0].addresses[*].ip}").stdout.split()
    assert f"{SUBNET_PREFIX}.14" in dns

    # remove-master: its member leaves the quorum first, then it goes; the cluster keeps writing.
    cluster.kctl("cluster", "remove-master", added, "--name", NAME, timeout=300)
    members = table_rows(cluster.kctl("etcd", "member", "list", "--cluster", NAME))
    assert sorted(m["NAME"] for m in members) == MASTERS
    assert added not in kubectl(cluster, "get", "nodes").stdout
    assert not Path("/run/netns", added).exists()
    kubectl(cluster, "create", "configmap", "after-remove-master")
    assert state_of(cluster).master_infos() == state.master_infos()
    # A master the cluster does not have is refused, naming the ones it has.
    refused = subprocess.run([KCTL, "cluster", "remove-master", "nope", "--name", NAME], env=cluster.env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "has no master nope" in refused.stderr
