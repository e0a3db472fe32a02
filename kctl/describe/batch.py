"""Describing jobs and cron jobs, shaped as kubectl's JobDescriber and CronJobDescriber.

A Job shows its parallelism, completions, mode, back-off limit, times, how
many pods are active, succeeded and failed, its pod template and conditions; a
CronJob its schedule, policies and history limits, the job template and the
Jobs it is running.
"""

from __future__ import annotations

from controlplane.printers.batch import job_duration
from controlplane.printers.table import GenerateOptions
from controlplane.printers.text import NONE, now, selector_text, timestamp
from kctl.describe.pods import containers
from kctl.describe.section import Section, annotation_lines, pairs, rfc1123
from proto import batch_pb2, core_pb2


def _optional(spec: object, field: str) -> str:
    return str(getattr(spec, field)) if spec.HasField(field) else "<unset>"  # type: ignore[attr-defined]


def _pod_template(s: Section, template: core_pb2.PodTemplateSpec) -> None:
    s.header(0, "Pod Template:")
    s.many(1, "Labels", pairs(template.metadata.labels))
    if template.metadata.annotations:
        s.many(1, "Annotations", annotation_lines(template.metadata.annotations))
    containers(s, 1, "Containers", template.spec.containers, None)


def describe_job(job: batch_pb2.Job) -> Section:
    s = Section()
    spec, status, meta = job.spec, job.status, job.metadata
    s.kv(0, "Name", meta.name)
    s.kv(0, "Namespace", meta.namespace)
    s.kv(0, "Selector", selector_text(spec.selector))
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    owner = next((o for o in meta.owner_references if o.controller), None)
    if owner is not None:
        s.kv(0, "Controlled By", f"{owner.kind}/{owner.name}")
    s.kv(0, "Parallelism", _optional(spec, "parallelism"))
    s.kv(0, "Completions", _optional(spec, "completions"))
    s.kv(0, "Completion Mode", spec.completion_mode or "NonIndexed")
    s.kv(0, "Suspend", "true" if spec.suspend else "false")
    s.kv(0, "Backoff Limit", spec.backoff_limit)
    if spec.HasField("ttl_seconds_after_finished"):
        s.kv(0, "TTL Seconds After Finished", spec.ttl_seconds_after_finished)
    started = timestamp(status, "start_time")
    if started is not None:
        s.kv(0, "Start Time", rfc1123(started))
    completed = timestamp(status, "completion_time")
    if completed is not None:
        s.kv(0, "Completed At", rfc1123(completed))
    if started is not None:
        s.kv(0, "Duration", job_duration(job, GenerateOptions(now=now())))
    if spec.HasField("active_deadline_seconds"):
        s.kv(0, "Active Deadline Seconds", f"{spec.active_deadline_seconds}s")
    s.kv(0, "Pods Statuses", f"{status.active} Active ({status.ready} Ready) / {status.succeeded} Succeeded / "
                             f"{status.failed} Failed")
    if spec.completion_mode == "Indexed":
        s.kv(0, "Completed Indexes", status.completed_indexes or NONE)
    _pod_template(s, spec.template)
    if status.conditions:
        s.header(0, "Conditions:")
        s.table(1, [["Type", "Status", "Reason"], *[[c.type, c.status, c.reason] for c in status.conditions]])
    return s


def describe_cron_job(cj: batch_pb2.CronJob) -> Section:
    s = Section()
    spec, status, meta = cj.spec, cj.status, cj.metadata
    job_spec = spec.job_template.spec
    s.kv(0, "Name", meta.name)
    s.kv(0, "Namespace", meta.namespace)
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    s.kv(0, "Schedule", spec.schedule)
    if spec.HasField("time_zone"):
        s.kv(0, "Time Zone", spec.time_zone)
    s.kv(0, "Concurrency Policy", spec.concurrency_policy)
    s.kv(0, "Suspend", ("True" if spec.suspend else "False") if spec.HasField("suspend") else "<unset>")
    s.kv(0, "Successful Job History Limit", _optional(spec, "successful_jobs_history_limit"))
    s.kv(0, "Failed Job History Limit", _optional(spec, "failed_jobs_history_limit"))
    s.kv(0, "Starting Deadline Seconds", f"{spec.starting_deadline_seconds}s"
         if spec.HasField("starting_deadline_seconds") else "<unset>")
    s.kv(0, "Selector", selector_text(job_spec.selector) if job_spec.HasField("selector") else "<unset>")
    s.kv(0, "Parallelism", _optional(job_spec, "parallelism"))
    s.kv(0, "Completions", _optional(job_spec, "completions"))
    _pod_template(s, job_spec.template)
    last = timestamp(status, "last_schedule_time")
    s.kv(0, "Last Schedule Time", rfc1123(last) if last is not None else "<unset>")
    s.kv(0, "Active Jobs", ", ".join(ref.name for ref in status.active) or NONE)
    return s
