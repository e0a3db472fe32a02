"""Validation of batch/v1: Job and CronJob, with Kubernetes' paths and messages.

A Job's pods must be allowed to finish (restartPolicy Never or OnFailure), its
selector must select its own template, and once created its template, selector,
completion mode and pod failure policy stay as they are (the controller has
already made pods from them). A CronJob adds a schedule robfig/cron would accept
(proto/cron.py), a real time zone, a concurrency policy, and a job template
whose selector the controller generates.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from controlplane.apiserver.validation.field import (
    Errors,
    FieldError,
    duplicate,
    invalid,
    nonnegative,
    one_of,
    required,
    too_many,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    is_dns1123_label,
    is_qualified_name,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from controlplane.apiserver.validation.podspec import validate_pod_spec
from proto import batch_pb2, core_pb2, cron
from proto.errors import BadRequest
from proto.selectors import from_message

COMPLETION_MODES = ("NonIndexed", "Indexed")
POD_REPLACEMENT_POLICIES = ("TerminatingOrFailed", "Failed")
MAX_PARALLELISM_INDEXED = 100_000
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
# Sorted, as Kubernetes lists its sets.
FAILURE_POLICY_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
EXIT_CODE_OPERATORS = ("In", "NotIn")
CONDITION_STATUSES = ("False", "True", "Unknown")
MAX_FAILURE_POLICY_RULES = 20
MAX_EXIT_CODE_VALUES = 255
# The controller names a CronJob's Jobs `<name>-<minutes since epoch>` (11 characters more),
# and a Job's name must leave room for its pods' (a DNS label of 63).
MAX_CRON_JOB_NAME = 52
_TIME_ZONE_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")


def _omitted_invalid(path: str, detail: str) -> FieldError:
    """field.Invalid with field.OmitValueType: the message names no value."""
    return path, f"Invalid value: {detail}"


def _valid_values(values: tuple[str, ...]) -> str:
    """Go's %q of a string slice: ["In" "NotIn"]."""
    return "valid values: [" + " ".join(f'"{v}"' for v in values) + "]"



# ---------------------------------------------------------------- pod failure policy


def _on_exit_codes(req: batch_pb2.PodFailurePolicyOnExitCodesRequirement, path: str,
                   containers: set[str]) -> Errors:
    errors: Errors = []
    if not req.operator:
        errors.append(required(f"{path}.operator", _valid_values(EXIT_CODE_OPERATORS)))
    elif req.operator not in EXIT_CODE_OPERATORS:
        errors.append(unsupported(f"{path}.operator", req.operator, EXIT_CODE_OPERATORS))
    if req.HasField("container_name") and req.container_name not in containers:
        errors.append(invalid(f"{path}.containerName", req.container_name,
                              "must be one of the container or initContainer names in the pod template"))
    values_path = f"{path}.values"
    values = list(req.values)
    if not values:
        errors.append(invalid(values_path, values, "at least one value is required"))
    elif len(values) > MAX_EXIT_CODE_VALUES:
        errors.append(too_many(values_path, len(values), MAX_EXIT_CODE_VALUES))
    seen: set[int] = set()
    for j, value in enumerate(values):
        if req.operator == "In" and value == 0:
            # Exit code 0 is success: it never reaches a failure policy.
            errors.append(invalid(f"{values_path}[{j}]", value, "must not be 0 for the In operator"))
        if value in seen:
            errors.append(duplicate(f"{values_path}[{j}]", value))
        seen.add(value)
    if values != sorted(values):
        errors.append(invalid(values_path, values, "must be ordered"))
    return errors


def _on_pod_conditions(patterns: list[batch_pb2.PodFailurePolicyOnPodConditionsPattern], path: str) -> Errors:
    errors: Errors = []
    if len(patterns) > MAX_FAILURE_POLICY_RULES:
        errors.append(too_many(path, len(patterns), MAX_FAILURE_POLICY_RULES))
    for j, pattern in enumerate(patterns):
        p = f"{path}[{j}]"
        if not pattern.type:
            errors.append(required(f"{p}.type"))
        else:
            errors += [invalid(f"{p}.type", pattern.type, msg) for msg in is_qualified_name(pattern.type)]
        if not pattern.status:
            errors.append(required(f"{p}.status", _valid_values(CONDITION_STATUSES)))
        elif pattern.status not in CONDITION_STATUSES:
            errors.append(unsupported(f"{p}.status", pattern.status, CONDITION_STATUSES))
    return errors


def _pod_failure_policy(spec: batch_pb2.JobSpec, path: str) -> Errors:
    rules = spec.pod_failure_policy.rules
    errors: Errors = []
    if len(rules) > MAX_FAILURE_POLICY_RULES:
        errors.append(too_many(f"{path}.rules", len(rules), MAX_FAILURE_POLICY_RULES))
    template = spec.template.spec
    containers = {c.name for c in (*template.containers, *template.init_containers)}
    for i, rule in enumerate(rules):
        p = f"{path}.rules[{i}]"
        if not rule.action:
            errors.append(required(f"{p}.action", _valid_values(FAILURE_POLICY_ACTIONS)))
        elif rule.action == "FailIndex":
            # FailIndex fails one index of a Job with backoffLimitPerIndex, which Flotilla does not have.
            errors.append(invalid(f"{p}.action", rule.action, "valid only when backoffLimitPerIndex is set"))
        elif rule.action not in FAILURE_POLICY_ACTIONS:
            errors.append(unsupported(f"{p}.action", rule.action, FAILURE_POLICY_ACTIONS))
        has_codes, has_conditions = rule.HasField("on_exit_codes"), bool(rule.on_pod_conditions)
        if has_codes:
            errors += _on_exit_codes(rule.on_exit_codes, f"{p}.onExitCodes", containers)
        if has_conditions:
            errors += _on_pod_conditions(list(rule.on_pod_conditions), f"{p}.onPodConditions")
        if has_codes and has_conditions:
            errors.append(_omitted_invalid(p, "specifying both OnExitCodes and OnPodConditions is not supported"))
        if not has_codes and not has_conditions:
            errors.append(_omitted_invalid(p, "specifying one of OnExitCodes and OnPodConditions is required"))
    return errors


# ---------------------------------------------------------------- Job


def _pod_template(template: core_pb2.PodTemplateSpec, path: str) -> Errors:
    errors = validate_labels(template.metadata.labels, f"{path}.metadata.labels")
    errors += validate_annotations(template.metadata.annotations, f"{path}.metadata.annotations")
    return errors + validate_pod_spec(template.spec, f"{path}.spec")


def _job_spec_fields(spec: batch_pb2.JobSpec, path: str) -> Errors:
    """What a Job and a CronJob's job template share (Kubernetes' validateJobSpec)."""
    errors: Errors = []
    counts: Any = spec  # fields named at run time
    for field, name in (("parallelism", "parallelism"), ("completions", "completions"),
                        ("active_deadline_seconds", "activeDeadlineSeconds"), ("backoff_limit", "backoffLimit"),
                        ("ttl_seconds_after_finished", "ttlSecondsAfterFinished")):
        if counts.HasField(field):
            errors += nonnegative(getattr(counts, field), f"{path}.{name}")
    if spec.HasField("completion_mode"):
        mode = spec.completion_mode
        if mode not in COMPLETION_MODES:
            errors.append(unsupported(f"{path}.completionMode", mode, COMPLETION_MODES))
        elif mode == "Indexed":
            if not spec.HasField("completions"):
                errors.append(required(f"{path}.completions", "when completion mode is Indexed"))
            if spec.HasField("parallelism") and spec.parallelism > MAX_PARALLELISM_INDEXED:
                errors.append(invalid(f"{path}.parallelism", spec.parallelism,
                                      f"must be less than or equal to {MAX_PARALLELISM_INDEXED} "
                                      "when completion mode is Indexed"))
    if spec.HasField("pod_replacement_policy"):
        errors += one_of(spec.pod_replacement_policy, f"{path}.podReplacementPolicy", POD_REPLACEMENT_POLICIES)
        if spec.HasField("pod_failure_policy") and spec.pod_replacement_policy != "Failed":
            errors.append(unsupported(f"{path}.podReplacementPolicy", spec.pod_replacement_policy, ("Failed",)))
    if spec.HasField("pod_failure_policy"):
        errors += _pod_failure_policy(spec, f"{path}.podFailurePolicy")
    errors += _pod_template(spec.template, f"{path}.template")
    restart = spec.template.spec.restart_policy
    restart_path = f"{path}.template.spec.restartPolicy"
    if restart in ("Always", ""):
        # Defaulting turns an unset restartPolicy into Always: either way the pods could never finish.
        errors.append(required(restart_path, 'valid values: "OnFailure", "Never"'))
    elif restart not in ("OnFailure", "Never"):
        errors.append(unsupported(restart_path, restart, ("OnFailure", "Never")))
    elif spec.HasField("pod_failure_policy") and restart != "Never":
        errors.append(invalid(restart_path, restart, 'only "Never" is supported when podFailurePolicy is specified'))
    return errors


def _job_spec(spec: batch_pb2.JobSpec, path: str) -> Errors:
    """A Job's own spec: the shared fields plus a selector that selects its template."""
    errors = _job_spec_fields(spec, path)
    if not spec.HasField("selector"):
        errors.append(required(f"{path}.selector"))
        return errors
    selector_errors = validate_label_selector(spec.selector, f"{path}.selector")
    errors += selector_errors
    if not selector_errors:
        try:
            selector = from_message(spec.selector)
        except BadRequest:
            return [*errors, invalid(f"{path}.selector", spec.selector, "invalid label selector")]
        labels = spec.template.metadata.labels
        if not selector.matches(labels):
            # The controller would make pods it never counts as its own, forever.
            errors.append(invalid(f"{path}.template.metadata.labels", dict(labels),
                                  "`selector` does not match template `labels`"))
    return errors


# Of a suspended Job that never started, these may change: the scheduling directives a
# queueing controller (Kueue) sets before it lets the Job run.
_MUTABLE_WHILE_SUSPENDED = ("node_selector", "affinity", "tolerations")


def _template_update(new: batch_pb2.Job, old: batch_pb2.Job) -> Errors:
    path = "spec.template"
    if new.spec.template == old.spec.template:
        return []
    if old.spec.suspend and not old.status.HasField("start_time"):
        a, b = core_pb2.PodTemplateSpec(), core_pb2.PodTemplateSpec()
        a.CopyFrom(new.spec.template)
        b.CopyFrom(old.spec.template)
        for template in (a, b):
            template.metadata.ClearField("labels")
            template.metadata.ClearField("annotations")
            pod_spec: Any = template.spec
            for field in _MUTABLE_WHILE_SUSPENDED:
                pod_spec.ClearField(field)
        if a == b:
            return []
    return [invalid(path, new.spec.template, "field is immutable")]


def _immutable_field(new: Any, old: Any, field: str, name: str) -> Errors:
    """`spec.<name>` may not change (set or unset included); `new` and `old` are JobSpecs."""
    if new.HasField(field) == old.HasField(field) and getattr(new, field) == getattr(old, field):
        return []
    value = getattr(new, field) if new.HasField(field) else None
    return [invalid(f"spec.{name}", value, "field is immutable")]


def _completions_update(new: batch_pb2.JobSpec, old: batch_pb2.JobSpec) -> Errors:
    if new.HasField("completions") == old.HasField("completions") and new.completions == old.completions:
        return []
    if new.completion_mode != "Indexed":
        return _immutable_field(new, old, "completions", "completions")
    # An Indexed Job is elastic: completions may follow parallelism (scaled as one).
    if not new.HasField("completions") or new.completions != new.parallelism:
        return [invalid("spec.completions", new.completions if new.HasField("completions") else None,
                        "can only be modified in tandem with spec.parallelism")]
    return []


def validate_job(job: batch_pb2.Job, old: batch_pb2.Job | None) -> Errors:
    spec = job.spec
    errors = _job_spec(spec, "spec")
    if spec.completion_mode == "Indexed" and spec.HasField("completions") and spec.completions > 0:
        # Indexed pods are named (and get the hostname) `<job>-<index>`, which must be a DNS label.
        hostname = f"{job.metadata.name}-{spec.completions - 1}"
        if is_dns1123_label(hostname):
            errors.append(invalid("metadata.name", job.metadata.name,
                                  f"will not able to create pod with invalid DNS label: {hostname}"))
    errors += nonnegative(job.status.active, "status.active")
    errors += nonnegative(job.status.succeeded, "status.succeeded")
    errors += nonnegative(job.status.failed, "status.failed")
    if old is None:
        return errors
    errors += _completions_update(spec, old.spec)
    if spec.selector != old.spec.selector:
        errors.append(invalid("spec.selector", spec.selector, "field is immutable"))
    errors += _template_update(job, old)
    errors += _immutable_field(spec, old.spec, "completion_mode", "completionMode")
    errors += _immutable_field(spec, old.spec, "pod_failure_policy", "podFailurePolicy")
    return errors


# ---------------------------------------------------------------- CronJob

_TZ_IN_SCHEDULE = re.compile(r"^(CRON_)?TZ=\S*\s+")


def _schedule(schedule: str, time_zone: str | None, old_schedule: str | None) -> Errors:
    path = "spec.schedule"
    if not schedule:
        return [required(path)]
    errors: Errors = []
    try:
        # robfig reads a TZ= prefix itself; Kubernetes then refuses it below.
        cron.parse(_TZ_IN_SCHEDULE.sub("", schedule))
    except cron.ScheduleError as err:
        errors.append(invalid(path, schedule, str(err)))
    allow_tz = old_schedule is not None and "TZ" in old_schedule  # older CronJobs may keep theirs
    if allow_tz and "TZ" in schedule and time_zone is not None:
        errors.append(invalid(path, schedule, "cannot use both timeZone field and TZ or CRON_TZ in schedule"))
    elif not allow_tz and "TZ" in schedule:
        errors.append(invalid(path, schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
    return errors


def _time_zone(time_zone: str) -> Errors:
    path = "spec.timeZone"
    if not time_zone:
        return [invalid(path, time_zone, "timeZone must be nil or non-empty string")]
    for part in time_zone.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TIME_ZONE_PART.fullmatch(part):
            return [invalid(path, time_zone, f"unknown time zone {time_zone}")]
    if time_zone.lower() == "local":
        return [invalid(path, time_zone, "timeZone must be an explicit time zone as defined in "
                                         "https://www.iana.org/time-zones")]
    try:
        zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [invalid(path, time_zone, f"unknown time zone {time_zone}")]
    return []


def _job_template(template: batch_pb2.JobTemplateSpec, path: str) -> Errors:
    errors = validate_labels(template.metadata.labels, f"{path}.metadata.labels")
    errors += validate_annotations(template.metadata.annotations, f"{path}.metadata.annotations")
    errors += _job_spec_fields(template.spec, f"{path}.spec")
    if template.spec.HasField("selector"):
        errors.append(invalid(f"{path}.spec.selector", template.spec.selector, "`selector` will be auto-generated"))
    if template.spec.HasField("manual_selector") and template.spec.manual_selector:
        errors.append(unsupported(f"{path}.spec.manualSelector", "true", ("nil", "false")))
    return errors


def validate_cron_job(cj: batch_pb2.CronJob, old: batch_pb2.CronJob | None) -> Errors:
    spec = cj.spec
    errors: Errors = []
    if old is None and len(cj.metadata.name) > MAX_CRON_JOB_NAME:
        errors.append(invalid("metadata.name", cj.metadata.name,
                              f"must be no more than {MAX_CRON_JOB_NAME} characters"))
    time_zone = spec.time_zone if spec.HasField("time_zone") else None
    errors += _schedule(spec.schedule, time_zone, old.spec.schedule if old is not None else None)
    if spec.HasField("starting_deadline_seconds"):
        errors += nonnegative(spec.starting_deadline_seconds, "spec.startingDeadlineSeconds")
    old_zone = (old.spec.time_zone if old.spec.HasField("time_zone") else None) if old is not None else ""
    if time_zone is not None and (old is None or old_zone != time_zone):
        errors += _time_zone(time_zone)
    errors += one_of(spec.concurrency_policy, "spec.concurrencyPolicy", CONCURRENCY_POLICIES)
    errors += _job_template(spec.job_template, "spec.jobTemplate")
    limits: Any = spec  # fields named at run time
    for field, name in (("successful_jobs_history_limit", "successfulJobsHistoryLimit"),
                        ("failed_jobs_history_limit", "failedJobsHistoryLimit")):
        if limits.HasField(field):
            errors += nonnegative(getattr(limits, field), f"spec.{name}")
    return errors
