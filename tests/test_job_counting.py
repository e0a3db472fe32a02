"""A Job of many quick pods runs exactly as many pods as it has completions, and counts each once.

Given a controller manager and hollow nodes whose pods exit 0 the moment they
run, a Job of 100 completions, 10 at a time, finishes with 100 pods, all
Succeeded, and `succeeded: 100`. Pods finishing while the Job controller is
mid-sync (its pod list older than its bookkeeping of released finalizers, its
successes not yet moved out of uncountedTerminatedPods) once made it start
extra pods, delete them again, and count some pods twice (bench.workloads
found it: 102-106 pods, succeeded 104-105).
"""

from __future__ import annotations

from collections import Counter

from bench.hollow_kubelet import ANNOTATION_EXIT_CODE, HollowCluster
from client import Client
from proto import batch_pb2, core_pb2
from tests.controllers_support import controller_manager_fixture as controller_manager_fixture
from tests.controllers_support import eventually
from tests.controllers_support import hollow_fixture as hollow_fixture


async def test_a_hundred_quick_completions_run_a_hundred_pods(client: Client, namespace: str,
                                                              hollow: HollowCluster) -> None:
    job = batch_pb2.Job(api_version="batch/v1", kind="Job")
    job.metadata.name, job.metadata.namespace = "quick", namespace
    job.spec.completions, job.spec.parallelism = 100, 10
    job.spec.template.spec.restart_policy = "Never"
    job.spec.template.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
    job.spec.template.metadata.annotations[ANNOTATION_EXIT_CODE] = "0"
    await client.create(job)

    async def complete() -> batch_pb2.Job | None:
        got = await client.get(batch_pb2.Job, "quick", namespace)
        return got if any(c.type == "Complete" and c.status == "True" for c in got.status.conditions) else None

    done = await eventually(complete, "the Job Complete", timeout=90)
    assert (done.status.succeeded, done.status.failed, done.status.active) == (100, 0, 0)
    pods = (await client.list(core_pb2.Pod, namespace)).items
    assert Counter((p.status.phase, p.metadata.HasField("deletion_timestamp")) for p in pods) == {
        ("Succeeded", False): 100}
