"""Claims on a real node: what a pod writes to its claim outlives its container and the pod itself.

Given one real node (containerd, runc, kubelet) and the storage controllers
running in the test: a claim of a local-path class (WaitForFirstConsumer) whose
node has been chosen (as the scheduler's VolumeBinding annotates it; the pods
here are bound directly) is provisioned under the class's nodePath; a pod whose
first container run fails after writing a file is restarted and finds it; a new
pod reads what the first wrote, and a read-only mount of the claim refuses
writes; a pod whose claim does not exist waits in ContainerCreating with a
FailedMount event naming the claim; deleting the claim once its pods are gone
deletes the volume (reclaim policy Delete) and the kubelet removes its directory.
"""

from __future__ import annotations

import contextlib

from client import Client
from proto import core_pb2, storage_pb2
from proto.errors import NotFound
from proto.wellknown import ANNOTATION_SELECTED_NODE, LOCAL_PATH_PROVISIONER
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, eventually, make_pod, node, pod_events, wait_pod
from tests.test_storage_api import pvc, storage_class
from tests.test_storage_binding import controllers

__all__ = ["controllers", "node"]  # fixtures, imported so pytest finds them here


def claim_pod(name: str, node: LocalNode, script: str, *, restart_policy: str = "Never",
              read_only: bool = False) -> core_pb2.Pod:
    app = busybox("app", "sh", "-c", script)
    app.volume_mounts.add(name="data", mount_path="/data")
    pod = make_pod(name, node, app, restart_policy=restart_policy, grace=1)
    source = pod.spec.volumes.add(name="data").persistent_volume_claim
    source.claim_name, source.read_only = "data", read_only
    return pod


def finished(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


async def test_data_on_a_claim_outlives_containers_and_pods(client: Client, namespace: str, node: LocalNode,
                                                            controllers: None) -> None:
    root = node.base / "local-path"
    local = f"{namespace}-local"
    await client.create(storage_class(local, provisioner=LOCAL_PATH_PROVISIONER,
                                      volumeBindingMode="WaitForFirstConsumer", parameters={"nodePath": str(root)}))
    try:
        # A pod whose claim is missing waits, and says which claim.
        await client.create(claim_pod("early", node, "until [ -f /data/hello ]; do sleep 0.2; done"),
                            namespace=namespace)

        async def says_missing() -> bool:
            return ("Warning", "FailedMount", 'MountVolume.SetUp failed for volume "data" : persistentvolumeclaim '
                                               '"data" not found') in await pod_events(client, "early", namespace)

        await eventually(says_missing, 20, what="FailedMount naming the claim")
        claim = pvc("data", namespace, "64Mi", storageClassName=local)
        claim.metadata.annotations[ANNOTATION_SELECTED_NODE] = node.name  # the scheduler's choice
        await client.create(claim)

        # The first run writes, fails and is restarted: the restarted container finds its file.
        writer = claim_pod("writer", node, "if [ -f /data/once ]; then cat /data/once > /data/hello; exit 0; fi; "
                                           "echo hello > /data/once; exit 1", restart_policy="OnFailure")
        await client.create(writer, namespace=namespace)
        done = await wait_pod(client, "writer", namespace, finished, timeout=60)
        assert done.status.phase == "Succeeded"
        assert done.status.container_statuses[0].restart_count >= 1
        bound = await client.get(core_pb2.PersistentVolumeClaim, "data", namespace)
        directory = root / bound.spec.volume_name
        assert (directory / "hello").read_text() == "hello\n"

        # A new pod reads it back; a read-only mount of the claim may not write.
        reader = claim_pod("reader", node, 'test "$(cat /data/hello)" = hello && ! touch /data/other',
                           read_only=True)
        await client.create(reader, namespace=namespace)
        read = await wait_pod(client, "reader", namespace, finished, timeout=60)
        assert read.status.phase == "Succeeded"
        assert not (directory / "other").exists()
        early = await wait_pod(client, "early", namespace, finished, timeout=60)
        assert early.status.phase == "Succeeded"  # it started once the claim was there

        # Deleted with its pods gone, the claim takes its volume and the directory with it.
        for name in ("early", "writer", "reader"):
            await client.delete(core_pb2.Pod, name, namespace)
        await client.delete(core_pb2.PersistentVolumeClaim, "data", namespace)

        async def removed() -> bool:
            return not directory.exists()

        await eventually(removed, 60, what=f"{directory} to be removed")
        with contextlib.suppress(NotFound):
            await client.get(core_pb2.PersistentVolume, bound.spec.volume_name)
            raise AssertionError("the volume should be deleted")
    finally:
        with contextlib.suppress(NotFound):
            await client.delete(storage_pb2.StorageClass, local)

