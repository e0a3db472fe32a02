"""Hollow kubelets and a trivial binder: what the controller manager needs from nodes, without nodes.

`bench/hollow.py` registers hollow Node objects (kubemark's idea). A
`HollowCluster` adds the behaviour the controllers rely on but do not own:

- the *kubelet* of each of its nodes: renews the node's Lease in
  kube-node-lease, keeps its Ready condition True, marks every pod bound to it
  Running and Ready (with a pod IP) through the status subresource, and
  finishes graceful deletions (delete with grace 0) as a kubelet does once
  the containers have stopped;
- a trivial *scheduler*: binds pending pods round-robin to its live nodes
  (unless made with `bind=False`, which leaves placement to the real
  scheduler, as DaemonSet pods and any benchmark of the whole path need);
- *finishing* pods, for Jobs: a pod annotated `hollow.flotilla.dev/exit-code`
  ends `hollow.flotilla.dev/run-seconds` (default 0) after it started, its
  container terminated with that code: Succeeded for 0, else Failed (with
  restartPolicy OnFailure the container restarts instead and runs again); one
  that ends at once (run-seconds 0) goes from Pending to its end in one status
  write, as a kubelet reports a container that exited before its first sync.

It only touches pods in its own namespaces, so several can share a cluster
(one per test). A node can be `kill()`ed (its kubelet goes silent: no lease
renewals, no pod updates) and `revive()`d. It is a `Controller` over its
namespaces' pods, like the real components. Used by the controller tests
and `bench/controllers.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable

from bench import hollow
from client import Client, enqueue, key_of
from client.controller import Controller
from client.retry import update_fresh
from proto import coordination_pb2, core_pb2
from proto.errors import AlreadyExists, ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
# A pod with the exit-code annotation finishes (see above); run-seconds says after how long.
ANNOTATION_EXIT_CODE = "hollow.flotilla.dev/exit-code"
ANNOTATION_RUN_SECONDS = "hollow.flotilla.dev/run-seconds"


class HollowCluster(Controller):
    name = "hollow"

    def __init__(self, client: Client, namespaces: Iterable[str], *, nodes: int = 3, prefix: str = "hollow",
                 lease_interval: float = 0.5, workers: int = 16, bind: bool = True) -> None:
        super().__init__(client, workers=workers)
        self.namespaces = list(namespaces)
        self.bind = bind
        self.node_names = [f"{prefix}-{i}" for i in range(nodes)]
        self.dead: set[str] = set()
        # Pods running one of these images never become ready (a broken release, for rollout tests).
        self.unready_images: set[str] = set()
        self.lease_interval = lease_interval
        self.informers = [self.factory.informer(core_pb2.Pod, ns) for ns in self.namespaces]
        for informer in self.informers:
            enqueue(informer, self.queue)
        self._next_node = itertools.cycle(self.node_names)
        self._ips = itertools.count(2)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for name in self.node_names:
            # Created, then status written as the kubelet would; the node IPAM controller may
            # write the spec in between, so the status write reads the node afresh.
            with contextlib.suppress(AlreadyExists):
                await self.client.create(hollow.node(name, cpu="64", memory="256Gi", pods=1100))
            await self._post_ready(name)
        self._tasks.append(asyncio.create_task(self.run()))
        self._tasks.append(asyncio.create_task(self._renew_leases()))
        await asyncio.gather(*(i.wait_synced() for i in self.informers))

    async def stop(self, *, delete_nodes: bool = True) -> None:
        for task in self._tasks:  # run() shuts the queue and stops the informers on its way out
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if delete_nodes:
            for name in self.node_names:
                with contextlib.suppress(ApiError):
                    await self.client.delete(core_pb2.Node, name)
                with contextlib.suppress(ApiError):
                    await self.client.delete(coordination_pb2.Lease, name, NODE_LEASE_NAMESPACE)

    def kill(self, node: str) -> None:
        """The node's kubelet goes silent."""
        self.dead.add(node)

    def revive(self, node: str) -> None:
        self.dead.discard(node)
        for informer in self.informers:
            for pod in informer.store.list():
                if pod.spec.node_name == node:
                    self.queue.add(f"{pod.metadata.namespace}/{pod.metadata.name}")

    # ---------------------------------------------------------------- kubelet: node

    async def _post_ready(self, name: str) -> None:
        def ready(node: core_pb2.Node) -> None:
            node.status.CopyFrom(hollow.node(name, cpu="64", memory="256Gi", pods=1100).status)
            del node.status.conditions[:]
            cond = node.status.conditions.add(type="Ready", status="True", reason="KubeletReady",
                                              message="kubelet is posting ready status")
            cond.last_heartbeat_time.GetCurrentTime()
            cond.last_transition_time.GetCurrentTime()

        # The node controllers write the same Node (podCIDR, conditions): more tries than a kctl verb.
        await update_fresh(self.client, core_pb2.Node, name, "", ready, status=True, attempts=10)

    async def _renew_leases(self) -> None:
        while True:
            for name in self.node_names:
                if name in self.dead:
                    continue
                try:
                    await self._renew(name)
                except ApiError as err:
                    log.debug("lease renewal for %s failed: %s", name, err)
            await asyncio.sleep(self.lease_interval)

    async def _renew(self, name: str) -> None:
        try:
            lease = await self.client.get(coordination_pb2.Lease, name, NODE_LEASE_NAMESPACE)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = name, NODE_LEASE_NAMESPACE
            lease.spec.holder_identity = name
            lease.spec.lease_duration_seconds = 40
            lease.spec.renew_time.GetCurrentTime()
            await self.client.create(lease)
            return
        lease.spec.renew_time.GetCurrentTime()
        await self.client.update(lease)
        # A kubelet whose node was marked Unknown posts Ready again with its next status update.
        node = await self.client.get(core_pb2.Node, name)
        ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
        if ready is None or ready.status != "True":
            await self._post_ready(name)

    # ---------------------------------------------------------------- binder and kubelet: pods

    async def sync(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        informer = next(i for i in self.informers if i.namespace == namespace)
        pod = informer.store.get(key)
        if pod is None:
            return
        node = pod.spec.node_name
        if not node:
            if not self.bind or pod.metadata.HasField("deletion_timestamp") or len(self.dead) == len(self.node_names):
                return
            target = next(self._next_node)
            while target in self.dead:
                target = next(self._next_node)
            with contextlib.suppress(Conflict, NotFound):
                await self.client.bind(pod, target)
            return
        if node not in self.node_names or node in self.dead:
            return
        if pod.metadata.HasField("deletion_timestamp"):
            if pod.metadata.deletion_grace_period_seconds == 0:
                return  # done on our side; only finalizers hold it now
            with contextlib.suppress(NotFound, Conflict):
                await self.client.delete(core_pb2.Pod, name, namespace, grace_period_seconds=0,
                                         uid=pod.metadata.uid)
            return
        if pod.status.phase in ("Succeeded", "Failed"):
            return  # a finished pod is never run again
        if pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                 for c in pod.status.conditions):
            if ANNOTATION_EXIT_CODE in pod.metadata.annotations:
                await self._maybe_finish(key, pod)
            return
        if any(c.image in self.unready_images for c in pod.spec.containers):
            return
        await self._run_pod(pod)

    async def _run_pod(self, pod: core_pb2.Pod) -> None:
        new = core_pb2.Pod()
        new.CopyFrom(pod)
        status = new.status
        status.phase = "Running"
        status.host_ip = "10.0.0.1"
        n = next(self._ips)
        status.pod_ip = f"10.244.{(n >> 8) & 255}.{n & 255}"
        del status.pod_ips[:]
        status.pod_ips.add(ip=status.pod_ip)
        status.start_time.GetCurrentTime()
        for type_ in ("Initialized", "ContainersReady", "Ready"):
            cond = next((c for c in status.conditions if c.type == type_), None)
            if cond is None:
                cond = status.conditions.add(type=type_)
            cond.status = "True"
            cond.last_transition_time.GetCurrentTime()
        del status.container_statuses[:]
        for c in new.spec.containers:
            cs = status.container_statuses.add(name=c.name, image=c.image, ready=True, started=True)
            cs.state.running.started_at.GetCurrentTime()
        if ANNOTATION_EXIT_CODE in new.metadata.annotations and _run_seconds(new) <= 0:
            # A container that exits at once has ended before the kubelet's first status write after it
            # started (PLEG finds it exited): the API sees Pending -> Succeeded/Failed in one write, as
            # `kubectl get pods -w` shows for such pods (ContainerCreating, then Completed).
            if _finish(new, pod):
                with contextlib.suppress(NotFound, Conflict):
                    await self.client.update_status(new)
                return
        with contextlib.suppress(NotFound, Conflict):
            await self.client.update_status(new)
        if ANNOTATION_EXIT_CODE in new.metadata.annotations:
            self.queue.add_after(key_of(new), _run_seconds(new))

    async def _maybe_finish(self, key: str, pod: core_pb2.Pod) -> None:
        """End the pod's containers with the annotated exit code once it has run long enough."""
        started = pod.status.start_time.ToNanoseconds() / 1e9
        remaining = started + _run_seconds(pod) - time.time()
        if remaining > 0:
            self.queue.add_after(key, remaining)
            return
        new = core_pb2.Pod()
        new.CopyFrom(pod)
        _finish(new, pod)
        with contextlib.suppress(NotFound, Conflict):
            await self.client.update_status(new)


def _finish(new: core_pb2.Pod, pod: core_pb2.Pod) -> bool:
    """End `new`'s containers with the pod's annotated exit code: the pod Succeeded or Failed (True), or,
    a failure under restartPolicy OnFailure, its container restarted in place (False: it runs on)."""
    code = int(pod.metadata.annotations[ANNOTATION_EXIT_CODE])
    status = new.status
    if code != 0 and new.spec.restart_policy == "OnFailure":
        # The kubelet restarts the container in place: the pod runs on, one restart more.
        for cs in status.container_statuses:
            cs.restart_count += 1
        status.start_time.GetCurrentTime()
        return False
    status.phase = "Succeeded" if code == 0 else "Failed"
    for cond in status.conditions:
        if cond.type in ("ContainersReady", "Ready"):
            cond.status = "False"
            cond.reason = "PodCompleted"
            cond.last_transition_time.GetCurrentTime()
    for cs in status.container_statuses:
        cs.ready, cs.started = False, False
        cs.state.ClearField("running")
        terminated = cs.state.terminated
        terminated.exit_code = code
        terminated.reason = "Completed" if code == 0 else "Error"
        terminated.started_at.CopyFrom(new.status.start_time)
        terminated.finished_at.GetCurrentTime()
    return True


def _run_seconds(pod: core_pb2.Pod) -> float:
    try:
        return float(pod.metadata.annotations.get(ANNOTATION_RUN_SECONDS, "0"))
    except ValueError:
        return 0.0
