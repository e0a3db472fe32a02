"""Pod status from what the runtime says: phase, conditions and container statuses.

The rules are pure functions over plain data, so they can be read (and tested)
apart from the gRPC plumbing; one writer at the end (`update_pod_status`, the
status manager's part) puts the result on the Pod. They follow the kubelet's
generateAPIPodStatus/getPhase:

- a container never started is `waiting` (ContainerCreating, ErrImagePull, ...);
- a running one is `running`, `ready` when its readiness probe says so;
- an exited one is `terminated` with its exit code and reason (Completed, Error,
  OOMKilled), or `waiting: CrashLoopBackOff` with the termination as `lastState`
  while it waits to be restarted;
- the phase: Pending until every container has started, Running while any runs
  or will be restarted, then Succeeded or Failed by exit codes and restartPolicy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from client import Client
from client.retry import retry_write
from nodeagent.kubelet.runtime import CONTAINER_ID_PREFIX
from proto import core_pb2, cri_pb2

log = logging.getLogger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass
class ContainerView:
    """What the kubelet knows about one container of the pod spec right now."""

    spec: core_pb2.Container
    latest: cri_pb2.ContainerStatus | None  # the newest instance
    previous: cri_pb2.ContainerStatus | None  # the one before it, for lastState
    ready: bool = False
    started: bool = False
    waiting_reason: str = ""  # set when the kubelet holds the container back (back-off, pull error)
    waiting_message: str = ""
    will_restart: bool = False  # an exited latest instance is going to be replaced


def _timestamp(nanos: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(nanos)
    return ts


def terminated_state(status: cri_pb2.ContainerStatus) -> core_pb2.ContainerStateTerminated:
    reason = status.reason or ("Completed" if status.exit_code == 0 else "Error")
    return core_pb2.ContainerStateTerminated(
        exit_code=status.exit_code, reason=reason, message=status.message,
        started_at=_timestamp(status.started_at), finished_at=_timestamp(status.finished_at),
        container_id=CONTAINER_ID_PREFIX + status.id)


def container_status(view: ContainerView) -> core_pb2.ContainerStatus:
    out = core_pb2.ContainerStatus(name=view.spec.name, image=view.spec.image, ready=False, restart_count=0,
                                   image_id="")
    latest = view.latest
    if latest is not None:
        out.container_id = CONTAINER_ID_PREFIX + latest.id
        out.image_id = latest.image_ref
        out.restart_count = latest.metadata.attempt
    if view.previous is not None and view.previous.state == cri_pb2.CONTAINER_EXITED:
        out.last_state.terminated.CopyFrom(terminated_state(view.previous))
    if view.waiting_reason:
        out.state.waiting.reason = view.waiting_reason
        out.state.waiting.message = view.waiting_message
        if latest is not None and latest.state == cri_pb2.CONTAINER_EXITED:
            out.last_state.terminated.CopyFrom(terminated_state(latest))
    elif latest is None or latest.state == cri_pb2.CONTAINER_CREATED:
        out.state.waiting.reason = "ContainerCreating"
    elif latest.state == cri_pb2.CONTAINER_RUNNING:
        out.state.running.started_at.CopyFrom(_timestamp(latest.started_at))
        out.ready = view.ready
    else:
        out.state.terminated.CopyFrom(terminated_state(latest))
    out.started = latest is not None and latest.state == cri_pb2.CONTAINER_RUNNING and view.started
    return out


def phase(views: list[ContainerView], restart_policy: str) -> str:
    """getPhase: Pending, Running, Succeeded or Failed."""
    pending = running = succeeded = failed = 0
    for view in views:
        latest = view.latest
        if latest is None or latest.state == cri_pb2.CONTAINER_CREATED:
            # A new instance of a container that ran before counts as running: the pod did start.
            if latest is not None and latest.metadata.attempt > 0:
                running += 1
            else:
                pending += 1
        elif latest.state == cri_pb2.CONTAINER_RUNNING:
            running += 1
        elif view.will_restart:
            running += 1
        elif latest.exit_code == 0:
            succeeded += 1
        else:
            failed += 1
    if pending:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    return "Failed" if failed else "Succeeded"


def succeeded(view: ContainerView) -> bool:
    """An init container whose newest instance exited 0: its part is done."""
    latest = view.latest
    return latest is not None and latest.state == cri_pb2.CONTAINER_EXITED and latest.exit_code == 0


def init_phase(views: list[ContainerView]) -> str:
    """The phase while init containers run: Pending, or Failed if one failed for good."""
    for view in views:
        latest = view.latest
        if latest is not None and latest.state == cri_pb2.CONTAINER_EXITED and latest.exit_code != 0 \
                and not view.will_restart:
            return "Failed"
    return "Pending"


def conditions(old: list[core_pb2.PodCondition], *, initialized: bool, containers_ready: bool,
               now: Timestamp) -> list[core_pb2.PodCondition]:
    """PodScheduled, Initialized, ContainersReady, Ready; transition times kept when unchanged."""
    previous = {c.type: c for c in old}
    want = [("PodScheduled", True, ""), ("Initialized", initialized, ""),
            ("ContainersReady", containers_ready, "" if containers_ready else "ContainersNotReady"),
            ("Ready", containers_ready, "" if containers_ready else "ContainersNotReady")]
    result = []
    for kind, ok, reason in want:
        value = "True" if ok else "False"
        cond = core_pb2.PodCondition(type=kind, status=value, reason=reason)
        before = previous.get(kind)
        cond.last_transition_time.CopyFrom(
            before.last_transition_time if before is not None and before.status == value else now)
        result.append(cond)
    return result


def pod_status(pod: core_pb2.Pod, init_views: list[ContainerView], views: list[ContainerView], *, host_ip: str,
               pod_ip: str, now: Timestamp) -> core_pb2.PodStatus:
    """generateAPIPodStatus: the pod's whole status from its containers' views, on top of what it has now."""
    policy = pod.spec.restart_policy or "Always"
    initialized = all(succeeded(v) for v in init_views)
    if not initialized:
        for view in views:
            view.waiting_reason = view.waiting_reason or "PodInitializing"
    new = core_pb2.PodStatus()
    new.CopyFrom(pod.status)
    new.phase = phase(views, policy) if initialized else init_phase(init_views)
    new.host_ip = host_ip
    del new.host_ips[:]
    new.host_ips.add(ip=host_ip)
    if pod_ip:
        new.pod_ip = pod_ip
        del new.pod_ips[:]
        new.pod_ips.add(ip=pod_ip)
    if not new.HasField("start_time"):
        new.start_time.CopyFrom(now)
    del new.container_statuses[:]
    new.container_statuses.extend(container_status(v) for v in views)
    del new.init_container_statuses[:]
    new.init_container_statuses.extend(container_status(v) for v in init_views)
    all_ready = bool(views) and all(s.ready for s in new.container_statuses)
    if new.phase in TERMINAL_PHASES:
        all_ready = False
    del new.conditions[:]
    new.conditions.extend(conditions(list(pod.status.conditions), initialized=initialized,
                                     containers_ready=all_ready, now=now))
    return new


def evicted(status: core_pb2.PodStatus, message: str, *, now: Timestamp) -> core_pb2.PodStatus:
    """The status of a pod the kubelet evicted: Failed, reason Evicted, and why (DisruptionTarget says by whom).

    As the eviction manager writes it: the containers show how they were stopped, nothing is
    ready, and the pod never runs again on this node (its controller, if any, makes another).
    """
    new = core_pb2.PodStatus()
    new.CopyFrom(status)
    new.phase = "Failed"
    new.reason = "Evicted"
    new.message = message
    for cond in new.conditions:
        if cond.type in ("Ready", "ContainersReady") and cond.status == "True":
            cond.status, cond.reason = "False", "PodFailed"
            cond.last_transition_time.CopyFrom(now)
    disruption = core_pb2.PodCondition(type="DisruptionTarget", status="True", reason="TerminationByKubelet",
                                       message=message)
    disruption.last_transition_time.CopyFrom(now)
    kept = [c for c in new.conditions if c.type != "DisruptionTarget"]
    del new.conditions[:]
    new.conditions.extend([disruption, *kept])
    return new


async def update_pod_status(client: Client, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> None:
    """Write `status` to the pod's status subresource, again on the fresh pod on Conflict.

    The first try writes over the cached pod the sync started from, since most writes do
    not conflict and so need no read; a retry reads the pod afresh and gives up when a
    new pod of the same name (another uid) has taken its place: that one is not ours.
    """

    def ours_with_status(target: core_pb2.Pod) -> core_pb2.Pod | None:
        if target.metadata.uid != pod.metadata.uid:
            return None
        out = core_pb2.Pod()
        out.CopyFrom(target)
        out.status.CopyFrom(status)
        return out

    async def refresh(_: core_pb2.Pod | None) -> core_pb2.Pod | None:
        return ours_with_status(await client.get(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace))

    async def write(target: core_pb2.Pod | None) -> bool:
        if target is None:
            return False
        await client.update_status(target)
        return True

    if await retry_write(write, ours_with_status(pod), refresh=refresh) and status.phase != pod.status.phase:
        log.info("pod %s/%s is %s", pod.metadata.namespace, pod.metadata.name, status.phase)
