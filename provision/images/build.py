"""`kctl image build`: full Dockerfiles built by buildah, FROM the cluster registry, the result pushed there.

buildah (Debian's, from the containers project; rootful, runc as the OCI
runtime) runs the whole Dockerfile language: `RUN`, multi-stage builds with
`COPY --from`, `ARG`/`--build-arg`, `ENV`, `USER`, `WORKDIR`,
`ENTRYPOINT`/`CMD`, `.dockerignore`. Its storage (vfs: no kernel features
needed) lives under a directory of the cluster's (`<cluster>/buildah`), so
builds of different clusters never share layers or base images.

`FROM busybox` resolves the way the nodes resolve it (provision/containerd.py):
a private registries.conf makes docker.io names come from the cluster
registry (plain HTTP) first, and, only when the cluster is online, from
Docker Hub after it; an offline cluster's builds reach nothing else. RUN steps
get no network offline (`--network none`) and the host's online.

The result leaves buildah as an uncompressed OCI layout (`buildah push
--disable-compression oci:`), read back as an OCIImage and pushed by the
distribution client (provision/images/distribution.py) with the cluster's
credentials: skopeo's and buildah's own push label a layer the registry
already holds uncompressed (the base images') gzip, which no node can unpack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from provision.images.oci import OCIImage
from provision.images.store import ImageStore

TIMEOUT = 1800


class BuildError(RuntimeError):
    """The build failed; the message is buildah's last words (the step and why)."""


def buildah() -> str:
    found = shutil.which("buildah")
    if found is None:
        raise BuildError("buildah is not installed (provision/install.sh installs it: apt-get install buildah)")
    return found


def registries_conf(registry: str, *, offline: bool) -> str:
    """containers-registries.conf(5) for builds: docker.io names from `registry` (and Docker Hub when online)."""
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"', ""]
    if registry:
        lines += ["[[registry]]", 'prefix = "docker.io"',
                  f'location = "{registry}"' if offline else 'location = "registry-1.docker.io"', ""]
        if not offline:
            lines += ["[[registry.mirror]]", f'location = "{registry}"', "insecure = true", ""]
        else:
            lines.insert(-1, "insecure = true")
        lines += ["[[registry]]", f'location = "{registry}"', "insecure = true", ""]
    elif offline:
        lines += ["[[registry]]", 'prefix = "docker.io"', "blocked = true", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Builder:
    """buildah with its storage under `storage`, resolving FROM through the cluster `registry`."""

    storage: Path
    registry: str = ""
    offline: bool = True

    def _env(self) -> dict[str, str]:
        self.storage.mkdir(parents=True, exist_ok=True)
        conf = self.storage / "registries.conf"
        conf.write_text(registries_conf(self.registry, offline=self.offline))
        return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}

    def _argv(self, *args: str) -> list[str]:
        return [buildah(), "--root", str(self.storage / "root"), "--runroot", str(self.storage / "run"),
                "--storage-driver", "vfs", *args]

    def build(self, context: Path, name: str, *, containerfile: Path | None = None,
              build_args: dict[str, str] | None = None, target: str = "", echo: bool = False) -> None:
        """Build `context` (its Dockerfile or Containerfile, or `containerfile`) as `name` in buildah's storage.

        `echo`: buildah's step lines go to this process's output as they come (kctl shows them).
        """
        if containerfile is None and not any((context / f).is_file() for f in ("Containerfile", "Dockerfile")):
            raise BuildError(f"{context} has no Containerfile or Dockerfile (give one with -f)")
        argv = self._argv("bud", "--isolation", "oci", "--network", "none" if self.offline else "host",
                          "-t", name)
        for key, value in (build_args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        if containerfile is not None:
            argv += ["-f", str(containerfile)]
        if target:
            argv += ["--target", target]
        argv.append(str(context))
        done = subprocess.run(argv, env=self._env(), stdout=None if echo else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            raise BuildError(_last_words(done.stderr, "buildah bud failed"))

    def export(self, name: str) -> OCIImage:
        """The built image `name` as an OCIImage (uncompressed layers, ready to push)."""
        with tempfile.TemporaryDirectory(prefix="flt-build-") as tmp:
            done = subprocess.run(self._argv("push", "--disable-compression", "--quiet", name,
                                             f"oci:{tmp}:image:latest"),
                                  env=self._env(), capture_output=True, text=True, timeout=TIMEOUT)
            if done.returncode != 0:
                raise BuildError(_last_words(done.stderr, f"buildah push {name} failed"))
            image = ImageStore(Path(tmp)).load("image:latest")
        if image is None:
            raise BuildError(f"buildah wrote no image for {name}")
        return image


    def save_archive(self, name: str, path: Path, *, as_name: str) -> None:
        """Write built image `name` to `path` as `docker save` would, tagged `as_name` (what `kctl image load`
        and `docker load` take)."""
        done = subprocess.run(self._argv("push", "--quiet", name, f"docker-archive:{path}:{as_name}"),
                              env=self._env(), capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            raise BuildError(_last_words(done.stderr, f"buildah push {name} failed"))


def _last_words(stderr: str, fallback: str) -> str:
    """buildah's error: its last line that says `error`, else its last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [fallback])[-1]
