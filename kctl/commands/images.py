"""`kctl image build|push|load|list`: users' own images, into the cluster registry.

    kctl image build ./site -t web:1      # a Dockerfile, built by buildah → the cluster registry (library/web:1)
    kctl image load redis.tar             # a docker save / OCI archive → the cluster registry
    kctl image list                       # what the cluster registry holds
    kctl run web --image=web:1 --port 80  # the nodes pull it from there

The build (provision/images/build.py: buildah, FROM the cluster registry) keeps
its result in the local OCI store too (provision/images/store.py), from which
`kctl image push` pushes again; pushes speak the distribution API
(provision/images/distribution.py); loads go through skopeo
(provision/images/transfer.py). A name without a registry is pushed to the
current cluster's registry (from kctl's kubeconfig context, the cluster `kctl
cluster up` made) or to `--registry HOST:PORT`, under docker.io's layout, so
the short name in a pod spec finds it. A local cluster's registry is read-only
to everyone; its push side takes the credentials in the cluster's PKI folder
(root's), which push uses, so only the cluster's admin pushes
(provision/images/registry.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from client import config as clientconfig
from kctl.errors import CliError
from kctl.printers import format_table
from provision import components, local
from provision.images import build as imagebuild
from provision.images import distribution, transfer
from provision.images import registry as image_registry
from provision.images.oci import parse_reference
from provision.images.store import ImageStore
from provision.provider import home, offline_default


def current_cluster_registry() -> str:
    """The registry of the local cluster kctl's kubeconfig points at (its current context is the cluster's name)."""
    path = clientconfig.default_path()
    try:
        context = (yaml.safe_load(path.read_text()) or {}).get("current-context", "")
    except OSError:
        context = ""
    cluster = components.cluster_of_context(context) or context  # before flotilla-<name>: the bare name
    state = local.load_state(cluster) if cluster else None
    if state is None:
        why = f"the current context {context!r} in {path} is not" if context else f"no context in {path} names"
        raise CliError(f"no --registry given, and {why} a local cluster (kctl cluster up makes one)")
    return state.registry


def _registry_for(name: str, registry: str) -> tuple[str, str, str]:
    """(registry, repository, tag) to push `name` to or pull it from."""
    try:
        ref = parse_reference(name)
    except ValueError as err:
        raise CliError(str(err)) from err
    if ref.registry and registry and ref.registry != registry:
        raise CliError(f"{name} names registry {ref.registry}, but --registry says {registry}")
    return ref.registry or registry or current_cluster_registry(), ref.repository, ref.tag


def push_target(registry: str) -> image_registry.PushTarget | None:
    """The push side and credentials when `registry` is a local cluster's (None: any other registry)."""
    for name in local.names():
        state = local.load_state(name)
        if state is not None and state.registry == registry:
            try:
                return image_registry.cluster_push_target(state.config_dir, state.registry)
            except PermissionError as err:
                raise CliError(f"cannot read the registry's push credentials {err.filename}: they are cluster "
                               f"{name}'s admin's (run as root)") from None
            except (OSError, ValueError) as err:
                raise CliError(f"cluster {name} has no registry push credentials ({err}): pushes are refused "
                               "without them") from None
    return None


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f}{unit}"
        n //= 1000
    return f"{n}GB"


@click.group("image")
def image() -> None:
    """Build images, push them to a cluster's registry, list the local ones."""


def _builder(registry: str) -> imagebuild.Builder:
    """buildah for `registry`: a local cluster's storage and offline setting, else $FLOTILLA_HOME's."""
    for name in local.names():
        state = local.load_state(name)
        if state is not None and state.registry == registry:
            return imagebuild.Builder(state.folder / "buildah", registry=registry, offline=state.offline)
    return imagebuild.Builder(home() / "buildah", registry=registry, offline=offline_default())


@image.command("build")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-t", "--tag", "name", required=True, help="NAME[:TAG] for the image (default tag: latest).")
@click.option("-f", "--file", "containerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The Dockerfile (default: DIRECTORY/Containerfile or Dockerfile).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="An ARG's value (repeatable).")
@click.option("--target", default="", help="The stage to build (default: the last).")
@click.option("--registry", default="", help="Where FROM images come from and the result goes "
                                             "(default: the current local cluster's registry).")
@click.option("--push/--no-push", default=True, show_default=True, help="Push the result to the registry.")
def build(directory: Path, name: str, containerfile: Path | None, build_args: tuple[str, ...], target: str,
          registry: str, push: bool) -> None:
    """Build DIRECTORY's Dockerfile with buildah, FROM the cluster registry, and push the result there."""
    try:
        ref = transfer.cluster_reference(name)
    except transfer.TransferError as err:
        raise CliError(str(err)) from err
    args = {}
    for pair in build_args:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CliError(f"--build-arg {pair!r}: want KEY=VALUE")
        args[key] = value
    where = registry or current_cluster_registry()
    builder = _builder(where)
    local_name = ref.familiar()
    try:
        builder.build(directory, local_name, containerfile=containerfile, build_args=args, target=target, echo=True)
        built = builder.export(local_name)
    except imagebuild.BuildError as err:
        raise CliError(f"building {name}: {err}") from err
    stored = ImageStore().save(local_name, built)
    click.echo(f"built {stored} {built.digest} ({len(built.layers)} layers, "
               f"{_size(sum(len(layer) for layer in built.layers))})")
    if not push:
        return
    try:
        result = distribution.push(built, registry=where, repository=ref.repository, tag=ref.tag,
                                   target=push_target(where))
    except distribution.RegistryError as err:
        raise CliError(str(err)) from err
    click.echo(f"pushed {result.reference} {result.digest} "
               f"({result.uploaded} blobs uploaded, {result.skipped} already there)")


@image.command("push")
@click.argument("name")
@click.option("--registry", default="", help="HOST:PORT (default: the current local cluster's registry).")
def push(name: str, registry: str) -> None:
    """Push image NAME from the local store to a registry (blobs it already has are skipped)."""
    store = ImageStore()
    try:
        built = store.load(name)
    except ValueError as err:
        raise CliError(str(err)) from err
    if built is None:
        raise CliError(f"image {name} is not in the local store {store.root}: kctl image build first")
    where, repository, tag = _registry_for(name, registry)
    try:
        result = distribution.push(built, registry=where, repository=repository, tag=tag, target=push_target(where))
    except distribution.RegistryError as err:
        raise CliError(str(err)) from err
    click.echo(f"pushed {result.reference} {result.digest} "
               f"({result.uploaded} blobs uploaded, {result.skipped} already there)")


def _registry_and_target(registry: str) -> tuple[str, image_registry.PushTarget | None]:
    """The registry to load into (--registry, else the current local cluster's) and its push side."""
    where = registry or current_cluster_registry()
    return where, push_target(where)


def _save_from(tool: str, name: str, into: Path) -> None:
    """`docker save` / `podman save` NAME into the archive `into`, saying plainly when the tool cannot."""
    binary = shutil.which(tool)
    if binary is None:
        raise CliError(f"--from-{tool}: {tool} is not installed on this machine")
    argv = [binary, "save", "-o", str(into), name]
    if tool == "podman":
        argv[2:2] = ["--format", "docker-archive"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        engine = " (is its engine running? the docker client is here, but no daemon answers)" \
            if tool == "docker" and ("daemon" in why or "docker.sock" in why) else ""
        raise CliError(f"{tool} save {name} failed{engine}: {why}")


@image.command("load")
@click.argument("archive", required=False)
@click.option("--registry", default="", help="HOST:PORT (default: the current local cluster's registry).")
@click.option("--from-docker", "from_docker", default="", metavar="NAME", help="Load image NAME from docker.")
@click.option("--from-podman", "from_podman", default="", metavar="NAME", help="Load image NAME from podman.")
def load(archive: str | None, registry: str, from_docker: str, from_podman: str) -> None:
    """Load every image and tag of ARCHIVE (`docker save` or OCI; - reads stdin) into the cluster registry."""
    sources = [s for s in (archive, from_docker, from_podman) if s]
    if len(sources) != 1:
        raise CliError("give exactly one of ARCHIVE (a docker save or OCI archive, - for stdin), "
                       "--from-docker NAME or --from-podman NAME")
    where, target = _registry_and_target(registry)
    with tempfile.TemporaryDirectory(prefix="kctl-load-") as tmp:
        path = Path(tmp) / "images.tar"
        if from_docker or from_podman:
            _save_from("docker" if from_docker else "podman", from_docker or from_podman, path)
        elif archive == "-":
            with path.open("wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out)
        else:
            path = Path(str(archive))
            if not path.is_file():
                raise CliError(f"{archive}: no such file")
        try:
            loaded = transfer.load(path, registry=where, target=target)
        except transfer.TransferError as err:
            raise CliError(str(err)) from err
    for name, stored in loaded:
        click.echo(f"loaded {name} as {stored}")


@image.command("list")
@click.option("--registry", default="", help="HOST:PORT (default: the current local cluster's registry).")
def list_images(registry: str) -> None:
    """The repositories and tags the cluster registry holds (what the nodes can pull)."""
    where = registry or current_cluster_registry()
    try:
        held = transfer.catalog(where)
    except transfer.TransferError as err:
        raise CliError(str(err)) from err
    rows = [["REPOSITORY", "TAG"]]
    rows += [[repository.removeprefix("library/"), tag] for repository, tag in held]
    click.echo("\n".join(format_table(rows)))
