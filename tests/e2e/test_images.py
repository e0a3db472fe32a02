"""Issue 17 end to end: an offline local cluster, images loaded and built into its registry, pull secrets.

Given `kctl cluster up --workers 1` in the test suite (offline: its own name,
subnet 192.168.93.0/24, bridge flt93img, pod network 10.93.0.0/16, its own
HOME): every node's containerd lists only the cluster registry for docker.io.
`kctl run r --image=redis` waits in ErrImagePull/ImagePullBackOff, its event
naming `kctl image load`; after `kctl image load` of a `docker save` archive
holding `redis` (built here with buildah FROM the cluster's busybox) the pod
runs. `kctl image build` of a two-stage Dockerfile (FROM debian:bookworm-slim
with a RUN that writes a page; FROM busybox copying it and serving it with
httpd) and `kctl run` of the result answers with the page. A registry behind
htpasswd: a pod without an imagePullSecret fails naming authentication; with
one made by `kctl create secret docker-registry` it runs. The python client
image runs `import kubernetes`. Needs root, containerd, runc, the CNI plugins,
buildah, skopeo and docker-registry.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.images import distribution, registry
from provision.images.build import Builder
from provision.images.oci import busybox_image
from provision.processes import Process, free_port, wait_until
from tests.e2e.test_seed_journey import Cluster, eventually

NAME = "img-e2e"
SUBNET_PREFIX = "192.168.93"
MASTER_ADDRESS = f"{SUBNET_PREFIX}.1"
BRIDGE = "flt93img"
POD_NETWORK = "10.93.0.0/16"
PAGE = "built by buildah on debian, served by busybox"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists()
    or not all(shutil.which(t) for t in ("buildah", "skopeo", "docker-registry")),
    reason="needs root, containerd, the CNI plugins, buildah, skopeo and docker-registry")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("images")
    with Cluster(home).up(NAME, workers=1, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        assert c.env.get("FLOTILLA_OFFLINE") == "1"  # tests/conftest.py: the suite is always offline
        yield c


def nodes_dir(cluster: Cluster) -> Path:
    return cluster.home / "clusters" / NAME / "nodes"


def status_of(cluster: Cluster, pod: str) -> str:
    rows = [r for r in cluster.rows("get", "pods") if r["NAME"] == pod]
    return rows[0]["STATUS"] if rows else ""


def test_the_cluster_is_offline(cluster: Cluster) -> None:
    for node in nodes_dir(cluster).iterdir():
        text = (node / "containerd" / "certs.d" / "docker.io" / "hosts.toml").read_text()
        assert f"http://{MASTER_ADDRESS}:5000" in text and "registry-1.docker.io" not in text, text


def test_a_missing_image_names_kctl_image_load_and_runs_once_loaded(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kctl("run", "r", "--image=redis")
    eventually(lambda: status_of(cluster, "r") in ("ErrImagePull", "ImagePullBackOff"), "r ErrImagePull")
    described = cluster.kctl("describe", "pod", "r")
    assert 'image "redis" is not in the cluster registry and the cluster is offline' in described, described
    assert "kctl image load" in described

    # A stand-in redis, built here with buildah from the cluster's busybox and saved as docker would.
    context = tmp_path / "redis"
    context.mkdir()
    (context / "Dockerfile").write_text('FROM busybox\nCMD ["sh", "-c", "echo redis stand-in; sleep 3600"]\n')
    builder = Builder(tmp_path / "buildah", registry=f"{MASTER_ADDRESS}:5000", offline=True)
    builder.build(context, "redis-standin:1")
    archive = tmp_path / "redis.tar"
    builder.save_archive("redis-standin:1", archive, as_name="redis:latest")

    loaded = cluster.kctl("image", "load", str(archive))
    assert f"as {MASTER_ADDRESS}:5000/library/redis:latest" in loaded, loaded
    assert ["redis", "latest"] in [line.split() for line in cluster.kctl("image", "list").splitlines()]
    eventually(lambda: status_of(cluster, "r") == "Running", "r Running once loaded", timeout=240)


def test_a_two_stage_build_from_debian_runs(cluster: Cluster, tmp_path: Path) -> None:
    context = tmp_path / "web"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM debian:bookworm-slim AS build\n"
        f'RUN mkdir -p /out && echo "{PAGE}" > /out/index.html && dpkg -s bash > /dev/null\n'
        "FROM busybox\n"
        "COPY --from=build /out/index.html /www/index.html\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n')
    built = cluster.kctl("image", "build", str(context), "-t", "web:1", timeout=600)
    assert f"pushed {MASTER_ADDRESS}:5000/library/web:1 " in built, built
    cluster.kctl("run", "web", "--image=web:1", "--port", "8080")
    eventually(lambda: status_of(cluster, "web") == "Running", "web Running")
    page = eventually(lambda: cluster.kctl("exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:8080/",
                                           check=False), "the page")
    assert page.strip() == PAGE


@pytest.fixture
def auth_registry(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A registry on the master's address wanting basic auth (plain HTTP, which every node's hosts.toml is told),
    holding `private:1`; (host:port, password)."""
    password = secrets.token_urlsafe(12)
    (tmp_path / "storage").mkdir()
    (tmp_path / "htpasswd").write_bytes(registry.htpasswd(registry.Credentials("alice", password)))
    locked, open_ = f"{MASTER_ADDRESS}:{free_port()}", f"127.0.0.1:{free_port()}"
    secret = secrets.token_hex(16)
    (tmp_path / "locked.yml").write_text(registry.config_text(storage=tmp_path / "storage", address=locked,
                                                              secret=secret, htpasswd_file=tmp_path / "htpasswd"))
    (tmp_path / "open.yml").write_text(registry.config_text(storage=tmp_path / "storage", address=open_,
                                                            secret=secret))
    processes = [Process(n, registry.argv(tmp_path / f"{n}.yml"), tmp_path / f"{n}.log") for n in ("locked", "open")]
    for p in processes:
        p.start()
    try:
        wait_until(lambda: registry.ready(open_), "open registry", processes[1])
        distribution.push(busybox_image(), registry=open_, repository="private", tag="1")
        for node in nodes_dir(cluster).iterdir():
            hosts = node / "containerd" / "certs.d" / locked
            hosts.mkdir(parents=True)
            (hosts / "hosts.toml").write_text(f'server = "http://{locked}"\n\n[host."http://{locked}"]\n'
                                              '  capabilities = ["pull", "resolve"]\n')
        yield locked, password
    finally:
        for p in processes:
            p.stop()


def test_a_private_registry_needs_an_image_pull_secret(cluster: Cluster, auth_registry: tuple[str, str],
                                                       tmp_path: Path) -> None:
    address, password = auth_registry
    image = f"{address}/private:1"
    cluster.kctl("run", "bare", f"--image={image}", "--command", "--", "sleep", "3600")
    eventually(lambda: status_of(cluster, "bare") in ("ErrImagePull", "ImagePullBackOff"), "bare ErrImagePull")
    assert "requires authentication" in cluster.kctl("describe", "pod", "bare")

    made = cluster.kctl("create", "secret", "docker-registry", "regcred", f"--docker-server={address}",
                        "--docker-username=alice", f"--docker-password={password}")
    assert made == "secret/regcred created\n"
    manifest = tmp_path / "with-secret.yaml"
    manifest.write_text(f"""apiVersion: v1
kind: Pod
metadata: {{name: with-secret}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: c, image: "{image}", command: [sleep, "3600"]}}
""")
    cluster.kctl("apply", "-f", str(manifest))
    eventually(lambda: status_of(cluster, "with-secret") == "Running", "with-secret Running")


def test_the_python_client_image_imports_kubernetes(cluster: Cluster) -> None:
    cluster.kctl("run", "py", "--image=flotilla/python-client", "--restart=Never", "--command", "--",
                 "python3", "-c", "import kubernetes; print('client', kubernetes.__version__)")
    eventually(lambda: status_of(cluster, "py") == "Completed", "py Completed", timeout=180)
    assert cluster.kctl("logs", "py").startswith("client ")
