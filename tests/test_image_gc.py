"""Issue 17: image garbage collection on a node, against a real containerd.

Given a node (containerd + kubelet) running a pod on busybox and three more
images arriving one minute apart, when the image filesystem is over the high
threshold the kubelet's image GC removes unused images least recently used
first -- the oldest two, exactly enough to get back to the low threshold --
and never busybox (a running pod's) or the pinned pause image; an image
younger than the minimum age is kept even when that leaves too little freed,
which is a FreeDiskSpaceFailed event. Thresholds are validated. A kubelet whose
--eviction-hard threshold is crossed reports DiskPressure=True. The image
filesystem's figures are the test's (a real disk is never that full); the
images, their removal and the in-use check are containerd's. Needs root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from client import Client
from nodeagent.kubelet.diskpressure import Threshold, disk_pressure, parse_eviction_hard, shortfall
from nodeagent.kubelet.imagegc import ImageGCManager
from nodeagent.kubelet.main import parse_args
from nodeagent.kubelet.runtime import Runtime
from proto import core_pb2
from proto.errors import NotFound
from provision.images.oci import Layer, busybox_layer, import_image, make_image
from provision.localnode import LocalNode
from tests.kubelet_support import BUSYBOX, make_pod, node, wait_pod  # noqa: F401 - node: the fixture

CAPACITY = 10**9
# This node's kubelet keeps less than all of its disk free: DiskPressure, always (the condition's test).
KUBELET_SETTINGS = {"eviction_hard": {"nodefs.available": "100%"}}


class Disk:
    """The image filesystem's figures: capacity and what is available."""

    def __init__(self) -> None:
        self.available = CAPACITY

    async def __call__(self) -> tuple[int, int]:
        return CAPACITY, self.available


def small_image(text: str) -> bytes:
    layer = Layer()
    layer.add_file("data.txt", text.encode() * 1000, 0o644)
    return make_image([busybox_layer(), layer.tar()], {"Cmd": ["sh"]}).archive(f"localhost/{text}:1")


async def test_unused_images_go_oldest_first_and_in_use_ones_never(client: Client, namespace: str,
                                                                   node: LocalNode) -> None:  # noqa: F811
    sleeper = core_pb2.Container(name="c", image=BUSYBOX, command=["sleep", "3600"])
    user = make_pod("user", node, sleeper, grace=0)
    # This node is always under DiskPressure (KUBELET_SETTINGS): only a critical pod is admitted and kept.
    user.spec.priority_class_name = "system-node-critical"
    await client.create(user, namespace=namespace)
    await wait_pod(client, "user", namespace, lambda p: p.status.phase == "Running", what="user Running")

    runtime = Runtime(str(node.runtime.socket))
    now = [1_000_000.0]
    disk, events = Disk(), []
    gc = ImageGCManager(runtime, high_threshold=50, low_threshold=50, min_age=90, fs_stats=disk,
                        record=lambda *event: events.append(event), clock=lambda: now[0])
    try:
        for name in ("gc-old", "gc-middle", "gc-new"):
            import_image(small_image(name), address=str(node.runtime.socket))
            await gc.detect_images()
            now[0] += 60
        now[0] += 60
        images = {tag: i for i in await runtime.list_images() for tag in i.repo_tags}
        old, middle = images["localhost/gc-old:1"], images["localhost/gc-middle:1"]
        # Under the high threshold (49% used): nothing goes.
        disk.available = CAPACITY * 51 // 100
        assert await gc.garbage_collect() == 0
        # Just over 50% used, and getting back to 50% takes the oldest image's bytes and one more:
        # the two least recently used go.
        disk.available = CAPACITY // 2 - (old.size + 1)
        assert await gc.garbage_collect() == old.size + middle.size
        left = {tag for i in await runtime.list_images() for tag in i.repo_tags}
        assert "localhost/gc-old:1" not in left and "localhost/gc-middle:1" not in left
        assert "localhost/gc-new:1" in left
        assert BUSYBOX in left  # the running pod's
        assert any("pause" in tag for tag in left)  # the sandbox image, pinned

        # Over the high threshold with only a young image unused: it stays, and the node hears why.
        now[0] -= 150  # gc-new is now 30 s old, under the 90 s minimum age
        disk.available = CAPACITY * 15 // 100
        assert await gc.garbage_collect() == 0
        assert "localhost/gc-new:1" in {tag for i in await runtime.list_images() for tag in i.repo_tags}
        assert events and events[-1][:2] == ("Warning", "FreeDiskSpaceFailed")
    finally:
        await runtime.close()


def test_thresholds_are_checked() -> None:
    async def stats() -> tuple[int, int]:
        return 1, 1
    with pytest.raises(ValueError, match="low \\(90\\) <= high \\(80\\)"):
        ImageGCManager(None, high_threshold=80, low_threshold=90, min_age=0, fs_stats=stats)  # type: ignore[arg-type]


async def test_a_crossed_eviction_threshold_is_disk_pressure(client: Client, node: LocalNode) -> None:  # noqa: F811
    async def pressure() -> core_pb2.NodeCondition | None:
        try:
            found = await client.get(core_pb2.Node, node.name)
        except NotFound:
            return None  # not registered yet
        return next((c for c in found.status.conditions if c.type == "DiskPressure" and c.status == "True"), None)

    from tests.kubelet_support import eventually
    condition = await eventually(pressure, what="DiskPressure=True")
    assert condition.reason == "KubeletHasDiskPressure"
    assert condition.message == "kubelet has disk pressure: nodefs.available<100%"


def test_eviction_thresholds_parse_and_compare(tmp_path: Path) -> None:
    assert parse_args(["--node-name", "n", "--node-ip", "10.0.0.1", "--eviction-hard",
                       "nodefs.available<5%,imagefs.available<1Gi,memory.available<100Mi"]).eviction_hard == {
        "nodefs.available": "5%", "imagefs.available": "1Gi", "memory.available": "100Mi"}
    assert parse_eviction_hard({"memory.available": "100Mi", "imagefs.available": "1Gi"}) == [
        Threshold("imagefs.available", "1Gi")]
    with pytest.raises(ValueError, match=r"nodefs\.available: 'lots' is neither a percentage nor a quantity"):
        parse_eviction_hard({"nodefs.available": "lots"})
    with pytest.raises(SystemExit):
        parse_args(["--node-name", "n", "--node-ip", "10.0.0.1", "--eviction-hard", "nodefs.available=5%"])
    here = str(tmp_path)
    assert disk_pressure([Threshold("nodefs.available", "0%")], nodefs=here, imagefs=here) == ""
    assert disk_pressure([Threshold("imagefs.available", "1000Pi")], nodefs=here, imagefs=here) == \
        "imagefs.available<1000Pi"
    assert shortfall([Threshold("nodefs.available", "0%")], nodefs=here, imagefs=here) <= 0
    assert shortfall([Threshold("imagefs.available", "1000Pi")], nodefs=here, imagefs=here) > 10**18
