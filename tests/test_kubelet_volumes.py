"""ConfigMap and Secret volumes follow their objects: given a running pod, when the object changes,
then its files change within the kubelet's sync period, all at once; subPath mounts keep theirs.

The first tests drive the atomic writer alone on a temporary directory (the
..data symlink swap, and a reader racing the writer never seeing a partial
file); the last runs a real pod on a real node (containerd, runc, kubelet).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from client import Client
from nodeagent.kubelet import atomic_writer
from nodeagent.kubelet.atomic_writer import FileProjection, ProjectionError
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, eventually, make_pod, node, wait_pod

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
    await client.create(pod, namespace=namespace)
    await wait_pod(client, "reader", namespace, lambda p: p.status.phase == "Running", what="reader Running")

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
