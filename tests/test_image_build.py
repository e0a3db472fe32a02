"""`kctl image build` on buildah, and `kctl run ... -- ARGS`.

Given an open docker-registry on loopback holding busybox (what a cluster
registry serves): a full Dockerfile -- two stages, `ARG` set by --build-arg,
`RUN`, `COPY --from`, `ENV`, `USER`, `WORKDIR`, `ENTRYPOINT`/`CMD` and a
`.dockerignore` -- is built by buildah with `FROM busybox` pulled from that
registry (offline: registries.conf names no other), and the result pushed
there; pulled back, its config and files are what the Dockerfile says.
A failing RUN, an unknown instruction and a base image the registry lacks
are refused naming why. Needs root, buildah and docker-registry.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from client import Client
from kctl.main import cli
from proto import core_pb2
from provision.images import distribution
from provision.images.build import registries_conf
from provision.images.oci import OCIImage, parse_reference
from provision.processes import ApiServer
from tests.kubelet_support import containerd_unusable
from tests.test_image_load import serving_registry

DOCKERFILE = """\
# syntax is Docker's own
FROM busybox AS builder
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from stage one" > /out/greeting.txt
FROM busybox
ARG GREETING
ENV APP_HOME=/srv/app MODE=test
WORKDIR $APP_HOME
COPY --from=builder /out/greeting.txt ./
COPY . ./ctx/
RUN adduser -D -u 1234 app || true
USER 1234
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt"]
"""


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = containerd_unusable()
    if reason or not shutil.which("buildah") or not shutil.which("docker-registry"):
        pytest.skip(f"needs root, buildah and docker-registry ({reason or 'not installed'})")
    with serving_registry(tmp_path_factory.mktemp("buildreg")) as address:
        yield address


def kctl(*args: str, home: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"FLOTILLA_HOME": str(home), "KCTL_CONFIG": "/nonexistent"})
    return result.exit_code, result.output


def file_in(image: OCIImage, path: str) -> bytes | None:
    """`path`'s content in the image's filesystem (the topmost layer holding it)."""
    for layer in reversed(image.layers):
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == path.lstrip("/") and member.isfile():
                    extracted = tar.extractfile(member)
                    return extracted.read() if extracted else None
    return None


def test_a_full_dockerfile_builds_and_is_pushed(open_registry: str, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "keep.txt").write_text("kept")
    (context / "secret.env").write_text("TOKEN=nope")
    (context / ".dockerignore").write_text("secret.env\n")
    code, out = kctl("image", "build", str(context), "-t", "greeter:1", "--build-arg", "GREETING=hi",
                     "--registry", open_registry, home=tmp_path / "home")
    assert code == 0, out
    assert out.startswith("built greeter:1 sha256:")
    assert f"pushed {open_registry}/library/greeter:1 " in out
    image = distribution.pull(registry=open_registry, repository="library/greeter", tag="1")
    config = image.config_json["config"]
    assert "APP_HOME=/srv/app" in config["Env"] and "MODE=test" in config["Env"]
    assert config["WorkingDir"] == "/srv/app" and config["User"] == "1234"
    assert config["Entrypoint"] == ["/bin/sh", "-c"] and config["Cmd"] == ["cat greeting.txt"]
    assert file_in(image, "srv/app/greeting.txt") == b"hi from stage one\n"
    assert file_in(image, "srv/app/ctx/keep.txt") == b"kept"
    assert file_in(image, "srv/app/ctx/secret.env") is None  # .dockerignore'd


@pytest.mark.parametrize(("dockerfile", "error"), [
    ("FROM busybox\nRUN exit 3\n", "exit status 3"),
    ("FROM busybox\nFROBNICATE x\n", "frobnicate"),
    ("FROM nothing-here:9\n", "nothing-here"),
])
def test_build_failures_say_why(open_registry: str, tmp_path: Path, dockerfile: str, error: str) -> None:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    code, out = kctl("image", "build", str(tmp_path), "-t", "broken", "--registry", open_registry,
                     home=tmp_path / "home")
    assert code == 1 and error in out.lower(), out
    assert "library/broken" not in distribution_catalog(open_registry)


def distribution_catalog(address: str) -> list[str]:
    import requests
    return list(requests.get(f"http://{address}/v2/_catalog", timeout=5).json().get("repositories") or [])


def test_bad_names_and_missing_dockerfiles_are_refused(open_registry: str, tmp_path: Path) -> None:
    code, out = kctl("image", "build", str(tmp_path), "-t", "Bad Name", "--registry", open_registry,
                     home=tmp_path / "home")
    assert code == 1 and "invalid" in out
    code, out = kctl("image", "build", str(tmp_path), "-t", "empty", "--registry", open_registry,
                     home=tmp_path / "home")
    assert code == 1 and "has no Containerfile or Dockerfile" in out


def test_builds_resolve_docker_io_through_the_cluster_registry() -> None:
    offline = registries_conf("10.0.0.1:5000", offline=True)
    assert 'location = "10.0.0.1:5000"' in offline and "registry-1.docker.io" not in offline
    online = registries_conf("10.0.0.1:5000", offline=False)
    assert online.index("[[registry.mirror]]") < online.index('location = "10.0.0.1:5000"')
    assert 'location = "registry-1.docker.io"' in online


def test_image_names_follow_docker(tmp_path: Path) -> None:
    assert str(parse_reference("nginx")) == "library/nginx:latest"
    assert parse_reference("10.0.0.5:5000/web:1").repository == "web"
    assert parse_reference("alice/app:v2").familiar() == "alice/app:v2"
    for bad in ("Upper/case", "web:", "web@sha256:abc", ""):
        with pytest.raises(ValueError):
            parse_reference(bad)


async def test_kctl_run_passes_words_after_the_double_dash(apiserver: ApiServer, client: Client,
                                                           namespace: str) -> None:
    def kctl(*args: str) -> str:
        result = CliRunner().invoke(cli, ["-s", apiserver.address, "-n", namespace, *args],
                                    env={"KCTL_CONFIG": "/nonexistent"})
        assert result.exit_code == 0, result.output
        return result.output

    assert await asyncio.to_thread(kctl, "run", "echo", "--image=busybox", "--", "echo", "-n", "hi") == \
        "pod/echo created\n"
    await asyncio.to_thread(kctl, "run", "shell", "--image=busybox", "--command", "--", "sh", "-c", "sleep 9")
    echo = await client.get(core_pb2.Pod, "echo", namespace)
    shell = await client.get(core_pb2.Pod, "shell", namespace)
    assert list(echo.spec.containers[0].args) == ["echo", "-n", "hi"] and not echo.spec.containers[0].command
    assert list(shell.spec.containers[0].command) == ["sh", "-c", "sleep 9"] and not shell.spec.containers[0].args
