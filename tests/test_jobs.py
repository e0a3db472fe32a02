"""batch/v1 Jobs and CronJobs, as a user sees them.

Given a controller manager (its Job back-off shortened to 0.2 s) and hollow
nodes whose pods finish with the exit code their `hollow.flotilla.dev/exit-code`
annotation names: a Job of 3 completions, 2 at a time, completes; one whose
pods always fail stops at its backoffLimit; an Indexed Job runs indexes 0..n-1;
a deadline fails a Job, a TTL deletes it, suspension holds it; a deleted pod is
still counted. A CronJob controller with a clock the test turns by hand fires on
schedule, skips a run under Forbid, replaces one under Replace and prunes its
history; `kctl create job --from=cronjob/x` runs one at once. Bad Jobs and
CronJobs are refused with Kubernetes' messages, and real kubectl creates and
lists both over HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.hollow_kubelet import ANNOTATION_EXIT_CODE, ANNOTATION_RUN_SECONDS, HollowCluster
from client import Client, InformerFactory
from client.events import EventRecorder
from controlplane.controllers import jobutil
from controlplane.controllers.cronjob import CronJobController, job_name
from controlplane.printers import batch as batch_printers
from controlplane.printers.table import GenerateOptions
from kctl.main import cli
from proto import batch_pb2, core_pb2, cron, manifest, wire
from proto.errors import Invalid, NotFound
from proto.wellknown import ANNOTATION_CRONJOB_INSTANTIATE, FINALIZER_JOB_TRACKING, JOB_COMPLETION_INDEX
from provision.processes import ApiServer, Process
from tests.controllers_support import TEST_FLAGS, ControllerManager, eventually, mutate
from tests.controllers_support import hollow_fixture as hollow_fixture
from tests.kubectl_support import kubectl

# The CronJob controller runs in the test (its clock is the test's); the rest in the process.
JOB_FLAGS = ["--job-pod-failure-backoff", "0.2s", "--job-pod-failure-backoff-max", "1s",
             "--controllers", "*,-cronjob"]


class JobsControllerManager(ControllerManager):
    def start(self) -> Process:
        self._n += 1
        argv = [sys.executable, "-m", "controlplane.controllers.main", "--server", self.server, *TEST_FLAGS,
                *JOB_FLAGS]
        self.process = Process(f"controller-manager-{self._n}", argv,
                               self.log_dir / f"controller-manager-{self._n}.log")
        self.process.start()
        return self.process


@pytest.fixture(scope="module", name="controller_manager")
def controller_manager_fixture(apiserver: ApiServer,
                               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerManager]:
    cm = JobsControllerManager(apiserver.address, tmp_path_factory.mktemp("controller-manager"))
    cm.start()
    yield cm
    cm.stop()


# ---------------------------------------------------------------- builders and waits


def job(name: str, namespace: str, *, exit_code: int | None = 0, run_seconds: float = 0.3, completions: int = 1,
        parallelism: int = 1, **spec: object) -> batch_pb2.Job:
    j = batch_pb2.Job(api_version="batch/v1", kind="Job")
    j.metadata.name, j.metadata.namespace = name, namespace
    j.spec.completions, j.spec.parallelism = completions, parallelism
    for field, value in spec.items():
        setattr(j.spec, field, value)
    _pod_template(j.spec.template, exit_code, run_seconds, "Never")
    return j


def _pod_template(template: core_pb2.PodTemplateSpec, exit_code: int | None, run_seconds: float,
                  restart: str) -> None:
    if exit_code is not None:  # hollow pods without it run forever
        template.metadata.annotations[ANNOTATION_EXIT_CODE] = str(exit_code)
        template.metadata.annotations[ANNOTATION_RUN_SECONDS] = str(run_seconds)
    template.spec.containers.add(name="work", image="busybox:1.36", command=["sh", "-c", "true"])
    template.spec.restart_policy = restart


def condition(j: batch_pb2.Job, type_: str) -> batch_pb2.JobCondition | None:
    return next((c for c in j.status.conditions if c.type == type_ and c.status == "True"), None)


async def wait_condition(client: Client, name: str, namespace: str, type_: str,
                         timeout: float = 30.0) -> batch_pb2.Job:
    async def check() -> batch_pb2.Job | None:
        try:
            j = await client.get(batch_pb2.Job, name, namespace)
        except NotFound:
            return None  # not made yet (a CronJob's run)
        return j if condition(j, type_) else None

    return await eventually(check, f"job {name} {type_}", timeout)


async def job_pods(client: Client, namespace: str, name: str) -> list[core_pb2.Pod]:
    return list((await client.list(core_pb2.Pod, namespace, label_selector=f"job-name={name}")).items)


async def event_reasons(client: Client, namespace: str) -> set[str]:
    return {e.reason for e in (await client.list(core_pb2.Event, namespace)).items}


# ---------------------------------------------------------------- Jobs


async def test_a_job_of_3_completions_2_at_a_time_completes(client: Client, namespace: str,
                                                            hollow: HollowCluster) -> None:
    created = await client.create(job("pi", namespace, completions=3, parallelism=2))
    # The server's part: a selector on the Job's uid, labels on its pods, Kubernetes' defaults.
    uid = created.metadata.uid
    assert dict(created.spec.selector.match_labels) == {"batch.kubernetes.io/controller-uid": uid}
    labels = created.spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == labels["job-name"] == "pi"
    assert labels["controller-uid"] == uid and created.metadata.labels["job-name"] == "pi"
    assert (created.spec.backoff_limit, created.spec.completion_mode, created.spec.suspend) == (6, "NonIndexed",
                                                                                               False)
    most_running = 0

    async def complete() -> batch_pb2.Job | None:
        nonlocal most_running
        running = [p for p in await job_pods(client, namespace, "pi") if p.status.phase in ("Pending", "Running")]
        most_running = max(most_running, len(running))
        j = await client.get(batch_pb2.Job, "pi", namespace)
        return j if condition(j, "Complete") else None

    done = await eventually(complete, "job pi Complete", 30, interval=0.05)
    assert most_running <= 2  # parallelism
    assert (done.status.succeeded, done.status.failed, done.status.active) == (3, 0, 0)
    assert done.status.HasField("completion_time") and done.status.HasField("start_time")
    assert condition(done, "SuccessCriteriaMet") is not None  # set before Complete, as Kubernetes 1.31+
    assert condition(done, "Complete").reason == "CompletionsReached"  # type: ignore[union-attr]
    pods = await job_pods(client, namespace, "pi")
    assert len(pods) == 3 and all(p.status.phase == "Succeeded" for p in pods)
    assert not any(FINALIZER_JOB_TRACKING in p.metadata.finalizers for p in pods)  # counted, then released
    assert {"SuccessfulCreate", "Completed"} <= await event_reasons(client, namespace)
    row = batch_printers.JOB.row(done, GenerateOptions(now=dt.datetime.now(dt.UTC)))
    assert row[:3] == ["pi", "Complete", "3/3"]


async def test_a_job_whose_pods_always_fail_stops_at_its_backoff_limit(client: Client, namespace: str,
                                                                       hollow: HollowCluster) -> None:
    await client.create(job("flaky", namespace, exit_code=1, run_seconds=0.1, backoff_limit=2))
    failed = await wait_condition(client, "flaky", namespace, "Failed")
    cond = condition(failed, "Failed")
    assert cond is not None and (cond.reason, cond.message) == ("BackoffLimitExceeded",
                                                                "Job has reached the specified backoff limit")
    assert (failed.status.failed, failed.status.succeeded, failed.status.active) == (3, 0, 0)
    pods = sorted(await job_pods(client, namespace, "flaky"), key=lambda p: p.metadata.creation_timestamp.seconds)
    assert len(pods) == 3  # the first try and backoffLimit retries, no more
    # Each retry waited at least its back-off (0.2 s, then 0.4 s) after the failure before it.
    for before, after in itertools.pairwise(pods):
        finished = before.status.container_statuses[0].state.terminated.finished_at.ToNanoseconds() / 1e9
        assert after.metadata.creation_timestamp.seconds >= int(finished + 0.2) - 1
    await asyncio.sleep(1.0)
    assert len(await job_pods(client, namespace, "flaky")) == 3  # nothing runs after Failed
    assert "BackoffLimitExceeded" in await event_reasons(client, namespace)


async def test_an_indexed_job_runs_each_index_once(client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(job("idx", namespace, completions=3, parallelism=3, completion_mode="Indexed"))
    done = await wait_condition(client, "idx", namespace, "Complete")
    assert (done.status.succeeded, done.status.completed_indexes) == (3, "0-2")
    pods = await job_pods(client, namespace, "idx")
    assert sorted(p.metadata.annotations[JOB_COMPLETION_INDEX] for p in pods) == ["0", "1", "2"]
    for pod in pods:
        index = pod.metadata.annotations[JOB_COMPLETION_INDEX]
        assert pod.metadata.labels[JOB_COMPLETION_INDEX] == index
        assert pod.spec.hostname == f"idx-{index}" and pod.metadata.name.startswith(f"idx-{index}-")
        env = {e.name: e.value_from.field_ref.field_path for e in pod.spec.containers[0].env}
        assert env == {"JOB_COMPLETION_INDEX": f"metadata.annotations['{JOB_COMPLETION_INDEX}']"}


async def test_active_deadline_fails_a_job_and_stops_its_pods(client: Client, namespace: str,
                                                              hollow: HollowCluster) -> None:
    await client.create(job("slow", namespace, exit_code=None, parallelism=2, completions=2,
                            active_deadline_seconds=2))
    failed = await wait_condition(client, "slow", namespace, "Failed")
    assert condition(failed, "Failed").reason == "DeadlineExceeded"  # type: ignore[union-attr]
    assert failed.status.active == 0

    async def pods_gone() -> bool:
        return not await job_pods(client, namespace, "slow")

    await eventually(pods_gone, "the deadline-exceeded job's pods deleted")


async def test_ttl_after_finished_deletes_the_job_and_its_pods(client: Client, namespace: str,
                                                               hollow: HollowCluster) -> None:
    await client.create(job("brief", namespace, ttl_seconds_after_finished=1))
    await wait_condition(client, "brief", namespace, "Complete")

    async def deleted() -> bool:
        try:
            await client.get(batch_pb2.Job, "brief", namespace)
        except NotFound:
            return not await job_pods(client, namespace, "brief")
        return False

    await eventually(deleted, "job brief and its pod deleted by its TTL")


async def test_a_suspended_job_runs_only_once_resumed(client: Client, namespace: str,
                                                      hollow: HollowCluster) -> None:
    await client.create(job("later", namespace, suspend=True))
    suspended = await wait_condition(client, "later", namespace, "Suspended")
    assert not suspended.status.HasField("start_time")
    assert not await job_pods(client, namespace, "later")
    assert batch_printers.job_status(suspended) == "Suspended"

    def resume(j: batch_pb2.Job) -> None:
        j.spec.suspend = False

    await mutate(client, batch_pb2.Job, "later", namespace, resume)
    done = await wait_condition(client, "later", namespace, "Complete")
    resumed = next(c for c in done.status.conditions if c.type == "Suspended")
    assert (resumed.status, resumed.reason) == ("False", "JobResumed")
    assert {"Suspended", "Resumed"} <= await event_reasons(client, namespace)


async def test_a_deleted_running_pod_is_counted_and_replaced(client: Client, namespace: str,
                                                             hollow: HollowCluster) -> None:
    await client.create(job("keep", namespace, exit_code=None))

    async def running() -> core_pb2.Pod | None:
        pods = [p for p in await job_pods(client, namespace, "keep") if p.status.phase == "Running"]
        return pods[0] if pods else None

    victim = await eventually(running, "the job's pod running")
    assert FINALIZER_JOB_TRACKING in victim.metadata.finalizers
    await client.delete(core_pb2.Pod, victim.metadata.name, namespace)

    async def counted() -> batch_pb2.Job | None:
        j = await client.get(batch_pb2.Job, "keep", namespace)
        pods = await job_pods(client, namespace, "keep")
        replaced = [p for p in pods if p.metadata.uid != victim.metadata.uid and p.status.phase == "Running"]
        return j if j.status.failed == 1 and replaced and len(pods) == 1 else None

    await eventually(counted, "the deleted pod counted as failed, gone, and replaced")


async def test_pod_failure_policy_fails_the_job_on_a_matching_exit_code(client: Client, namespace: str,
                                                                        hollow: HollowCluster) -> None:
    j = job("strict", namespace, exit_code=42, run_seconds=0.1)
    rule = j.spec.pod_failure_policy.rules.add(action="FailJob")
    rule.on_exit_codes.operator = "In"
    rule.on_exit_codes.values.extend([42])
    ignore = j.spec.pod_failure_policy.rules.add(action="Ignore")
    ignore.on_pod_conditions.add(type="DisruptionTarget")
    created = await client.create(j)
    assert created.spec.pod_replacement_policy == "Failed"  # the default with a podFailurePolicy
    assert created.spec.pod_failure_policy.rules[1].on_pod_conditions[0].status == "True"  # defaulted
    failed = await wait_condition(client, "strict", namespace, "Failed")
    cond = condition(failed, "Failed")
    assert cond is not None and cond.reason == "PodFailurePolicy"
    pod = (await job_pods(client, namespace, "strict"))[0]
    assert cond.message == (f"Container work for pod {namespace}/{pod.metadata.name} failed with exit code 42 "
                            "matching FailJob rule at index 0")
    assert failed.status.failed == 1  # at once, though backoffLimit is 6


# ---------------------------------------------------------------- CronJobs


class FakeClock:
    """The CronJob controller's clock, turned by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(name="cron_controller")
async def cron_controller_fixture(client: Client, namespace: str
                                  ) -> AsyncIterator[tuple[CronJobController, FakeClock]]:
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "cronjob-controller")
    clock = FakeClock(dt.datetime.now(dt.UTC))
    controller = CronJobController(client, factory, recorder, clock=clock, namespace=namespace)
    recorder.start()
    factory.start()
    task = asyncio.create_task(controller.run())
    yield controller, clock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    factory.stop()
    recorder.stop()


def cron_job(name: str, namespace: str, *, policy: str = "", exit_code: int | None = 0,
             schedule: str = "*/1 * * * *") -> batch_pb2.CronJob:
    cj = batch_pb2.CronJob(api_version="batch/v1", kind="CronJob")
    cj.metadata.name, cj.metadata.namespace = name, namespace
    cj.spec.schedule = schedule
    if policy:
        cj.spec.concurrency_policy = policy
    _pod_template(cj.spec.job_template.spec.template, exit_code, 0.2, "OnFailure")
    return cj


def next_minute(after: dt.datetime) -> dt.datetime:
    return after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


async def fire(controller: CronJobController, clock: FakeClock, at: dt.datetime) -> None:
    clock.now = at
    controller.resync()


async def owned_jobs(client: Client, namespace: str, cj: str) -> list[batch_pb2.Job]:
    jobs = (await client.list(batch_pb2.Job, namespace)).items
    return sorted((j for j in jobs if any(r.kind == "CronJob" and r.name == cj for r in j.metadata.owner_references)
                   and not j.metadata.HasField("deletion_timestamp")), key=lambda j: j.metadata.name)


async def test_a_cronjob_fires_on_schedule(client: Client, namespace: str, hollow: HollowCluster,
                                           cron_controller: tuple[CronJobController, FakeClock]) -> None:
    controller, clock = cron_controller
    cj = await client.create(cron_job("tick", namespace))
    assert (cj.spec.concurrency_policy, cj.spec.suspend, cj.spec.successful_jobs_history_limit,
            cj.spec.failed_jobs_history_limit) == ("Allow", False, 3, 1)
    created = cj.metadata.creation_timestamp.ToDatetime(dt.UTC)
    at = next_minute(created) + dt.timedelta(seconds=5)
    await fire(controller, clock, at - dt.timedelta(seconds=10))  # not yet due: nothing
    await asyncio.sleep(0.5)
    assert not await owned_jobs(client, namespace, "tick")
    await fire(controller, clock, at)

    async def one_job() -> list[batch_pb2.Job] | None:
        jobs = await owned_jobs(client, namespace, "tick")
        return jobs if len(jobs) == 1 else None

    jobs = await eventually(one_job, "the scheduled job")
    scheduled = next_minute(created)
    assert jobs[0].metadata.name == f"tick-{int(scheduled.timestamp()) // 60}" == job_name(cj, scheduled)
    assert jobs[0].metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]

    async def recorded() -> batch_pb2.CronJob | None:
        c = await client.get(batch_pb2.CronJob, "tick", namespace)
        return c if c.status.HasField("last_successful_time") else None

    seen = await eventually(recorded, "the cronjob sees its job complete")  # the Job controller ran it
    assert seen.status.last_schedule_time.ToDatetime(dt.UTC) == scheduled and not seen.status.active
    assert {"SuccessfulCreate", "SawCompletedJob"} <= await event_reasons(client, namespace)


async def test_forbid_skips_a_run_while_one_is_active(client: Client, namespace: str, hollow: HollowCluster,
                                                      cron_controller: tuple[CronJobController, FakeClock]) -> None:
    controller, clock = cron_controller
    cj = await client.create(cron_job("solo", namespace, policy="Forbid", exit_code=None))
    first = next_minute(cj.metadata.creation_timestamp.ToDatetime(dt.UTC))
    await fire(controller, clock, first + dt.timedelta(seconds=1))

    async def active() -> batch_pb2.CronJob | None:
        c = await client.get(batch_pb2.CronJob, "solo", namespace)
        return c if len(c.status.active) == 1 else None

    await eventually(active, "the first run active")
    await fire(controller, clock, first + dt.timedelta(minutes=1, seconds=1))

    async def skipped() -> bool:
        return "JobAlreadyActive" in await event_reasons(client, namespace)

    await eventually(skipped, "the JobAlreadyActive event")
    assert len(await owned_jobs(client, namespace, "solo")) == 1


async def test_replace_deletes_the_running_job_for_the_next(client: Client, namespace: str, hollow: HollowCluster,
                                                            cron_controller: tuple[CronJobController, FakeClock]
                                                            ) -> None:
    controller, clock = cron_controller
    cj = await client.create(cron_job("fresh", namespace, policy="Replace", exit_code=None))
    first = next_minute(cj.metadata.creation_timestamp.ToDatetime(dt.UTC))
    await fire(controller, clock, first + dt.timedelta(seconds=1))
    old = await eventually(lambda: owned_jobs(client, namespace, "fresh"), "the first run")
    await fire(controller, clock, first + dt.timedelta(minutes=1, seconds=1))

    async def replaced() -> batch_pb2.CronJob | None:
        c = await client.get(batch_pb2.CronJob, "fresh", namespace)
        names = [j.metadata.name for j in await owned_jobs(client, namespace, "fresh")]
        ok = [r.name for r in c.status.active] == names and names and names[0] != old[0].metadata.name
        return c if ok else None

    await eventually(replaced, "the second run replacing the first")


async def test_history_limits_keep_the_newest_successes(client: Client, namespace: str, hollow: HollowCluster,
                                                        cron_controller: tuple[CronJobController, FakeClock]
                                                        ) -> None:
    controller, clock = cron_controller
    spec = cron_job("hist", namespace)
    spec.spec.successful_jobs_history_limit = 1
    cj = await client.create(spec)
    first = next_minute(cj.metadata.creation_timestamp.ToDatetime(dt.UTC))
    names = []
    for minute in range(3):
        at = first + dt.timedelta(minutes=minute, seconds=1)
        names.append(job_name(cj, at.replace(second=0)))
        await fire(controller, clock, at)
        await wait_condition(client, names[-1], namespace, "Complete")

    async def pruned() -> bool:
        controller.resync()  # the controller looks again (its clock has not moved)
        return [j.metadata.name for j in await owned_jobs(client, namespace, "hist")] == names[-1:]

    await eventually(pruned, "only the newest successful job kept")


async def test_create_job_from_a_cronjob_runs_it_at_once(client: Client, namespace: str, hollow: HollowCluster,
                                                         apiserver: ApiServer) -> None:
    await client.create(cron_job("nightly", namespace, schedule="@yearly"))
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, "create",
                                                          "job", "now", "--from=cronjob/nightly"],
                                     env={"KCTL_CONFIG": "/nonexistent"})
    assert result.exit_code == 0, result.output
    assert result.output == "job.batch/now created\n"
    done = await wait_condition(client, "now", namespace, "Complete")
    assert done.metadata.annotations[ANNOTATION_CRONJOB_INSTANTIATE] == "manual"
    owner = done.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("CronJob", "nightly", True)
    result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, "create",
                                                          "job", "x", "--image=a", "--from=cronjob/nightly"],
                                     env={"KCTL_CONFIG": "/nonexistent"})
    assert result.exit_code != 0 and "--image and --from are mutually exclusive" in result.output


async def test_kctl_creates_gets_describes_and_applies_jobs_and_cronjobs(client: Client, namespace: str,
                                                                         hollow: HollowCluster,
                                                                         apiserver: ApiServer, tmp_path: Path) -> None:
    runner = CliRunner()

    async def kctl(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, *args],
                                         env={"KCTL_CONFIG": "/nonexistent"})
        assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
        return result.output

    assert await kctl("create", "job", "once", "--image=busybox:1.36", "--", "echo", "hi") == \
        "job.batch/once created\n"
    once = await client.get(batch_pb2.Job, "once", namespace)
    container = once.spec.template.spec.containers[0]
    assert (container.name, list(container.command), once.spec.template.spec.restart_policy) == (
        "once", ["echo", "hi"], "Never")
    assert await kctl("create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=*/5 * * * *") == \
        "cronjob.batch/tick created\n"
    wide = (await kctl("get", "jobs", "-o", "wide")).splitlines()
    assert wide[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS", "IMAGES",
                               "SELECTOR"]
    assert wide[1].split()[0] == "once" and wide[1].split()[-3:] == [
        "once", "busybox:1.36", f"batch.kubernetes.io/controller-uid={once.metadata.uid}"]
    cronjobs = (await kctl("get", "cj")).splitlines()
    assert cronjobs[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    described = await kctl("describe", "job", "once")
    assert "Completion Mode:  NonIndexed" in described and "Backoff Limit:    6" in described
    assert "Pods Statuses:" in described
    described = await kctl("describe", "cronjob", "tick")
    assert "Schedule:                      */5 * * * *" in described
    assert "Concurrency Policy:            Allow" in described
    manifest_file = tmp_path / "job.yaml"
    manifest_file.write_text(f"""apiVersion: batch/v1
kind: Job
metadata:
  name: applied
  namespace: {namespace}
spec:
  completions: 2
  template:
    metadata:
      annotations:
        {ANNOTATION_EXIT_CODE}: "0"
    spec:
      restartPolicy: OnFailure
      containers:
      - name: work
        image: busybox:1.36
""")
    assert await kctl("apply", "-f", str(manifest_file)) == "job.batch/applied created\n"
    done = await wait_condition(client, "applied", namespace, "Complete")
    assert done.status.succeeded == 2
    assert await kctl("apply", "-f", str(manifest_file)) == "job.batch/applied unchanged\n"


async def test_a_suspended_cronjob_does_not_fire(client: Client, namespace: str,
                                                 cron_controller: tuple[CronJobController, FakeClock]) -> None:
    controller, clock = cron_controller
    spec = cron_job("paused", namespace)
    spec.spec.suspend = True
    cj = await client.create(spec)
    await fire(controller, clock, next_minute(cj.metadata.creation_timestamp.ToDatetime(dt.UTC))
               + dt.timedelta(minutes=5))
    await asyncio.sleep(1.0)
    assert not await owned_jobs(client, namespace, "paused")


# ---------------------------------------------------------------- validation, as Kubernetes words it


async def causes_of(client: Client, obj: batch_pb2.Job | batch_pb2.CronJob) -> list[tuple[str, str]]:
    """The (field, message) pairs of the Invalid answer (over gRPC they travel in its message)."""
    with pytest.raises(Invalid) as info:
        await client.create(obj)
    detail = str(info.value).partition(" is invalid: ")[2]
    return [(path, message) for path, _, message in (c.partition(": ") for c in detail.split("; "))]


async def test_bad_jobs_and_cronjobs_are_refused_and_not_stored(client: Client, namespace: str) -> None:
    always = job("forever", namespace)
    always.spec.template.spec.restart_policy = "Always"
    assert await causes_of(client, always) == [
        ("spec.template.spec.restartPolicy", 'Required value: valid values: "OnFailure", "Never"')]
    bad = cron_job("bad", namespace, schedule="61 * * * *")
    bad.spec.time_zone = "Mars/Olympus"
    bad.spec.concurrency_policy = "Sometimes"
    assert await causes_of(client, bad) == [
        ("spec.schedule", 'Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'),
        ("spec.timeZone", 'Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus'),
        ("spec.concurrencyPolicy", 'Unsupported value: "Sometimes": supported values: "Allow", "Forbid", '
                                   '"Replace"')]
    indexed = job("idx", namespace, completion_mode="Indexed")
    indexed.spec.ClearField("completions")
    indexed.spec.pod_failure_policy.rules.add(action="FailJob")
    assert await causes_of(client, indexed) == [
        ("spec.completions", "Required value: when completion mode is Indexed"),
        ("spec.podFailurePolicy.rules[0]", "Invalid value: specifying one of OnExitCodes and OnPodConditions is "
                                           "required")]
    assert not (await client.list(batch_pb2.Job, namespace)).items
    assert not (await client.list(batch_pb2.CronJob, namespace)).items


async def test_a_jobs_template_is_immutable(client: Client, namespace: str) -> None:
    await client.create(job("fixed", namespace, suspend=True))

    def change_image(j: batch_pb2.Job) -> None:
        j.spec.template.spec.containers[0].image = "busybox:1.37"

    with pytest.raises(Invalid, match=r"spec\.template: Invalid value: .*field is immutable"):
        await mutate(client, batch_pb2.Job, "fixed", namespace, change_image)


def test_schedules_are_read_as_kubernetes_reads_them() -> None:
    for good in ("*/1 * * * *", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "0 9 * JAN-MAR mon-fri",
                 "5/15 0-6 1,15 * ?"):
        cron.parse(good)
    for bad, message in (("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
                         ("@every 5m", "unrecognized descriptor: @every 5m"),
                         ("* * * * 7", "end of range (7) above maximum (6): 7"),
                         ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax')):
        with pytest.raises(cron.ScheduleError) as info:
            cron.parse(bad)
        assert str(info.value) == message
    berlin = dt.timezone(dt.timedelta(hours=1))
    daily = cron.parse("@daily")
    assert daily.next_after(dt.datetime(2024, 1, 1, 5, tzinfo=berlin)) == dt.datetime(2024, 1, 2, tzinfo=berlin)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert cron.parse("*/5 * * * *").most_recent(start, start + dt.timedelta(minutes=17)) == (
        start + dt.timedelta(minutes=15), 3)


def test_completed_indexes_are_compressed_as_kubernetes_writes_them() -> None:
    assert jobutil.format_indexes([7, 1, 3, 4, 5]) == "1,3-5,7"
    assert jobutil.format_indexes([0, 1]) == "0,1"
    assert jobutil.parse_indexes("1,3-5,7", 6) == {1, 3, 4, 5}
    assert [jobutil.backoff_delay(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 320]
    assert jobutil.backoff_delay(30) == 360  # capped at six minutes


def test_kubectl_create_bodies_decode() -> None:
    """kubectl's protobuf body for `create cronjob` decodes into a CronJob with Kubernetes' field numbers."""
    body = wire.encode_dict({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
                             "spec": {"schedule": "*/1 * * * *", "startingDeadlineSeconds": 30,
                                      "jobTemplate": {"metadata": {"name": "tick"}, "spec": {
                                          "backoffLimit": 2, "template": {"spec": {
                                              "containers": [{"name": "tick", "image": "busybox"}],
                                              "restartPolicy": "OnFailure"}}}}}})
    cj = manifest.from_dict(wire.decode(body))
    assert isinstance(cj, batch_pb2.CronJob)
    assert (cj.spec.schedule, cj.spec.starting_deadline_seconds, cj.spec.job_template.spec.backoff_limit) == (
        "*/1 * * * *", 30, 2)


# ---------------------------------------------------------------- real kubectl over HTTP




async def test_kubectl_creates_and_lists_jobs_and_cronjobs(http_url: str, namespace: str, tmp_path: Path,
                                                           client: Client) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl(http_url, tmp_path, "-n", namespace, *args)

    made = await asyncio.to_thread(run, "create", "job", "hello", "--image=busybox:1.36", "--", "echo", "hi")
    assert made.returncode == 0 and made.stdout == "job.batch/hello created\n", made.stderr
    made = await asyncio.to_thread(run, "create", "cronjob", "tick", "--image=busybox:1.36",
                                   "--schedule=*/1 * * * *")
    assert made.returncode == 0 and made.stdout == "cronjob.batch/tick created\n", made.stderr
    hello = await client.get(batch_pb2.Job, "hello", namespace)
    assert list(hello.spec.template.spec.containers[0].command) == ["echo", "hi"]
    listed = await asyncio.to_thread(run, "get", "jobs,cronjobs")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert lines[1].split()[:3] == ["job.batch/hello", "Running", "0/1"]
    cron_header = next(i for i, line in enumerate(lines) if line.startswith("NAME") and i > 0)
    assert lines[cron_header].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE",
                                          "AGE"]
    assert lines[cron_header + 1].split()[:8] == ["cronjob.batch/tick", "*/1", "*", "*", "*", "*", "<none>", "False"]
    bad = await asyncio.to_thread(run, "create", "cronjob", "oops", "--image=busybox", "--schedule=bad")
    assert bad.returncode != 0
    # kubectl's own wording around the apiserver's 422, as against any Kubernetes.
    assert bad.stderr.strip() == ('error: failed to create cronjob: CronJob "oops" is invalid: spec.schedule: '
                                  'Invalid value: "bad": expected exactly 5 fields, found 1: [bad]')
