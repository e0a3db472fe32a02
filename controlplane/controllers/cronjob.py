"""The CronJob controller: creates a Job at each time the schedule names (Kubernetes' cronjob_controllerv2).

Each sync of a CronJob first reconciles `status.active` with the Jobs it owns
(finished ones leave it, and set `lastSuccessfulTime`; vanished ones leave it),
then, unless the CronJob is suspended or being deleted, finds the most recent
time the schedule fired since the last run (in `spec.timeZone`, else the
controller manager's zone). That time is skipped if it is older than
`startingDeadlineSeconds`, or already run; with `concurrencyPolicy: Forbid`
it is skipped while a run is active, with `Replace` the active runs are
deleted first. The Job is named `<cronjob>-<scheduled time in minutes since
the epoch>`, so a time can never be run twice even by two controllers.
Finished Jobs beyond the success and failure history limits are deleted,
oldest first. The key is queued again for the next time the schedule fires.

The clock is injectable (`clock`), so a test drives time by hand and calls
`resync()` to make the controller look again.
"""

from __future__ import annotations

import datetime as _dt
import logging
import zoneinfo
from collections.abc import Callable

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, MutationCache, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import jobutil, podutil
from proto import batch_pb2, cron, meta_pb2
from proto.errors import AlreadyExists, ApiError, Conflict, NamespaceTerminating, NotFound
from proto.wellknown import ANNOTATION_CRONJOB_SCHEDULED

log = logging.getLogger(__name__)

TOO_MANY_MISSED = 100  # more missed times than this earns a warning event, as in Kubernetes
REQUEUE_SLACK = 0.1  # seconds after the next scheduled time, so the clock has surely passed it


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def job_name(cj: batch_pb2.CronJob, scheduled: _dt.datetime) -> str:
    """`<cronjob>-<minutes since the epoch>`: deterministic, so one time makes one Job."""
    return f"{cj.metadata.name}-{int(scheduled.timestamp()) // 60}"


def _time(ts: object) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, _dt.UTC)  # type: ignore[attr-defined]


def job_from_template(cj: batch_pb2.CronJob, scheduled: _dt.datetime, zone: _dt.tzinfo) -> batch_pb2.Job:
    """The Job for the run at `scheduled`: the template's labels, annotations and spec, owned by the CronJob."""
    template = cj.spec.job_template
    job = batch_pb2.Job(api_version="batch/v1", kind="Job")
    job.metadata.name = job_name(cj, scheduled)
    job.metadata.namespace = cj.metadata.namespace
    job.metadata.labels.update(template.metadata.labels)
    job.metadata.annotations.update(template.metadata.annotations)
    job.metadata.annotations[ANNOTATION_CRONJOB_SCHEDULED] = scheduled.astimezone(zone).isoformat(timespec="seconds")
    podutil.set_controller(job, cj)
    job.spec.CopyFrom(template.spec)
    return job


def _reference(job: batch_pb2.Job) -> meta_pb2.ObjectReference:
    m = job.metadata
    return meta_pb2.ObjectReference(kind="Job", namespace=m.namespace, name=m.name, uid=m.uid,
                                    api_version="batch/v1", resource_version=m.resource_version)


def _remove_active(status: batch_pb2.CronJobStatus, uid: str) -> None:
    kept = [ref for ref in status.active if ref.uid != uid]
    del status.active[:]
    status.active.extend(kept)


class CronJobController(Controller):
    name = "cronjob"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *, workers: int = 5,
                 clock: Callable[[], _dt.datetime] = utc_now, namespace: str = "") -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.clock = clock
        # One namespace, or all (""): a test's controller with its own clock keeps to the test's namespace.
        self.cronjobs = factory.informer(batch_pb2.CronJob, namespace)
        self.jobs = factory.informer(batch_pb2.Job, namespace)
        self.informers = [self.cronjobs, self.jobs]
        self._written = MutationCache()  # our status writes, until the informer has them
        self.cronjobs.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                  on_delete=self._enqueue)
        self.jobs.add_handler(on_add=self._job_changed, on_update=lambda _o, n: self._job_changed(n),
                              on_delete=self._job_changed)

    def _enqueue(self, cj: batch_pb2.CronJob) -> None:
        self.queue.add(key_of(cj))

    def _job_changed(self, job: batch_pb2.Job) -> None:
        ref = podutil.controller_ref(job)
        if ref is not None and ref.kind == "CronJob":
            self.queue.add(f"{job.metadata.namespace}/{ref.name}")

    def _fresh(self, key: str) -> batch_pb2.CronJob | None:
        """The cached object, or our own newer write of it while the informer has not shown it yet."""
        cached = self.cronjobs.store.get(key)
        if cached is None:
            return None
        return next(o for o in self._written.merge([cached], cached.metadata.namespace) if key_of(o) == key)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        namespace, _ = split_key(key)
        cj = self._fresh(key)
        if cj is None:
            return
        uid = cj.metadata.uid
        jobs = [j for j in self.jobs.store.list_by_namespace(namespace)
                if (ref := podutil.controller_ref(j)) is not None and ref.uid == uid]
        status = copy(cj.status)
        await self._reconcile_active(cj, jobs, status)
        requeue: float | None = None
        try:
            requeue = await self._schedule(cj, status)
        finally:
            await self._clean_up_history(cj, jobs, status)
            if status != cj.status:
                new = copy(cj)
                new.status.CopyFrom(status)
                try:
                    self._written.remember(await self.client.update_status(new))
                except NotFound:
                    return
        if requeue is not None:
            self.queue.add_after(key, requeue)

    async def _reconcile_active(self, cj: batch_pb2.CronJob, jobs: list[batch_pb2.Job],
                                status: batch_pb2.CronJobStatus) -> None:
        """status.active holds exactly the owned Jobs still running; lastSuccessfulTime the newest success."""
        active_uids = {ref.uid for ref in status.active}
        for job in jobs:
            finished = jobutil.finished_condition(job)
            if finished is None:
                if job.metadata.uid not in active_uids:
                    # Made by someone else (`create job --from`), or our status write was lost.
                    self.recorder.event(cj, WARNING, "UnexpectedJob",
                                        f"Saw a job that the controller did not create or forgot: {job.metadata.name}")
                continue
            if job.metadata.uid in active_uids:
                _remove_active(status, job.metadata.uid)
                self.recorder.event(cj, NORMAL, "SawCompletedJob",
                                    f"Saw completed job: {job.metadata.name}, condition: {finished.type}")
            if finished.type == jobutil.COMPLETE and job.status.HasField("completion_time") and (
                    not status.HasField("last_successful_time")
                    or job.status.completion_time.ToNanoseconds() > status.last_successful_time.ToNanoseconds()):
                status.last_successful_time.CopyFrom(job.status.completion_time)
        owned = {j.metadata.uid for j in jobs}
        for ref in list(status.active):
            if ref.uid in owned:
                continue
            # Not in the cache: gone, or created so recently the informer has not shown it yet.
            try:
                job = await self.client.get(batch_pb2.Job, ref.name, ref.namespace)
                if job.metadata.uid == ref.uid:
                    continue
            except NotFound:
                pass
            _remove_active(status, ref.uid)
            self.recorder.event(cj, NORMAL, "MissingJob", f"Active job went missing: {ref.name}")

    def _zone(self, cj: batch_pb2.CronJob) -> _dt.tzinfo | None:
        if not cj.spec.HasField("time_zone"):
            zone = self.clock().astimezone().tzinfo  # the controller manager's own zone, as in Kubernetes
            return zone if zone is not None else _dt.UTC
        try:
            return zoneinfo.ZoneInfo(cj.spec.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            self.recorder.event(cj, WARNING, "UnknownTimeZone", f"invalid timeZone: {cj.spec.time_zone!r}: {err}")
            return None

    async def _schedule(self, cj: batch_pb2.CronJob, status: batch_pb2.CronJobStatus) -> float | None:
        """Start the run that is due, if any; seconds until the schedule next fires (None: do not requeue)."""
        spec = cj.spec
        if cj.metadata.HasField("deletion_timestamp") or spec.suspend:
            return None
        zone = self._zone(cj)
        if zone is None:
            return None
        try:
            schedule = cron.parse(spec.schedule)
        except cron.ScheduleError as err:
            self.recorder.event(cj, WARNING, "UnparseableSchedule", f"unparseable schedule: {spec.schedule!r} : {err}")
            return None
        now = self.clock().astimezone(zone)
        earliest = _time(status.last_schedule_time if status.HasField("last_schedule_time")
                         else cj.metadata.creation_timestamp).astimezone(zone)
        if spec.HasField("starting_deadline_seconds"):
            # Nothing older than the deadline will ever be started: do not even look at it.
            earliest = max(earliest, now - _dt.timedelta(seconds=spec.starting_deadline_seconds))
        scheduled, missed = schedule.most_recent(earliest, now, limit=TOO_MANY_MISSED)

        def until_next() -> float:
            return (schedule.next_after(now) - now).total_seconds() + REQUEUE_SLACK

        if scheduled is None:
            return until_next()
        if missed > TOO_MANY_MISSED:
            self.recorder.event(cj, WARNING, "TooManyMissedTimes",
                                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or "
                                "check clock skew")
        if spec.HasField("starting_deadline_seconds") and \
                scheduled + _dt.timedelta(seconds=spec.starting_deadline_seconds) < now:
            self.recorder.event(cj, WARNING, "MissSchedule", "Missed scheduled time to start a job: "
                                + scheduled.astimezone(_dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return until_next()
        name = job_name(cj, scheduled)
        if any(ref.name == name for ref in status.active) or (
                status.HasField("last_schedule_time") and _time(status.last_schedule_time) == scheduled):
            return until_next()  # this time has been run already
        if spec.concurrency_policy == "Forbid" and status.active:
            self.recorder.event(cj, NORMAL, "JobAlreadyActive",
                                "Not starting job because prior execution is running and concurrency policy is "
                                "Forbid")
            return until_next()
        if spec.concurrency_policy == "Replace":
            for ref in list(status.active):
                await self._delete_job(cj, ref.name, ref.uid, status)
        job = await self._create_job(cj, job_from_template(cj, scheduled, zone), status)
        if job is None:
            return None
        status.active.append(_reference(job))
        status.last_schedule_time.FromNanoseconds(int(scheduled.timestamp() * 1e9))
        return until_next()

    async def _create_job(self, cj: batch_pb2.CronJob, job: batch_pb2.Job,
                          status: batch_pb2.CronJobStatus) -> batch_pb2.Job | None:
        """Create the run's Job; None when there is nothing to add to status.active."""
        try:
            created = await self.client.create(job)
        except AlreadyExists:
            # Ours from a sync whose status write was lost? Then record it; else someone else's.
            existing = await self.client.get(batch_pb2.Job, job.metadata.name, job.metadata.namespace)
            ref = podutil.controller_ref(existing)
            if ref is None or ref.uid != cj.metadata.uid or any(
                    a.uid == existing.metadata.uid for a in status.active):
                return None
            return existing
        except NamespaceTerminating:
            return None
        except ApiError as err:
            self.recorder.event(cj, WARNING, "FailedCreate", f"Error creating job: {err}")
            raise
        self.recorder.event(cj, NORMAL, "SuccessfulCreate", f"Created job {created.metadata.name}")
        return created

    async def _delete_job(self, cj: batch_pb2.CronJob, name: str, uid: str, status: batch_pb2.CronJobStatus) -> None:
        try:
            await self.client.delete(batch_pb2.Job, name, cj.metadata.namespace, propagation_policy="Background",
                                     uid=uid)
        except (NotFound, Conflict):
            pass
        else:
            self.recorder.event(cj, NORMAL, "SuccessfulDelete", f"Deleted job {name}")
        _remove_active(status, uid)

    async def _clean_up_history(self, cj: batch_pb2.CronJob, jobs: list[batch_pb2.Job],
                                status: batch_pb2.CronJobStatus) -> None:
        """Delete the oldest finished Jobs beyond successfulJobsHistoryLimit and failedJobsHistoryLimit."""
        spec = cj.spec
        for type_, has_limit, limit in (
                (jobutil.COMPLETE, spec.HasField("successful_jobs_history_limit"), spec.successful_jobs_history_limit),
                (jobutil.FAILED, spec.HasField("failed_jobs_history_limit"), spec.failed_jobs_history_limit)):
            if not has_limit:
                continue
            finished = [j for j in jobs if (c := jobutil.finished_condition(j)) is not None and c.type == type_
                        and not j.metadata.HasField("deletion_timestamp")]
            if len(finished) <= limit:
                continue
            # Oldest start first; Jobs that never started last, then by name (Kubernetes' byJobStartTime).
            finished.sort(key=lambda j: (not j.status.HasField("start_time"), j.status.start_time.ToNanoseconds(),
                                         j.metadata.name))
            for job in finished[:len(finished) - limit]:
                await self._delete_job(cj, job.metadata.name, job.metadata.uid, status)
