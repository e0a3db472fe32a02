"""Table columns of the batch/v1 kinds: jobs and cron jobs (Kubernetes' printJob, printCronJob).

A Job shows how it ended (or that it is still Running), its completions as
`succeeded/wanted` and how long it ran; a CronJob its schedule, time zone,
whether it is suspended, its running Jobs and when it last fired. With -o wide
both add the pod template's containers, images and the Job selector.
"""

from __future__ import annotations

from controlplane.printers.apps import TEMPLATE_COLUMNS
from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import NONE, age, human_duration, joined, selector_text, since, timestamp
from proto import batch_pb2

_JOB_SELECTOR_DESCRIPTION = ("A label query over pods that should match the pod count. Normally, the system sets "
                             "this field for you.")


def _has_condition(job: batch_pb2.Job, type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in job.status.conditions)


def job_status(job: batch_pb2.Job) -> str:
    """The STATUS cell: how the Job ended, or what holds it, else Running."""
    if _has_condition(job, "Complete"):
        return "Complete"
    if _has_condition(job, "Failed"):
        return "Failed"
    if job.metadata.HasField("deletion_timestamp"):
        return "Terminating"
    for type_ in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(job, type_):
            return type_
    return "Running"


def job_completions(job: batch_pb2.Job) -> str:
    """`2/3`; a work-queue Job (no completions) wants one success: `0/1`, or `0/1 of 4` when parallel."""
    succeeded = job.status.succeeded
    if job.spec.HasField("completions"):
        return f"{succeeded}/{job.spec.completions}"
    if job.spec.parallelism > 1:
        return f"{succeeded}/1 of {job.spec.parallelism}"
    return f"{succeeded}/1"


def job_duration(job: batch_pb2.Job, o: GenerateOptions) -> str:
    """Start to completion, or start to now while it runs; empty before it starts."""
    start = timestamp(job.status, "start_time")
    if start is None:
        return ""
    end = timestamp(job.status, "completion_time") or o.now
    return human_duration((end - start).total_seconds())


def _template_cells(spec: batch_pb2.JobSpec) -> list[Cell]:
    containers = spec.template.spec.containers
    return [joined(c.name for c in containers), joined(c.image for c in containers), selector_text(spec.selector)]


def _job_cells(job: batch_pb2.Job, o: GenerateOptions) -> list[Cell]:
    return [job.metadata.name, job_status(job), job_completions(job), job_duration(job, o), age(job, o.now),
            *_template_cells(job.spec)]


JOB = TableConvertor[batch_pb2.Job]((
    NAME,
    TableColumnDefinition("Status", description="Status of the job."),
    TableColumnDefinition("Completions", description="The number of pods which reached phase Succeeded."),
    TableColumnDefinition("Duration", description="Time required to complete the job."),
    AGE,
    *TEMPLATE_COLUMNS[:2],
    TableColumnDefinition("Selector", priority=1, description=_JOB_SELECTOR_DESCRIPTION),
), _job_cells)


def _cron_job_cells(cj: batch_pb2.CronJob, o: GenerateOptions) -> list[Cell]:
    spec = cj.spec
    last = timestamp(cj.status, "last_schedule_time")
    suspend = ("True" if spec.suspend else "False") if spec.HasField("suspend") else "<unset>"
    return [cj.metadata.name, spec.schedule, spec.time_zone if spec.HasField("time_zone") else NONE, suspend,
            len(cj.status.active), since(last, o.now) if last is not None else NONE, age(cj, o.now),
            *_template_cells(spec.job_template.spec)]


CRON_JOB = TableConvertor[batch_pb2.CronJob]((
    NAME,
    TableColumnDefinition("Schedule", description="The schedule in Cron format, see "
                          "https://en.wikipedia.org/wiki/Cron."),
    TableColumnDefinition("Timezone", description="The time zone name for the given schedule, see "
                          "https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
    TableColumnDefinition("Suspend", type="boolean", description="This flag tells the controller to suspend "
                          "subsequent executions, it does not apply to already started executions."),
    TableColumnDefinition("Active", type="integer", description="A list of pointers to currently running jobs."),
    TableColumnDefinition("Last Schedule", description="Information when was the last time the job was "
                          "successfully scheduled."),
    AGE,
    *TEMPLATE_COLUMNS[:2],
    TableColumnDefinition("Selector", priority=1, description=_JOB_SELECTOR_DESCRIPTION),
), _cron_job_cells)
