"""The Job controller: runs a Job's pods to completion, and counts every one exactly once.

For each Job it keeps `parallelism` pods running (fewer once the remaining
completions need fewer), until `completions` pods have succeeded — or, in
Indexed mode, one pod per index 0..completions-1, each told its index by the
`batch.kubernetes.io/job-completion-index` annotation and JOB_COMPLETION_INDEX.
A Job whose pods failed more than `backoffLimit` times, that ran longer than
`activeDeadlineSeconds`, or whose podFailurePolicy says FailJob first gets the
FailureTarget condition, loses its active pods, then is Failed; one that
succeeded gets SuccessCriteriaMet, then Complete. After a failure the next pod
waits (10 s doubling, at most 6 min). A suspended Job has no pods. A finished
Job with `ttlSecondsAfterFinished` is deleted that long after it finished.

Counting survives anything (Kubernetes' finalizer tracking): every pod is
created with the `batch.kubernetes.io/job-tracking` finalizer, so a finished
pod cannot vanish before it is counted. A sync counts in three steps, each
safe to repeat after a crash: (1) write the uids of newly finished pods into
`status.uncountedTerminatedPods`, (2) remove their finalizers, (3) move them
from there into `succeeded`/`failed`. Pods of deleted Jobs lose the finalizer
too (orphan keys, `pod:<namespace>/<name>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, MutationCache, copy
from client.events import NORMAL, WARNING, EventRecorder
from client.retry import update_fresh
from controlplane.controllers import jobutil, podutil
from controlplane.controllers.expectations import Expectations
from controlplane.controllers.jobutil import (
    COMPLETE,
    FAILED,
    FAILURE_TARGET,
    SUCCESS_CRITERIA_MET,
    SUSPENDED,
    has_tracking_finalizer,
    is_terminating,
)
from controlplane.controllers.replicaset import deletion_cost, slow_start
from proto import batch_pb2, core_pb2
from proto.errors import ApiError, Conflict, NamespaceTerminating, NotFound
from proto.wellknown import FINALIZER_JOB_TRACKING

log = logging.getLogger(__name__)

ORPHAN = "pod:"  # key prefix: a pod holding the tracking finalizer whose Job is gone
BURST = 500  # most pods created in one sync


def _record(job: batch_pb2.Job, status: batch_pb2.JobStatus, succeeded: list[core_pb2.Pod],
            failed: list[core_pb2.Pod]) -> None:
    """Step (1) on `status`: the newly finished pods' uids as uncounted (and, Indexed, their indexes as done)."""
    status.uncounted_terminated_pods.succeeded.extend(p.metadata.uid for p in succeeded)
    status.uncounted_terminated_pods.failed.extend(p.metadata.uid for p in failed)
    if job.spec.completion_mode == "Indexed":
        completions = job.spec.completions
        indexes = jobutil.parse_indexes(status.completed_indexes, completions)
        indexes.update(i for p in succeeded if (i := jobutil.completion_index(p, completions)) is not None)
        status.completed_indexes = jobutil.format_indexes(indexes)


SYNC_BATCH_PERIOD = 0.05  # seconds; Kubernetes waits 1 s


class JobController(Controller):
    name = "job"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *, workers: int = 5,
                 backoff: float = jobutil.DEFAULT_BACKOFF, max_backoff: float = jobutil.DEFAULT_MAX_BACKOFF,
                 clock: Callable[[], float] = time.time, batch_period: float = SYNC_BATCH_PERIOD) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.backoff, self.max_backoff, self.clock = backoff, max_backoff, clock
        self.batch_period = batch_period
        self.expectations = Expectations()
        self.jobs = factory.informer(batch_pb2.Job)
        self.pods = factory.informer(core_pb2.Pod)
        self.informers = [self.jobs, self.pods]
        # Our own status writes, until the informer shows them (a sync must not start from an older status).
        self._written = MutationCache()
        # uids of pods whose finalizer we removed, until the informer shows it gone: never counted twice.
        self._released: set[str] = set()
        # uids of pods this controller deleted (suspend, surplus, a finishing Job): not failures.
        self._deleted_by_us: set[str] = set()
        # Job key -> (failures in a row, when the last one finished): the pod creation back-off.
        self._failures: dict[str, tuple[int, float]] = {}
        self.jobs.add_handler(on_add=self._enqueue_job, on_update=lambda _o, n: self._enqueue_job(n),
                              on_delete=self._job_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        # Job key -> when its last sync started (monotonic): the pod-event batching's leading edge.
        self._last_sync: dict[str, float] = {}

    # ---------------------------------------------------------------- handlers: only bookkeeping and keys

    def _enqueue_job(self, job: batch_pb2.Job) -> None:
        self.queue.add(key_of(job))

    def _job_deleted(self, job: batch_pb2.Job) -> None:
        self.queue.add(key_of(job))
        # Its pods' finalizers must go now that no Job will count them.
        for pod in self.pods.store.list_by_namespace(job.metadata.namespace):
            ref = podutil.controller_ref(pod)
            if ref is not None and ref.uid == job.metadata.uid and has_tracking_finalizer(pod):
                self.queue.add(ORPHAN + key_of(pod))

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        return podutil.controller_key(pod, "Job", self.jobs.store)

    def _pod_changed(self, pod: core_pb2.Pod) -> str | None:
        if not has_tracking_finalizer(pod):
            self._released.discard(pod.metadata.uid)
        owner = self._owner_key(pod)
        if owner is not None:
            self._batch(owner)
        elif has_tracking_finalizer(pod):
            self.queue.add(ORPHAN + key_of(pod))
        return owner

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        owner = self._pod_changed(pod)
        if owner is not None:
            self.expectations.creation_observed(owner)
            if pod.metadata.HasField("deletion_timestamp"):
                self.expectations.deletion_observed(owner, key_of(pod))

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        owner = self._pod_changed(new)
        if owner is not None and new.metadata.HasField("deletion_timestamp"):
            self.expectations.deletion_observed(owner, key_of(new))
        old_owner = self._owner_key(old)
        if old_owner is not None and old_owner != owner:
            self.queue.add(old_owner)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        self._released.discard(pod.metadata.uid)
        self._deleted_by_us.discard(pod.metadata.uid)
        owner = self._owner_key(pod)
        if owner is not None:
            self.expectations.deletion_observed(owner, key_of(pod))
            self._batch(owner)

    def _batch(self, owner: str) -> None:
        """Sync the Job for a pod event, batched as Kubernetes' syncJobBatchPeriod: a burst of pods
        finishing is counted in one sync (two status writes), not one sync per pod. Unlike Kubernetes,
        whose every pod event waits the period, the first event after a quiet period syncs at once: a
        lone pod's end has nothing to wait for, and a Job running a few pods at a time would otherwise
        add the period to every wave. Syncs stay at most one per period while events keep coming."""
        since = time.monotonic() - self._last_sync.get(owner, float("-inf"))
        if since >= self.batch_period:
            self.queue.add(owner)
        else:
            self.queue.add_after(owner, self.batch_period - since)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        if key.startswith(ORPHAN):
            await self._release_orphan(key.removeprefix(ORPHAN))
            return
        namespace, _ = split_key(key)
        job = self._fresh(key)
        if job is None:
            self.expectations.forget(key)
            self._failures.pop(key, None)
            self._last_sync.pop(key, None)
            return
        self._last_sync[key] = time.monotonic()
        if job.spec.completion_mode not in ("NonIndexed", "Indexed"):
            return  # a mode from a newer Kubernetes: not ours to run
        # Expectations before the pod list: pods arriving in between are seen by the next sync.
        satisfied = self.expectations.satisfied(key)
        uid = job.metadata.uid
        pods = [p for p in self.pods.store.list_by_namespace(namespace)
                if (ref := podutil.controller_ref(p)) is not None and ref.uid == uid]
        # The pods as listed and the uids released by then belong together: the informer takes a uid
        # out of _released when it shows that pod's finalizer gone, which may happen while this sync
        # awaits its writes, with `pods` still showing the finalizer.
        released = set(self._released)
        try:
            early = await self._manage_early(key, job, pods, released) if satisfied else None
            job, status = await self._count_finished(key, job, pods, released)
            await self._converge(key, job, status, pods, satisfied, early)
        except NotFound:
            return  # the Job went away mid-sync; its deletion brings us back

    async def _manage_early(self, key: str, job: batch_pb2.Job, pods: list[core_pb2.Pod], released: set[str]
                            ) -> tuple[int, list[core_pb2.Pod]] | None:
        """Start the pods for the next completions before the counting writes, as Kubernetes' syncJob
        runs manageJob before trackJobStatusAndRemoveFinalizers: a finished pod's replacement then
        waits for no status write or finalizer removal. Only for a running Job whose new outcomes are
        all successes (failures move the back-off and may end the Job: those go the long way).
        Returns (created, deleted), or None when _converge is to manage the pods itself."""
        if jobutil.finished_condition(job) or job.metadata.HasField("deletion_timestamp") or job.spec.suspend \
                or jobutil.condition(job, FAILURE_TARGET) or jobutil.condition(job, SUCCESS_CRITERIA_MET) \
                or jobutil.condition(job, SUSPENDED) or not job.status.HasField("start_time") \
                or job.status.uncounted_terminated_pods.failed:
            return None
        succeeded, failed, _, _ = self._new_outcomes(job, pods, released, active_job=True)
        if failed or not succeeded:
            return None  # nothing new finished: _converge manages as before, with no write ahead of it
        projected = copy(job.status)
        _record(job, projected, succeeded, [])
        active = [p for p in pods if podutil.is_active(p)]
        now = self.clock()
        if self._reached_an_end(job, copy(projected), active, now):
            return None
        return await self._manage_pods(key, job, projected, active, now)

    def _fresh(self, key: str) -> batch_pb2.Job | None:
        """The cached object, or our own newer write of it while the informer has not shown it yet."""
        cached = self.jobs.store.get(key)
        if cached is None:
            return None
        return next(o for o in self._written.merge([cached], cached.metadata.namespace) if key_of(o) == key)

    async def _write_status(self, key: str, job: batch_pb2.Job, status: batch_pb2.JobStatus) -> batch_pb2.Job:
        if status == job.status:
            return job
        new = copy(job)
        new.status.CopyFrom(status)
        stored = await self.client.update_status(new)  # a Conflict means a stale cache: the sync is retried
        self._written.remember(stored)
        return stored

    # ---------------------------------------------------------------- counting: the three steps

    def _judge(self, job: batch_pb2.Job, pod: core_pb2.Pod, active_job: bool) -> tuple[str, str]:
        """What a pod that still carries the finalizer has become: ("succeeded" | "failed" | "release" | "", why).

        "release" means the finalizer goes without the pod being counted: a pod we
        deleted ourselves, one the podFailurePolicy ignores, or one left behind by
        a suspended, finished or deleted Job. "" means it still runs.
        """
        if pod.status.phase == "Succeeded":
            return "succeeded", ""
        deleted_by_us = pod.metadata.uid in self._deleted_by_us
        if pod.status.phase == "Failed" or (is_terminating(pod) and active_job and not deleted_by_us):
            # A pod deleted before it finished counts as failed: it did not do its work.
            action, message = jobutil.failure_policy_action(job, pod)
            if action == "Ignore":
                return "release", ""
            return "failed", message if action == "FailJob" else ""
        if is_terminating(pod):
            return "release", ""
        return "", ""

    def _new_outcomes(self, job: batch_pb2.Job, pods: list[core_pb2.Pod], released: set[str], active_job: bool
                      ) -> tuple[list[core_pb2.Pod], list[core_pb2.Pod], list[core_pb2.Pod], str]:
        """Pods finished since the last count: (succeeded, failed, to release uncounted, a FailJob message)."""
        uncounted = job.status.uncounted_terminated_pods
        seen = {*uncounted.succeeded, *uncounted.failed}
        succeeded: list[core_pb2.Pod] = []
        failed: list[core_pb2.Pod] = []
        release: list[core_pb2.Pod] = []
        fail_job = ""
        for pod in pods:
            if not has_tracking_finalizer(pod) or pod.metadata.uid in released or pod.metadata.uid in seen:
                continue
            verdict, message = self._judge(job, pod, active_job)
            if verdict == "succeeded":
                succeeded.append(pod)
            elif verdict == "failed":
                failed.append(pod)
                fail_job = fail_job or message
            elif verdict == "release":
                release.append(pod)
        return succeeded, failed, release, fail_job

    async def _count_finished(self, key: str, job: batch_pb2.Job, pods: list[core_pb2.Pod], released: set[str]
                              ) -> tuple[batch_pb2.Job, batch_pb2.JobStatus]:
        """Steps (1)-(3); the Job as last written and its status with the new counts, still to be written."""
        status = copy(job.status)
        uncounted = status.uncounted_terminated_pods
        active_job = not (jobutil.finished_condition(job) or job.metadata.HasField("deletion_timestamp")
                          or job.spec.suspend)
        new_succeeded, new_failed, release, fail_job = self._new_outcomes(job, pods, released, active_job)
        # (1) Record the newly finished before touching their finalizers.
        if new_succeeded or new_failed:
            _record(job, status, new_succeeded, new_failed)
            if fail_job and jobutil.condition(job, FAILURE_TARGET) is None and active_job:
                jobutil.set_condition(status, FAILURE_TARGET, "True", jobutil.REASON_POD_FAILURE_POLICY, fail_job,
                                      self.clock())
            job = await self._write_status(key, job, status)
            status = copy(job.status)
            uncounted = status.uncounted_terminated_pods
            self._note_outcomes(key, new_succeeded, new_failed)
        # (2) Remove the finalizers of everything recorded (and of pods released uncounted).
        recorded = {*uncounted.succeeded, *uncounted.failed}
        targets = [p for p in pods if has_tracking_finalizer(p) and p.metadata.uid not in released
                   and p.metadata.uid in recorded] + release
        results = await asyncio.gather(*(self._remove_finalizer(p) for p in targets), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        released |= {p.metadata.uid for p, r in zip(targets, results, strict=True) if not isinstance(r, BaseException)}
        # (3) Move into the counters whatever no longer holds the finalizer.
        by_uid = {p.metadata.uid: p for p in pods}

        def done(uid: str) -> bool:
            pod = by_uid.get(uid)
            return pod is None or not has_tracking_finalizer(pod) or uid in released

        for field in ("succeeded", "failed"):
            pending = getattr(uncounted, field)
            counted = [uid for uid in pending if done(uid)]
            setattr(status, field, getattr(status, field) + len(counted))
            kept = [uid for uid in pending if not done(uid)]
            del pending[:]
            pending.extend(kept)
        if job.spec.completion_mode == "Indexed":
            status.succeeded = len(jobutil.parse_indexes(status.completed_indexes, job.spec.completions))
        if not uncounted.succeeded and not uncounted.failed:
            status.ClearField("uncounted_terminated_pods")
            status.uncounted_terminated_pods.SetInParent()  # Kubernetes shows `{}` once tracking began
        if errors:
            raise errors[0]  # the recorded uids stay in the status: the retry counts them
        return job, status

    def _note_outcomes(self, key: str, succeeded: list[core_pb2.Pod], failed: list[core_pb2.Pod]) -> None:
        """The back-off: failures in a row since the last success, and when the last one finished."""
        count, last = self._failures.get(key, (0, 0.0))
        if succeeded and not failed:
            self._failures.pop(key, None)
            return
        if failed:
            self._failures[key] = (count + len(failed), max(last, *(jobutil.pod_finish_time(p) for p in failed)))

    async def _remove_finalizer(self, pod: core_pb2.Pod) -> None:
        def change(p: core_pb2.Pod) -> bool:
            if p.metadata.uid != pod.metadata.uid or FINALIZER_JOB_TRACKING not in p.metadata.finalizers:
                return False
            kept = [f for f in p.metadata.finalizers if f != FINALIZER_JOB_TRACKING]
            del p.metadata.finalizers[:]
            p.metadata.finalizers.extend(kept)
            return True

        try:
            # The cached pod is usually current (its last write was the kubelet's, which brought us
            # here): one update instead of a read and an update; a Conflict reads it afresh.
            cached = copy(pod)
            if change(cached):
                await self.client.update(cached)
        except Conflict:
            with contextlib.suppress(NotFound):
                await update_fresh(self.client, core_pb2.Pod, pod.metadata.name, pod.metadata.namespace, change)
        except NotFound:
            pass
        self._released.add(pod.metadata.uid)

    async def _release_orphan(self, pod_key: str) -> None:
        pod = self.pods.store.get(pod_key)
        if pod is None or not has_tracking_finalizer(pod) or self._owner_key(pod) is not None:
            return
        await self._remove_finalizer(pod)

    # ---------------------------------------------------------------- converging

    async def _converge(self, key: str, job: batch_pb2.Job, status: batch_pb2.JobStatus, pods: list[core_pb2.Pod],
                        satisfied: bool, early: tuple[int, list[core_pb2.Pod]] | None = None) -> None:
        """Run, suspend or finish the Job, then write `status` (counts, conditions, times) once.

        `early` is what _manage_early already created and deleted in this sync."""
        now = self.clock()
        created, removed = early or (0, [])
        deleted_early = {p.metadata.uid for p in removed}
        active = [p for p in pods if podutil.is_active(p) and p.metadata.uid not in deleted_early]
        terminating = [p for p in pods if is_terminating(p)]
        finished = jobutil.finished_condition(job)
        if finished is not None or job.metadata.HasField("deletion_timestamp"):
            pass  # nothing more to run; the finalizers went in _count_finished
        elif jobutil.condition(job, FAILURE_TARGET) or jobutil.condition(job, SUCCESS_CRITERIA_MET) or \
                self._reached_an_end(job, status, active, now):
            removed = removed + await self._delete_pods(key, job, active)
            self._finish(job, status, bool(active) or bool(terminating) or created > 0, now)
        elif job.spec.suspend:
            removed = await self._delete_pods(key, job, active)
            if jobutil.set_condition(status, SUSPENDED, "True", "JobSuspended", "Job suspended", now):
                self.recorder.event(job, NORMAL, "Suspended", "Job suspended")
            # Suspension stops the activeDeadlineSeconds clock; it starts afresh on resume.
            status.ClearField("start_time")
        else:
            if jobutil.condition(job, SUSPENDED) is not None and \
                    jobutil.set_condition(status, SUSPENDED, "False", "JobResumed", "Job resumed", now):
                self.recorder.event(job, NORMAL, "Resumed", "Job resumed")
            if not status.HasField("start_time"):
                status.start_time.FromNanoseconds(int(now * 1e9))
            if job.spec.HasField("active_deadline_seconds"):
                started = status.start_time.ToNanoseconds() / 1e9
                self.queue.add_after(key, max(0.0, started + job.spec.active_deadline_seconds - now) + 0.05)
            if satisfied and early is None:
                created, removed = await self._manage_pods(key, job, status, active, now)
        gone = {p.metadata.uid for p in removed}
        still_active = [p for p in active if p.metadata.uid not in gone]
        status.active = len(still_active) + created
        status.ready = sum(podutil.is_ready(p) for p in still_active)
        status.terminating = len(terminating) + len(removed)
        job = await self._write_status(key, job, status)
        if jobutil.finished_condition(job) is not None:
            await self._expire(key, job, now)

    def _reached_an_end(self, job: batch_pb2.Job, status: batch_pb2.JobStatus, active: list[core_pb2.Pod],
                        now: float) -> bool:
        """Set FailureTarget or SuccessCriteriaMet if the Job has failed or succeeded; True if it has."""
        spec = job.spec
        restarts = sum(s.restart_count for p in active
                       for s in (*p.status.container_statuses, *p.status.init_container_statuses))
        on_failure = spec.template.spec.restart_policy == "OnFailure"
        reason = message = ""
        if status.failed > spec.backoff_limit or (on_failure and (
                restarts > 0 if spec.backoff_limit == 0 else restarts >= spec.backoff_limit)):
            reason, message = jobutil.REASON_BACKOFF_LIMIT, jobutil.MESSAGE_BACKOFF_LIMIT
        elif spec.HasField("active_deadline_seconds") and status.HasField("start_time") and \
                now >= status.start_time.ToNanoseconds() / 1e9 + spec.active_deadline_seconds:
            reason, message = jobutil.REASON_DEADLINE, jobutil.MESSAGE_DEADLINE
        if reason:
            jobutil.set_condition(status, FAILURE_TARGET, "True", reason, message, now)
            return True
        if spec.completion_mode == "Indexed":
            succeeded = len(jobutil.parse_indexes(status.completed_indexes, spec.completions)) >= spec.completions
        elif spec.HasField("completions"):
            succeeded = status.succeeded >= spec.completions
        else:  # a work queue: one success, and the others done too
            succeeded = status.succeeded > 0 and not active
        if succeeded:
            jobutil.set_condition(status, SUCCESS_CRITERIA_MET, "True", jobutil.REASON_COMPLETIONS_REACHED,
                                  jobutil.MESSAGE_COMPLETIONS_REACHED, now)
        return succeeded

    def _finish(self, job: batch_pb2.Job, status: batch_pb2.JobStatus, pods_left: bool, now: float) -> None:
        """Complete or Failed, once the last pod has gone and been counted (Kubernetes 1.31+)."""
        uncounted = status.uncounted_terminated_pods
        if pods_left or uncounted.succeeded or uncounted.failed:
            return
        target = next((c for c in status.conditions if c.type == FAILURE_TARGET and c.status == "True"), None)
        if target is not None:
            jobutil.set_condition(status, FAILED, "True", target.reason, target.message, now)
            self.recorder.event(job, WARNING, target.reason, target.message)
            return
        jobutil.set_condition(status, COMPLETE, "True", jobutil.REASON_COMPLETIONS_REACHED,
                              jobutil.MESSAGE_COMPLETIONS_REACHED, now)
        status.completion_time.FromNanoseconds(int(now * 1e9))
        self.recorder.event(job, NORMAL, "Completed", "Job completed")

    async def _manage_pods(self, key: str, job: batch_pb2.Job, status: batch_pb2.JobStatus,
                           active: list[core_pb2.Pod], now: float) -> tuple[int, list[core_pb2.Pod]]:
        """Create the missing pods (after the back-off) and delete the surplus; (created, deleted)."""
        spec = job.spec
        surplus: list[core_pb2.Pod] = []
        if spec.completion_mode == "Indexed":
            done = jobutil.parse_indexes(status.completed_indexes, spec.completions)
            running: dict[int, core_pb2.Pod] = {}
            for pod in sorted(active, key=lambda p: p.metadata.creation_timestamp.ToNanoseconds()):
                index = jobutil.completion_index(pod, spec.completions)
                if index is None or index in done or index in running:
                    surplus.append(pod)  # a duplicate, or an index already done
                else:
                    running[index] = pod
            kept = sorted(running)[:spec.parallelism]
            surplus += [running[i] for i in sorted(running)[spec.parallelism:]]
            wanted: list[int | None] = [i for i in range(spec.completions) if i not in done and i not in running]
            wanted = wanted[:max(0, spec.parallelism - len(kept))]
        else:
            # Successes still waiting to be counted are successes (Kubernetes' manageJob counts them too):
            # leaving them out would start pods for completions already done.
            succeeded = status.succeeded + len(status.uncounted_terminated_pods.succeeded)
            if spec.HasField("completions"):
                want = min(spec.parallelism, max(0, spec.completions - succeeded))
            else:  # a work queue: once one pod succeeded, no new ones
                want = 0 if succeeded > 0 else spec.parallelism
            diff = want - len(active)
            surplus = sorted(active, key=deletion_cost)[:-diff] if diff < 0 else []
            wanted = [None] * max(0, diff)
        removed = await self._delete_pods(key, job, surplus)
        wanted = wanted[:BURST]
        if not wanted:
            return 0, removed
        count, last = self._failures.get(key, (0, 0.0))
        wait = last + jobutil.backoff_delay(count, self.backoff, self.max_backoff) - now
        if wait > 0:
            self.queue.add_after(key, wait)  # the back-off after a failure: no pod until then
            return 0, removed
        self.expectations.expect_creations(key, len(wanted))
        indexes = iter(wanted)
        created, error = await slow_start(len(wanted), lambda: self._create_pod(job, next(indexes)))
        if created < len(wanted):
            self.expectations.creation_observed(key, len(wanted) - created)
            if not isinstance(error, NamespaceTerminating):
                raise ApiError(f"created only {created} of {len(wanted)} pods for {key}: {error}")
        return created, removed

    async def _create_pod(self, job: batch_pb2.Job, index: int | None) -> None:
        try:
            created = await self.client.create(jobutil.pod_from_template(job, index))
        except NamespaceTerminating:
            raise
        except ApiError as err:
            self.recorder.event(job, WARNING, "FailedCreate", f"Error creating: {err}")
            raise
        self.recorder.event(job, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")

    async def _delete_pods(self, key: str, job: batch_pb2.Job, pods: list[core_pb2.Pod]) -> list[core_pb2.Pod]:
        """Delete `pods` (not counted as failures); those actually deleted."""
        if not pods:
            return []
        self.expectations.expect_deletions(key, [key_of(p) for p in pods])
        for pod in pods:
            self._deleted_by_us.add(pod.metadata.uid)

        async def delete(pod: core_pb2.Pod) -> bool:
            try:
                await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace,
                                         uid=pod.metadata.uid)
            except (NotFound, Conflict):
                self.expectations.deletion_observed(key, key_of(pod))
                return False
            self.recorder.event(job, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")
            return True

        results = await asyncio.gather(*(delete(p) for p in pods))
        return [p for p, ok in zip(pods, results, strict=True) if ok]

    async def _expire(self, key: str, job: batch_pb2.Job, now: float) -> None:
        """ttlSecondsAfterFinished: delete the finished Job (and, in the foreground, its pods) when due."""
        if not job.spec.HasField("ttl_seconds_after_finished") or job.metadata.HasField("deletion_timestamp"):
            return
        finished_at = jobutil.finish_time(job)
        if finished_at is None:
            return
        remaining = finished_at + job.spec.ttl_seconds_after_finished - now
        if remaining > 0:
            self.queue.add_after(key, remaining)
            return
        try:
            await self.client.delete(batch_pb2.Job, job.metadata.name, job.metadata.namespace,
                                     propagation_policy="Foreground", uid=job.metadata.uid)
        except (NotFound, Conflict):
            pass
