"""What the Job and CronJob controllers ask of a Job and its pods: pure functions, no API calls.

- conditions: is a Job finished, and how (`finished_condition`), and setting one
  the way Kubernetes does (transition time only on a change of status);
- Indexed Jobs: a pod's completion index and the `1,3-5,7` form of
  `status.completedIndexes`;
- the pod failure policy: which rule a failed pod matches (FailJob, Ignore,
  Count), with Kubernetes' messages;
- the back-off between pod creations after failures: 10 s doubling, capped;
- the pod a Job creates: its template with the tracking finalizer, the owner
  reference, and for an Indexed Job the index (annotation, label, hostname and
  the JOB_COMPLETION_INDEX environment variable from the annotation).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from controlplane.controllers import podutil
from proto import batch_pb2, core_pb2
from proto.wellknown import FINALIZER_JOB_TRACKING, JOB_COMPLETION_INDEX

COMPLETE, FAILED, SUSPENDED = "Complete", "Failed", "Suspended"
SUCCESS_CRITERIA_MET, FAILURE_TARGET = "SuccessCriteriaMet", "FailureTarget"

# Reasons and messages, as Kubernetes words them (pkg/controller/job, k8s.io/api/batch/v1).
REASON_COMPLETIONS_REACHED = "CompletionsReached"
MESSAGE_COMPLETIONS_REACHED = "Reached expected number of succeeded pods"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
MESSAGE_BACKOFF_LIMIT = "Job has reached the specified backoff limit"
REASON_DEADLINE = "DeadlineExceeded"
MESSAGE_DEADLINE = "Job was active longer than specified deadline"
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"

ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"

# After the n-th failure in a row the next pod waits base * 2**(n-1), at most the cap (Kubernetes: 10 s, 6 min).
DEFAULT_BACKOFF = 10.0
DEFAULT_MAX_BACKOFF = 360.0


# ---------------------------------------------------------------- conditions


def condition(job: batch_pb2.Job, type_: str) -> batch_pb2.JobCondition | None:
    """The condition of `type_` with status True, if the Job has one."""
    return next((c for c in job.status.conditions if c.type == type_ and c.status == "True"), None)


def finished_condition(job: batch_pb2.Job) -> batch_pb2.JobCondition | None:
    """Complete or Failed (True): the Job is done and its pods are no longer managed."""
    return condition(job, COMPLETE) or condition(job, FAILED)


def set_condition(status: batch_pb2.JobStatus, type_: str, value: str, reason: str, message: str,
                  now: float) -> bool:
    """Set (or add) a condition; True if anything changed. The transition time moves only with the status."""
    cond = next((c for c in status.conditions if c.type == type_), None)
    if cond is None:
        cond = status.conditions.add(type=type_)
    elif cond.status == value and cond.reason == reason and cond.message == message:
        return False
    if cond.status != value:
        cond.last_transition_time.FromNanoseconds(int(now * 1e9))
    cond.status, cond.reason, cond.message = value, reason, message
    cond.last_probe_time.FromNanoseconds(int(now * 1e9))
    return True


def finish_time(job: batch_pb2.Job) -> float | None:
    """When the Job finished: completionTime, or when it became Failed."""
    if job.status.HasField("completion_time"):
        return job.status.completion_time.ToNanoseconds() / 1e9
    failed = condition(job, FAILED)
    return failed.last_transition_time.ToNanoseconds() / 1e9 if failed is not None else None


# ---------------------------------------------------------------- Indexed Jobs


def completion_index(pod: core_pb2.Pod, completions: int) -> int | None:
    """The pod's index (from its annotation, else its label); None when absent or out of range."""
    text = pod.metadata.annotations.get(JOB_COMPLETION_INDEX) or pod.metadata.labels.get(JOB_COMPLETION_INDEX, "")
    if not text.isdigit():
        return None
    index = int(text)
    return index if index < completions else None


def format_indexes(indexes: Iterable[int]) -> str:
    """`1,3-5,7`: increasing, three or more consecutive numbers as a range (status.completedIndexes)."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        else:
            parts.extend(str(n) for n in ordered[i:j + 1])
        i = j + 1
    return ",".join(parts)


def parse_indexes(text: str, completions: int) -> set[int]:
    """The indexes `format_indexes` wrote (those below `completions`); malformed parts are ignored."""
    found: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.update(range(int(first), int(last or first) + 1))
    return {i for i in found if i < completions}


# ---------------------------------------------------------------- pod failure policy


def _exit_code_match(pod: core_pb2.Pod, req: batch_pb2.PodFailurePolicyOnExitCodesRequirement
                     ) -> core_pb2.ContainerStatus | None:
    for status in (*pod.status.container_statuses, *pod.status.init_container_statuses):
        if req.HasField("container_name") and status.name != req.container_name:
            continue
        if not status.state.HasField("terminated") or status.state.terminated.exit_code == 0:
            continue  # exit code 0 is a success, never a failure to judge
        code = status.state.terminated.exit_code
        if (req.operator == "In" and code in req.values) or (req.operator == "NotIn" and code not in req.values):
            return status
    return None


def failure_policy_action(job: batch_pb2.Job, pod: core_pb2.Pod) -> tuple[str, str]:
    """What the Job's podFailurePolicy says of a failed pod: (action, FailJob message); ("", "") for no rule."""
    for index, rule in enumerate(job.spec.pod_failure_policy.rules):
        if rule.HasField("on_exit_codes"):
            status = _exit_code_match(pod, rule.on_exit_codes)
            if status is None:
                continue
            return rule.action, (f"Container {status.name} for pod {pod.metadata.namespace}/{pod.metadata.name} "
                                 f"failed with exit code {status.state.terminated.exit_code} matching "
                                 f"{rule.action} rule at index {index}")
        for pattern in rule.on_pod_conditions:
            cond = podutil.condition(pod, pattern.type)
            if cond is not None and cond.status == (pattern.status or "True"):
                return rule.action, (f"Pod {pod.metadata.namespace}/{pod.metadata.name} has condition "
                                     f"{cond.type} matching {rule.action} rule at index {index}")
    return "", ""


# ---------------------------------------------------------------- back-off


def backoff_delay(failures: int, base: float = DEFAULT_BACKOFF, cap: float = DEFAULT_MAX_BACKOFF) -> float:
    """How long after the last failure the next pod waits, after `failures` failures in a row."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 32)))


def pod_finish_time(pod: core_pb2.Pod) -> float:
    """When a terminated pod's last container finished (now, if no status says)."""
    ends = [s.state.terminated.finished_at.ToNanoseconds() / 1e9
            for s in (*pod.status.container_statuses, *pod.status.init_container_statuses)
            if s.state.HasField("terminated") and s.state.terminated.HasField("finished_at")]
    return max(ends) if ends else time.time()


# ---------------------------------------------------------------- pods


def has_tracking_finalizer(pod: core_pb2.Pod) -> bool:
    return FINALIZER_JOB_TRACKING in pod.metadata.finalizers


def is_terminal(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_terminating(pod: core_pb2.Pod) -> bool:
    """Being deleted, but its containers have not finished (status.terminating counts these)."""
    return pod.metadata.HasField("deletion_timestamp") and not is_terminal(pod)


def pod_from_template(job: batch_pb2.Job, index: int | None) -> core_pb2.Pod:
    """A new pod of `job` (with its completion index for an Indexed Job), tracked by the finalizer."""
    template = job.spec.template
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    name = job.metadata.name
    pod.metadata.namespace = job.metadata.namespace
    pod.metadata.generate_name = f"{name}-" if index is None else f"{name}-{index}-"
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.finalizers.append(FINALIZER_JOB_TRACKING)
    podutil.set_controller(pod, job)
    pod.spec.CopyFrom(template.spec)
    if index is not None:
        pod.metadata.annotations[JOB_COMPLETION_INDEX] = str(index)
        pod.metadata.labels[JOB_COMPLETION_INDEX] = str(index)
        if not pod.spec.hostname:
            pod.spec.hostname = f"{name}-{index}"
        for container in (*pod.spec.init_containers, *pod.spec.containers):
            if any(e.name == ENV_COMPLETION_INDEX for e in container.env):
                continue
            # From the annotation through the downward API, as Kubernetes does, so the
            # value is the pod's own even if someone edits the env of a copy.
            env = container.env.add(name=ENV_COMPLETION_INDEX)
            env.value_from.field_ref.api_version = "v1"
            env.value_from.field_ref.field_path = f"metadata.annotations['{JOB_COMPLETION_INDEX}']"
    return pod
