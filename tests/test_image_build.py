"""`kctl image build` and `kctl run ... -- ARGS`: what a user's Containerfile becomes, and what it may not say.

No registry or runtime here: builds FROM scratch or FROM busybox (built
locally, as the provisioner does) into a temporary local store. A rebuild of
the same inputs gives the same digest, instructions shape the OCI config as
Docker's do, and refused instructions name their file and line.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from client import Client
from kctl.main import cli
from proto import core_pb2
from provision.images.build import BuildError, build, layer_paths
from provision.images.oci import OCIImage, busybox_image, parse_reference
from provision.images.store import ImageStore
from provision.processes import ApiServer


def no_base(name: str) -> OCIImage:
    raise LookupError(f"{name} is not available in this test")


def with_busybox(name: str) -> OCIImage:
    assert name == "busybox"
    return busybox_image()


def write(context: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        (context / path).write_text(text)
    return context


def config(image: OCIImage) -> dict[str, object]:
    return dict(image.config_json["config"])


def test_the_same_inputs_build_the_same_digest(tmp_path: Path) -> None:
    files = {"Containerfile": "FROM busybox\nCOPY site /var/www/\nCMD httpd -f -h /var/www\n",
             "site/index.html": "<h1>hi</h1>\n", "site/css/a.css": "h1 {}\n"}
    first = build(write(tmp_path / "a", files), resolve=with_busybox)
    later = write(tmp_path / "b", files)
    os.utime(later / "site" / "index.html", (1_000_000, 1_000_000))  # other mtimes do not matter
    assert build(later, resolve=with_busybox).digest == first.digest
    with tarfile.open(fileobj=io.BytesIO(first.layers[-1])) as layer:
        members = layer.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
    assert "var/www/css/a.css" in {m.name for m in members}
    (later / "site" / "index.html").write_text("<h1>changed</h1>\n")
    assert build(later, resolve=with_busybox).digest != first.digest


def test_instructions_shape_the_image_config(tmp_path: Path) -> None:
    context = write(tmp_path, {"Containerfile": """\
# comments and continuations as Docker reads them
FROM busybox
ENV GREETING="hello world" \\
    MODE=fast
ENV LEGACY the rest of the line
WORKDIR /srv
WORKDIR app
COPY run.sh ./
EXPOSE 8080 53/udp
LABEL org.example.team=web "org.example.note=two words"
USER nobody
ENTRYPOINT ["/srv/app/run.sh"]
""", "run.sh": "#!/bin/sh\necho hi\n"})
    (context / "run.sh").chmod(0o755)
    image = build(context, resolve=with_busybox)
    cfg = config(image)
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "GREETING=hello world", "MODE=fast", "LEGACY=the rest of the line"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"org.example.team": "web", "org.example.note": "two words"}
    assert cfg["User"] == "nobody"
    assert cfg["Entrypoint"] == ["/srv/app/run.sh"] and "Cmd" not in cfg  # busybox's CMD sh is dropped
    with tarfile.open(fileobj=io.BytesIO(image.layers[-1])) as layer:
        script = layer.getmember("srv/app/run.sh")
    assert script.mode == 0o755
    history = image.config_json["history"]
    assert [h.get("empty_layer", False) for h in history] == [True] * 5 + [False] + [True] * 4
    assert history[-1]["created_by"] == 'ENTRYPOINT ["/srv/app/run.sh"]'
    assert len(image.layers) == 2  # busybox's and the COPY's


def test_shell_form_copy_rules_and_add_unpacks_tars(tmp_path: Path) -> None:
    context = write(tmp_path, {"a.txt": "a", "b.txt": "b", "dir/x/y.txt": "y", "Containerfile": """\
FROM scratch
COPY *.txt /texts/
COPY dir /opt/
COPY a.txt /etc/renamed.conf
ADD bundle.tar /unpacked
CMD echo "$HOME"
"""})
    with tarfile.open(context / "bundle.tar", "w") as tar:
        tar.add(context / "b.txt", arcname="inside/b.txt")
    image = build(context, resolve=no_base)
    assert config(image)["Cmd"] == ["/bin/sh", "-c", 'echo "$HOME"']
    paths = set(layer_paths(image))
    assert {"texts/a.txt", "texts/b.txt", "opt/x/y.txt", "etc/renamed.conf", "unpacked/inside/b.txt"} <= paths
    assert "opt/dir" not in paths and "bundle.tar" not in " ".join(paths)


def test_a_directory_without_a_containerfile_is_the_root_filesystem(tmp_path: Path) -> None:
    write(tmp_path, {"bin/hello": "#!/bin/sh\n", "etc/motd": "hi\n"})
    (tmp_path / "bin" / "sh").symlink_to("busybox")
    image = build(tmp_path, resolve=no_base)
    assert len(image.layers) == 1
    with tarfile.open(fileobj=io.BytesIO(image.layers[0])) as layer:
        assert layer.getmember("bin/sh").linkname == "busybox"
        assert set(layer.getnames()) == {"bin", "bin/hello", "bin/sh", "etc", "etc/motd"}


@pytest.mark.parametrize(("text", "error"), [
    ("FROM busybox\nRUN apt-get install x\n", "Containerfile:2: RUN is not supported: commands cannot run"),
    ("FROM busybox\n\n# note\nHEALTHCHECK CMD true\n", "Containerfile:4: HEALTHCHECK is not supported"),
    ("FROM busybox\nFROBNICATE x\n", "Containerfile:2: unknown instruction 'FROBNICATE'"),
    ("COPY a /a\n", "Containerfile:1: the first instruction must be FROM"),
    ("FROM scratch\nFROM scratch\n", "Containerfile:2: FROM: only one stage"),
    ("FROM nothing\n", "Containerfile:1: FROM: nothing is not available in this test"),
    ("FROM scratch\nCOPY ../secret /x\n", "Containerfile:2: COPY: ../secret: outside the build context"),
    ("FROM scratch\nCOPY missing /x\n", "Containerfile:2: COPY: missing: no such file or directory"),
    ("FROM scratch\nCOPY --chown=1 a /x\n", "Containerfile:2: COPY: flags are not supported (--chown=1)"),
    ("FROM scratch\nADD https://example.com/x /x\n", "Containerfile:2: ADD: https://example.com/x: URLs are not"),
    ("FROM scratch\nEXPOSE 80/icmp\n", "Containerfile:2: EXPOSE: 80/icmp: want PORT or PORT/tcp|udp|sctp"),
    ("FROM scratch\nCMD [\"a\", 1]\n", "Containerfile:2: CMD: exec form must be a JSON array of strings"),
    ("FROM scratch\nENV A=1 \\\n", "Containerfile:2: the file ends in a line continuation"),
    ("FROM scratch\nLABEL novalue\n", "Containerfile:2: LABEL: 'novalue': want KEY=VALUE"),
])
def test_containerfile_errors_name_the_line(tmp_path: Path, text: str, error: str) -> None:
    write(tmp_path, {"Containerfile": text})
    with pytest.raises(BuildError) as caught:
        build(tmp_path, resolve=no_base)
    assert str(caught.value).startswith(error), str(caught.value)


def test_image_names_follow_docker(tmp_path: Path) -> None:
    assert str(parse_reference("nginx")) == "library/nginx:latest"
    assert parse_reference("10.0.0.5:5000/web:1").repository == "web"
    assert parse_reference("alice/app:v2").familiar() == "alice/app:v2"
    for bad in ("Upper/case", "web:", "web@sha256:abc", ""):
        with pytest.raises(ValueError):
            parse_reference(bad)


def test_kctl_image_build_and_list(tmp_path: Path) -> None:
    write(tmp_path / "ctx", {"Containerfile": "FROM scratch\nCOPY page.html /\n", "page.html": "x"})
    env = {"FLOTILLA_HOME": str(tmp_path / "home"), "KCTL_CONFIG": "/nonexistent"}
    runner = CliRunner()
    built = runner.invoke(cli, ["image", "build", str(tmp_path / "ctx"), "-t", "page"], env=env)
    assert built.exit_code == 0, built.output
    stored = ImageStore(tmp_path / "home" / "images").load("page:latest")
    assert stored is not None and built.output.startswith(f"built page:latest {stored.digest} (1 layers")
    index = json.loads((tmp_path / "home" / "images" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "page:latest"
    # `image list` shows the cluster registry's images (tests/test_image_load.py): here there is none.
    listed = runner.invoke(cli, ["image", "list"], env=env)
    assert listed.exit_code == 1 and "no --registry given" in listed.output
    nowhere = runner.invoke(cli, ["image", "push", "page"], env=env)
    assert nowhere.exit_code == 1
    assert "no --registry given, and no context in /nonexistent names a local cluster" in nowhere.output
    refused = runner.invoke(cli, ["image", "build", str(tmp_path / "ctx"), "-t", "Bad Name"], env=env)
    assert refused.exit_code == 1 and "invalid" in refused.output


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
