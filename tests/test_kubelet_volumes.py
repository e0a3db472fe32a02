"""ConfigMap and Secret volumes follow their objects: given a running pod, when the object changes,
then its files change within the kubelet's sync period, all at once; subPath mounts keep theirs.

The first tests drive the atomic writer alone on a temporary directory (the
..data symlink swap, and a reader racing the writer never seeing a partial
file); the last runs a real pod on a real node (containerd, runc, kubelet).
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from client import Client
from nodeagent.kubelet import atomic_writer
from nodeagent.kubelet import status as podstatus
from nodeagent.kubelet.atomic_writer import FileProjection, ProjectionError
from nodeagent.kubelet.runtime import LABEL_POD_UID, Runtime
from nodeagent.kubelet.volumes import (
    MountError,
    SetUpError,
    Volumes,
    VolumesNotReady,
    emptydir,
    hostpath,
    mounts,
    projection,
    subpath,
)
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import (
    allow_privileged_pods,
    busybox,
    eventually,
    make_pod,
    node,
    pod_events,
    wait_pod,
)
from tests.test_validation_support import container, errors_of, pod

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here


def files(**data: str) -> dict[str, FileProjection]:
    return {k.replace("__", "/"): FileProjection(v.encode(), 0o644) for k, v in data.items()}


def test_a_projection_is_a_data_symlink_to_one_version_with_a_link_per_name(tmp_path: Path) -> None:
    assert atomic_writer.write(tmp_path, files(mode="fast", conf__app_ini="[app]\n")) is True
    data = tmp_path / "..data"
    assert data.is_symlink() and os.readlink(data).startswith("..")
    assert os.readlink(tmp_path / "mode") == "..data/mode"
    assert os.readlink(tmp_path / "conf") == "..data/conf"
    assert (tmp_path / "conf" / "app_ini").read_text() == "[app]\n"
    assert (tmp_path / "mode").stat().st_mode & 0o777 == 0o644
    # The same payload again changes nothing (not even the version directory).
    version = os.readlink(data)
    assert atomic_writer.write(tmp_path, files(mode="fast", conf__app_ini="[app]\n")) is False
    assert os.readlink(data) == version


def test_an_update_swaps_the_version_and_drops_removed_names(tmp_path: Path) -> None:
    atomic_writer.write(tmp_path, files(mode="fast", old="x"))
    first = os.readlink(tmp_path / "..data")
    assert atomic_writer.write(tmp_path, files(mode="slow", new="y")) is True
    assert (tmp_path / "mode").read_text() == "slow" and (tmp_path / "new").read_text() == "y"
    assert not (tmp_path / "old").exists() and not (tmp_path / "old").is_symlink()
    assert not (tmp_path / first).exists()  # the old version is removed after the swap
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", os.readlink(tmp_path / "..data"),
                                                                "mode", "new"])
    # A mode change alone is a change too.
    assert atomic_writer.write(tmp_path, {"mode": FileProjection(b"slow", 0o400), "new": FileProjection(b"y", 0o644)})
    assert (tmp_path / "mode").stat().st_mode & 0o777 == 0o400


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape", "a/../../b", "..data", "..hidden", ""])
def test_unsafe_item_paths_are_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ProjectionError):
        atomic_writer.write(tmp_path / "vol", {bad: FileProjection(b"x", 0o644)})
    assert not (tmp_path / "vol").exists()


def test_a_reader_racing_the_writer_never_sees_a_partial_or_mixed_version(tmp_path: Path) -> None:
    size = 256 * 1024  # big enough that an in-place write would be seen half-done
    versions = [files(a=c * size, b=c * size) for c in "xyz"]
    atomic_writer.write(tmp_path, versions[0])
    stop = threading.Event()
    bad: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            # Resolve ..data once, as a reader wanting a consistent set of files does.
            version = tmp_path / os.readlink(tmp_path / "..data")
            try:
                a, b = (version / "a").read_text(), (version / "b").read_text()
                whole = (tmp_path / "a").read_text()
            except FileNotFoundError:
                continue  # the version was retired between resolving and opening: read again
            if len(a) != size or len(set(a)) != 1 or a != b:
                bad.append(f"a={a[:1]}x{len(a)} b={b[:1]}x{len(b)}")
            # And through the user-visible name: always one whole version of the file.
            if len(whole) != size or len(set(whole)) != 1:
                bad.append(f"visible a={len(whole)} bytes, {len(set(whole))} kinds")
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < deadline:
            i += 1
            atomic_writer.write(tmp_path, versions[i % 3])
    finally:
        stop.set()
        thread.join()
    assert reads > 10 and i > 10
    assert bad == []


async def test_running_pod_sees_config_map_and_secret_updates_but_not_in_sub_path(
        client: Client, namespace: str, node: LocalNode) -> None:
    config = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    config.metadata.name = "settings"
    config.data.update({"mode": "fast", "motd": "welcome"})
    await client.create(config, namespace=namespace)
    secret = core_pb2.Secret(api_version="v1", kind="Secret")
    secret.metadata.name = "creds"
    secret.data["password"] = b"hunter2"
    await client.create(secret, namespace=namespace)

    app = busybox("app", "sleep", "3600")
    app.volume_mounts.add(name="conf", mount_path="/etc/app")
    app.volume_mounts.add(name="creds", mount_path="/etc/creds")
    app.volume_mounts.add(name="conf", mount_path="/etc/motd", sub_path="motd")
    pod = make_pod("reader", node, app, grace=1)
    pod.spec.volumes.add(name="conf").config_map.name = "settings"
    pod.spec.volumes.add(name="creds").secret.secret_name = "creds"
    created = await client.create(pod, namespace=namespace)
    await wait_pod(client, "reader", namespace, lambda p: p.status.phase == "Running", what="reader Running")
    # The subPath bind was released from the node once the container started (the container keeps its own).
    subpaths = (Path(node.kubelet_config().root_dir) / "pods" / created.metadata.uid / "volume-subpaths").resolve()
    assert not [m for m in mounts.mount_points() if m.startswith(f"{subpaths}/")]

    async def read() -> str:
        script = "cat /etc/app/mode /etc/app/motd /etc/creds/password /etc/motd; ls /etc/app"
        reply = await client.exec(namespace, "reader", ["sh", "-c", script])
        return reply.stdout.decode()
    assert await read() == "fastwelcomehunter2welcome" + "mode\nmotd\n"

    config = await client.get(core_pb2.ConfigMap, "settings", namespace)
    del config.data["mode"]
    config.data.update({"motd": "goodbye", "level": "3"})
    await client.update(config)
    secret = await client.get(core_pb2.Secret, "creds", namespace)
    secret.data["password"] = b"correct horse"
    await client.update(secret)
    changed_at = time.monotonic()

    # The kubelet's sync period is 2 s in these tests: both volumes follow within it (plus a sync).
    expected = "3goodbyecorrect horsewelcome" + "level\nmotd\n"

    async def updated() -> bool:
        script = "cat /etc/app/level /etc/app/motd /etc/creds/password /etc/motd; ls /etc/app"
        reply = await client.exec(namespace, "reader", ["sh", "-c", script])
        return reply.stdout.decode() == expected
    await eventually(updated, 10, interval=0.3, what="the volumes updated in the running container")
    assert time.monotonic() - changed_at < 5
    # The subPath mount kept the file it was started with (/etc/motd above says "welcome").
    gone = await client.exec(namespace, "reader", ["sh", "-c", "test -e /etc/app/mode; echo $?"])
    assert gone.stdout == b"1\n"


# ---------------------------------------------------------------- the volume types, piece by piece


@pytest.mark.parametrize(("type_", "make", "message"), [
    ("Directory", None, "hostPath type check failed: {path} is not a directory"),
    ("Directory", "file", "hostPath type check failed: {path} is not a directory"),
    ("File", None, "hostPath type check failed: {path} is not a file"),
    ("File", "dir", "hostPath type check failed: {path} is not a file"),
    ("Socket", "file", "hostPath type check failed: {path} is not a socket file"),
    ("CharDevice", "file", "hostPath type check failed: {path} is not a character device"),
    ("BlockDevice", "dir", "hostPath type check failed: {path} is not a block device"),
    ("DirectoryOrCreate", "file", "hostPath type check failed: {path} is not a directory"),
    ("FileOrCreate", "dir", "hostPath type check failed: {path} is not a file"),
    ("Sideways", None, "Sideways is an invalid volume type"),
])
def test_a_host_path_that_is_not_its_type_fails_with_kubernetes_words(
        tmp_path: Path, type_: str, make: str | None, message: str) -> None:
    path = tmp_path / "x"
    if make == "file":
        path.write_text("")
    elif make == "dir":
        path.mkdir()
    with pytest.raises(SetUpError) as caught:
        hostpath.set_up(path, type_)
    assert str(caught.value) == message.format(path=path)


def test_host_path_or_create_types_make_what_is_missing_with_kubernetes_modes(tmp_path: Path) -> None:
    hostpath.set_up(tmp_path / "a" / "b", "DirectoryOrCreate")
    assert (tmp_path / "a" / "b").is_dir() and stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755
    hostpath.set_up(tmp_path / "f", "FileOrCreate")
    assert (tmp_path / "f").is_file() and stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    hostpath.set_up(tmp_path / "f", "File")  # what exists and fits passes as it is
    hostpath.set_up(Path("/dev/null"), "CharDevice")
    hostpath.set_up(tmp_path / "nowhere", "")  # no type: no check
    # FileOrCreate makes the file only: a missing parent directory fails the volume.
    with pytest.raises(SetUpError, match=r"^open .*/no/f: no such file or directory$"):
        hostpath.set_up(tmp_path / "no" / "f", "FileOrCreate")
    assert not (tmp_path / "no").exists()


def _source(kind: str, *items: tuple[str, str, int | None], default_mode: int = 0o644,
            optional: bool = False) -> projection.Source:
    keys = []
    for key, path, mode in items:
        item = core_pb2.KeyToPath(key=key, path=path)
        if mode is not None:
            item.mode = mode
        keys.append(item)
    return projection.Source(kind=kind, name="x", items=keys, default_mode=default_mode, optional=optional)


def test_a_projection_holds_every_key_or_the_listed_items_with_their_modes() -> None:
    data = {"a": b"1", "b": b"2"}
    every = projection.payload(_source("secret", default_mode=0o400), data)
    assert every == {"a": FileProjection(b"1", 0o400), "b": FileProjection(b"2", 0o400)}
    listed = projection.payload(_source("configmap", ("b", "conf/b.txt", 0o600), ("a", "a", None)), data)
    assert listed == {"conf/b.txt": FileProjection(b"2", 0o600), "a": FileProjection(b"1", 0o644)}
    # A missing key fails the volume, in the plugin's own words, unless the volume is optional.
    with pytest.raises(SetUpError, match=r"^configmap references non-existent config key: c$"):
        projection.payload(_source("configmap", ("c", "c", None)), data)
    with pytest.raises(SetUpError, match=r"^references non-existent secret key: c$"):
        projection.payload(_source("secret", ("c", "c", None)), data)
    assert projection.payload(_source("secret", ("c", "c", None), ("a", "a", None), optional=True), data) == {
        "a": FileProjection(b"1", 0o644)}


def test_an_empty_dir_counts_its_blocks_against_its_size_limit(tmp_path: Path) -> None:
    source = core_pb2.EmptyDirVolumeSource(size_limit="1Mi")
    (tmp_path / "small").write_bytes(b"x" * 100_000)
    assert 100_000 <= emptydir.usage(tmp_path) < 200_000
    assert emptydir.exceeded("cache", source, tmp_path) is None
    (tmp_path / "big").write_bytes(b"x" * 2_000_000)
    os.link(tmp_path / "big", tmp_path / "big-again")  # a hard link is counted once, as du does
    assert emptydir.usage(tmp_path) < 2_300_000
    assert emptydir.exceeded("cache", source, tmp_path) == 'Usage of EmptyDir volume "cache" exceeds the limit "1Mi". '
    assert emptydir.exceeded("cache", core_pb2.EmptyDirVolumeSource(), tmp_path) is None  # no limit, no eviction


def test_the_mount_timeout_message_names_the_unmounted_volumes() -> None:
    err = VolumesNotReady([MountError("data", 'configmap "app" not found'), MountError("cache", "x")],
                          ["data", "scratch", "cache"])
    assert str(err.failures[0]) == 'MountVolume.SetUp failed for volume "data" : configmap "app" not found'
    assert err.timeout_message() == ("Unable to attach or mount volumes: unmounted volumes=[cache data], "
                                     "unattached volumes=[data scratch cache]: timed out waiting for the condition")


def test_volume_set_up_is_retried_with_back_off_and_times_out_once_a_window() -> None:
    volumes = Volumes(None, "/nonexistent", backoff_initial=0.5, backoff_max=2.0, mount_timeout=4.0)  # type: ignore[arg-type]
    assert volumes.retry_in("u", now=0.0) == 0.0
    delays = [volumes.set_up_failed("u", now=t) for t in (0.0, 0.5, 1.5, 3.5, 5.5)]
    assert delays == [(0.5, False), (1.0, False), (2.0, False), (2.0, False), (2.0, True)]
    assert volumes.retry_in("u", now=6.0) == pytest.approx(1.5)


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_a_sub_path_is_bound_inside_its_volume_and_never_through_a_symlink_out(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "conf").mkdir()
    (volume / "conf" / "app.ini").write_text("[app]\n")
    (volume / "evil").symlink_to("/etc")
    (volume / "inside").symlink_to("conf")  # a link that stays in the volume is fine
    target = tmp_path / "subpaths" / "0"
    try:
        subpath.prepare(volume, "inside/app.ini", target, create=False)
        assert target.read_text() == "[app]\n"
        subpath.prepare(volume, "made/deeper", target, create=True)  # re-bound; missing directories made
        assert (volume / "made" / "deeper").is_dir() and target.is_dir()
        for bad in ("evil", "evil/passwd", "../vol/conf", "/etc"):
            with pytest.raises(subpath.SubPathError):
                subpath.prepare(volume, bad, tmp_path / "subpaths" / "1", create=True)
        with pytest.raises(subpath.SubPathError):
            subpath.prepare(volume, "missing", tmp_path / "subpaths" / "2", create=False)
    finally:
        mounts.unmount_all_under(tmp_path)
    assert not mounts.unmount_all_under(tmp_path)


def test_an_evicted_status_is_failed_with_the_reason_and_a_disruption_target() -> None:
    status = core_pb2.PodStatus(phase="Running")
    status.conditions.add(type="Ready", status="True")
    now = Timestamp(seconds=100)
    out = podstatus.evicted(status, "Usage of EmptyDir volume \"c\" exceeds the limit \"1Mi\". ", now=now)
    assert (out.phase, out.reason) == ("Failed", "Evicted")
    assert out.message.startswith("Usage of EmptyDir volume")
    conditions = {c.type: c for c in out.conditions}
    assert conditions["Ready"].status == "False"
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["DisruptionTarget"].reason == "TerminationByKubelet"


def test_the_apiserver_refuses_volume_fields_the_kubelet_could_not_honour() -> None:
    errors = errors_of(pod(container(), volumes=[
        {"name": "a", "nfs": {"server": "", "path": "exports"}},
        {"name": "b", "hostPath": {"path": "/srv/../etc", "type": "Folder"}},
        {"name": "c", "emptyDir": {"sizeLimit": "-1Mi"}},
        {"name": "d", "secret": {"secretName": "s", "defaultMode": 0o1777, "items": [{"key": "k", "path": "../k"}]}},
    ]))
    assert errors == [
        ("spec.volumes[0].nfs.server", "Required value"),
        ("spec.volumes[0].nfs.path", 'Invalid value: "exports": must be an absolute path'),
        ("spec.volumes[1].hostPath.path", "Invalid value: \"/srv/../etc\": must not contain '..'"),
        ("spec.volumes[1].hostPath.type", 'Unsupported value: "Folder": supported values: "", "BlockDevice", '
                                          '"CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", '
                                          '"Socket"'),
        ("spec.volumes[2].emptyDir.sizeLimit", "Forbidden: SizeLimit field must be a valid resource quantity"),
        ("spec.volumes[3].secret.items[0].path", "Invalid value: \"../k\": must not contain '..'"),
        ("spec.volumes[3].secret.defaultMode",
         "Invalid value: 1023: must be a number between 0 and 0777 (octal), both inclusive"),
    ]
    # An nfs volume is a volume type of its own (not an emptyDir after defaults).
    assert errors_of(pod(container(), volumes=[{"name": "a", "nfs": {"server": "nfs.local", "path": "/x"}}])) == []


# ---------------------------------------------------------------- stories on a real node


async def _containers_of(node: LocalNode, uid: str) -> list[object]:
    runtime = Runtime(str(node.runtime.socket))
    try:
        return list(await runtime.list_containers({LABEL_POD_UID: uid}))
    finally:
        await runtime.close()


def _waiting(pod: core_pb2.Pod) -> list[str]:
    return [s.state.waiting.reason for s in pod.status.container_statuses]


async def _event(client: Client, pod: str, namespace: str, reason: str, message: str, timeout: float = 20) -> None:
    async def seen() -> bool:
        return any(r == reason and m == message for _, r, m in await pod_events(client, pod, namespace))
    await eventually(seen, timeout, what=f"event {reason}: {message}")


async def test_a_pod_whose_volumes_this_node_cannot_provide_stays_pending_and_says_why(
        client: Client, namespace: str, node: LocalNode) -> None:
    app = busybox("app", "sh", "-c", "echo written > /data/file; sleep 3600")
    app.volume_mounts.add(name="data", mount_path="/data")
    app.volume_mounts.add(name="share", mount_path="/share")
    pod = make_pod("keeper", node, app, grace=1)
    pod.spec.volumes.add(name="data").persistent_volume_claim.claim_name = "keeper-data"
    # Loopback: no NFS server answers there, and no other address is ever contacted.
    nfs = pod.spec.volumes.add(name="share").nfs
    nfs.server, nfs.path = "127.0.0.1", "/exports/share"
    created = await client.create(pod, namespace=namespace)

    await _event(client, "keeper", namespace, "FailedMount",
                 'MountVolume.SetUp failed for volume "data" : persistentvolumeclaim "keeper-data" not found')
    # The NFS mount fails as the node's mount says (this kernel has no NFS client), in Kubernetes' words.
    share = node.base / "kubelet" / "pods" / created.metadata.uid / "volumes" / "nfs" / "share"
    prefix = ('MountVolume.SetUp failed for volume "share" : mount failed: exit status 32\nMounting command: mount\n'
              f"Mounting arguments: -t nfs 127.0.0.1:/exports/share {share}\nOutput: mount.nfs")

    async def nfs_refused() -> bool:
        return any(r == "FailedMount" and m.startswith(prefix)
                   for _, r, m in await pod_events(client, "keeper", namespace))
    await eventually(nfs_refused, 20, what=f"FailedMount starting {prefix!r}")
    # After the mount timeout (4 s here, 2 min 3 s by default) the pod also says it gave up waiting, once a window.
    await _event(client, "keeper", namespace, "FailedMount",
                 "Unable to attach or mount volumes: unmounted volumes=[data share], unattached volumes=[data share]: "
                 "timed out waiting for the condition", timeout=15)
    now = await wait_pod(client, "keeper", namespace, lambda p: _waiting(p) == ["ContainerCreating"])
    assert now.status.phase == "Pending"
    assert not any(c.status == "True" for c in now.status.conditions if c.type == "Ready")
    # Nothing ran: no container (and so no write into a container's own filesystem) exists for the pod.
    assert await _containers_of(node, created.metadata.uid) == []


async def test_a_pod_waits_for_its_config_map_and_starts_once_it_is_there(
        client: Client, namespace: str, node: LocalNode) -> None:
    app = busybox("app", "sleep", "3600")
    app.volume_mounts.add(name="conf", mount_path="/etc/app")
    app.volume_mounts.add(name="extra", mount_path="/etc/extra")
    pod = make_pod("patient", node, app, grace=1)
    conf = pod.spec.volumes.add(name="conf").config_map
    conf.name = "late"
    conf.items.add(key="mode", path="mode")
    conf.items.add(key="level", path="conf/level")
    extra = pod.spec.volumes.add(name="extra").secret  # optional and missing: an empty volume, no wait
    extra.secret_name, extra.optional = "nobody", True
    await client.create(pod, namespace=namespace)
    await _event(client, "patient", namespace, "FailedMount",
                 'MountVolume.SetUp failed for volume "conf" : configmap "late" not found')
    assert (await wait_pod(client, "patient", namespace, lambda p: bool(_waiting(p)))).status.phase == "Pending"

    # The ConfigMap arrives without a key the volume lists: still waiting, now for the key.
    config = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    config.metadata.name = "late"
    config.data["mode"] = "fast"
    await client.create(config, namespace=namespace)
    await _event(client, "patient", namespace, "FailedMount",
                 'MountVolume.SetUp failed for volume "conf" : configmap references non-existent config key: level')
    assert _waiting(await client.get(core_pb2.Pod, "patient", namespace)) == ["ContainerCreating"]

    config = await client.get(core_pb2.ConfigMap, "late", namespace)
    config.data["level"] = "3"
    await client.update(config)
    await wait_pod(client, "patient", namespace, lambda p: p.status.phase == "Running", timeout=20,
                   what="patient Running once its ConfigMap is complete")
    script = "cat /etc/app/mode /etc/app/conf/level; ls /etc/extra"  # optional and missing: empty
    reply = await client.exec(namespace, "patient", ["sh", "-c", script])
    assert reply.stdout == b"fast3"


async def test_memory_empty_dirs_and_secrets_are_tmpfs_and_files_get_their_modes(
        client: Client, namespace: str, node: LocalNode) -> None:
    secret = core_pb2.Secret(api_version="v1", kind="Secret")
    secret.metadata.name = "keys"
    secret.data.update({"token": b"t0ken", "cert": b"pem"})
    await client.create(secret, namespace=namespace)
    config = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    config.metadata.name = "plain"
    config.data["a"] = "1"
    await client.create(config, namespace=namespace)

    app = busybox("app", "sleep", "3600")
    for name, path in (("scratch", "/scratch"), ("keys", "/keys"), ("listed", "/listed"), ("plain", "/plain")):
        app.volume_mounts.add(name=name, mount_path=path)
    pod = make_pod("modes", node, app, grace=1)
    scratch = pod.spec.volumes.add(name="scratch").empty_dir
    scratch.medium, scratch.size_limit = "Memory", "8Mi"
    keys = pod.spec.volumes.add(name="keys").secret
    keys.secret_name, keys.default_mode = "keys", 0o400
    listed = pod.spec.volumes.add(name="listed").secret
    listed.secret_name = "keys"
    listed.items.add(key="cert", path="tls.crt", mode=0o440)
    pod.spec.volumes.add(name="plain").config_map.name = "plain"
    await client.create(pod, namespace=namespace)
    await wait_pod(client, "modes", namespace, lambda p: p.status.phase == "Running", what="modes Running")

    mounted = (await client.exec(namespace, "modes", ["cat", "/proc/mounts"])).stdout.decode().splitlines()
    fs = {fields[1]: (fields[2], fields[3]) for fields in (line.split() for line in mounted)}
    assert fs["/scratch"][0] == "tmpfs" and "size=8192k" in fs["/scratch"][1]
    assert fs["/keys"][0] == "tmpfs" and fs["/listed"][0] == "tmpfs"  # secret values never touch the disk
    assert fs["/plain"][0] != "tmpfs"
    script = "stat -L -c %a /keys/token /keys/cert /listed/tls.crt /plain/a; cat /keys/token; echo hi > /scratch/x"
    reply = await client.exec(namespace, "modes", ["sh", "-c", script])
    assert reply.stdout == b"400\n400\n440\n644\nt0ken"


async def test_an_empty_dir_over_its_size_limit_gets_the_pod_evicted(
        client: Client, namespace: str, node: LocalNode) -> None:
    app = busybox("app", "sh", "-c", "dd if=/dev/zero of=/cache/fill bs=1024 count=2048; sleep 3600")
    app.volume_mounts.add(name="cache", mount_path="/cache")
    pod = make_pod("hog", node, app, grace=30)
    pod.spec.volumes.add(name="cache").empty_dir.size_limit = "1Mi"
    created = await client.create(pod, namespace=namespace)
    message = 'Usage of EmptyDir volume "cache" exceeds the limit "1Mi". '
    evicted = await wait_pod(client, "hog", namespace, lambda p: p.status.phase == "Failed", timeout=20,
                             what="hog evicted")
    assert (evicted.status.reason, evicted.status.message) == ("Evicted", message)
    assert [s.state.HasField("terminated") for s in evicted.status.container_statuses] == [True]
    await _event(client, "hog", namespace, "Evicted", message)
    # The space is given back: the volume is gone from the node, and nothing restarts the pod there.
    volume = Path(node.kubelet_config().root_dir) / "pods" / created.metadata.uid / "volumes"
    await eventually(lambda: _absent(volume), 10, what="the evicted pod's volumes removed")
    await asyncio.sleep(2)
    again = await client.get(core_pb2.Pod, "hog", namespace)
    assert again.status.phase == "Failed" and again.status.container_statuses[0].restart_count == 0


async def _absent(path: Path) -> bool:
    return not await asyncio.to_thread(path.exists)


async def test_host_path_types_are_checked_and_made_before_the_pod_starts(
        client: Client, namespace: str, node: LocalNode, tmp_path: Path) -> None:
    await allow_privileged_pods(client, namespace)
    base = tmp_path / "host"
    base.mkdir()

    def host_pod(name: str, path: Path, type_: str) -> core_pb2.Pod:
        app = busybox("app", "sleep", "3600")
        app.volume_mounts.add(name="node", mount_path="/node")
        pod = make_pod(name, node, app, grace=1)
        pod.spec.volumes.add(name="node").host_path.CopyFrom(core_pb2.HostPathVolumeSource(path=str(path),
                                                                                           type=type_))
        return pod

    await client.create(host_pod("strict", base / "missing", "Directory"), namespace=namespace)
    await client.create(host_pod("lenient", base / "made" / "here", "DirectoryOrCreate"), namespace=namespace)
    await _event(client, "strict", namespace, "FailedMount",
                 f'MountVolume.SetUp failed for volume "node" : hostPath type check failed: {base}/missing '
                 f"is not a directory")
    await wait_pod(client, "lenient", namespace, lambda p: p.status.phase == "Running", what="lenient Running")
    made = base / "made" / "here"
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o755
    await client.exec(namespace, "lenient", ["sh", "-c", "echo from-pod > /node/f"])
    assert (made / "f").read_text() == "from-pod\n"
    strict = await client.get(core_pb2.Pod, "strict", namespace)
    assert strict.status.phase == "Pending" and _waiting(strict) == ["ContainerCreating"]
    # The directory appears on the node: the next try finds it and the pod starts.
    (base / "missing").mkdir()
    await wait_pod(client, "strict", namespace, lambda p: p.status.phase == "Running", timeout=20,
                   what="strict Running once its directory exists")


async def test_a_sub_path_through_a_symlink_out_of_the_volume_is_refused(
        client: Client, namespace: str, node: LocalNode) -> None:
    # The init container plants a link to the node's root in the shared volume; the app asks for it.
    plant = busybox("plant", "ln", "-s", "/", "/work/escape")
    plant.volume_mounts.add(name="work", mount_path="/work")
    app = busybox("app", "sleep", "3600")
    app.volume_mounts.add(name="work", mount_path="/host", sub_path="escape")
    pod = make_pod("climber", node, app, grace=1)
    pod.spec.init_containers.append(plant)
    pod.spec.volumes.add(name="work").empty_dir.SetInParent()
    await client.create(pod, namespace=namespace)
    message = 'failed to prepare subPath for volumeMount "work" of container "app"'
    held = await wait_pod(client, "climber", namespace,
                          lambda p: [s.state.waiting.message for s in p.status.container_statuses] == [message],
                          what="app held with CreateContainerConfigError")
    assert _waiting(held) == ["CreateContainerConfigError"] and held.status.phase == "Pending"
    await _event(client, "climber", namespace, "Failed", f"Error: {message}")


async def test_a_force_deleted_pod_that_never_started_leaves_no_mounts_behind(
        client: Client, namespace: str, node: LocalNode) -> None:
    app = busybox("app", "sleep", "3600")
    app.volume_mounts.add(name="fast", mount_path="/fast")
    app.volume_mounts.add(name="conf", mount_path="/conf")
    pod = make_pod("stuck", node, app, grace=1)
    pod.spec.volumes.add(name="fast").empty_dir.medium = "Memory"  # set up (a tmpfs) ...
    pod.spec.volumes.add(name="conf").config_map.name = "never"  # ... while this one fails
    created = await client.create(pod, namespace=namespace)
    await _event(client, "stuck", namespace, "FailedMount",
                 'MountVolume.SetUp failed for volume "conf" : configmap "never" not found')
    pod_dir = (Path(node.kubelet_config().root_dir) / "pods" / created.metadata.uid).resolve()
    assert any(p.startswith(f"{pod_dir}/") for p in mounts.mount_points())
    await client.delete(core_pb2.Pod, "stuck", namespace, grace_period_seconds=0)

    async def cleaned() -> bool:
        return not await asyncio.to_thread(pod_dir.exists) and not any(
            p.startswith(f"{pod_dir}/") for p in mounts.mount_points())
    await eventually(cleaned, 10, what="the pod's directory and tmpfs removed")
