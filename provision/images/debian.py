"""The `debian:bookworm-slim` base and the in-cluster Python client image, from this machine's Debian packages.

There is no internet here, and `FROM debian:bookworm-slim` is how most
Dockerfiles start, so `cluster up` makes that image from the Debian packages
installed on this (bookworm) machine, as debootstrap would lay them out: every
package of priority `required` (and every Essential one) plus apt, with the
packages they depend on, each package's files as `dpkg -L` lists them
(documentation, man pages and translations left out, as the slim image does),
the dpkg database for exactly those packages (so `apt-get install` in a RUN
step knows what is there), the alternatives their maintainer scripts made
(`awk` → mawk), and the accounts of base-passwd. Files keep their owners and
modes; times are zero and entries sorted, so the same packages give the same
digest.

`flotilla/python-client` is that base plus a layer with Debian's python3 (and
what it depends on) and, in /usr/local/lib/python3.11/dist-packages, the
`kubernetes` Python client with its dependencies copied from this
installation's own site-packages (the same CPython 3.11 ABI), so a pod can run
`python3 -c 'from kubernetes import client, config; config.load_incluster_config()'`
against its cluster. Tests of ServiceAccounts, webhooks and CRDs use it.

`flotilla/kopf` is the python client image plus one layer: kopf (the Python
operator framework) and what it needs beyond the client (aiohttp and its
compiled helpers, click, iso8601, jsonpatch, python-json-logger), copied the
same way, so an operator runs in a pod as `python3 -m kopf run --standalone
--namespace=<ns> /op/operator.py` with its ServiceAccount. A layer of its own
keeps the python client image lean (aiohttp is 7 MB) while the nodes store
python3 and the client once.

Both layers are cached under /var/cache/flotilla/images by the hash of their
recipe (this module's version and every package's name and version), so only
the first `cluster up` after a package changes spends time making them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

from provision.images.oci import DEFAULT_ENV, OCIImage, make_image

RECIPE_VERSION = "2"
CACHE = Path("/var/cache/flotilla/images")
DEBIAN_TAGS = ("library/debian:bookworm-slim", "library/debian:bookworm", "library/debian:12-slim")
PYTHON_CLIENT_REPOSITORY = "flotilla/python-client"
KOPF_REPOSITORY = "flotilla/kopf"
PYTHON_ROOTS = ("python3",)
SLIM_EXTRAS = ("apt",)
# Left out as the slim image does: documentation, manuals, translations.
EXCLUDED = re.compile(r"^usr/share/(doc|man|info|locale|lintian|linda)/")
DIST_PACKAGES = "usr/local/lib/python3.11/dist-packages"
# The client's asyncio variant (kubernetes.aio, 41 MB) and what only it needs: `import kubernetes` loads none.
ASYNC_ONLY = frozenset({"aiohttp", "aiohttp-retry"})
ASYNC_TREE = "kubernetes/aio/"
MERGED_USR = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
DIRECTORIES = {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700, "run": 0o755, "proc": 0o555, "sys": 0o555,
               "dev": 0o755, "home": 0o755, "srv": 0o755, "mnt": 0o755, "opt": 0o755}


class Packages:
    """The installed Debian packages of this machine: versions, priorities and dependencies (from dpkg)."""

    def __init__(self) -> None:
        fields = "${Package}\t${Version}\t${Priority}\t${Essential}\t${Pre-Depends}\t${Depends}\t${Status}\n"
        out = subprocess.run(["dpkg-query", "-W", "-f", fields], capture_output=True, text=True, check=True).stdout
        self.version: dict[str, str] = {}
        self.depends: dict[str, list[list[str]]] = {}
        self.base: list[str] = []
        for line in out.splitlines():
            name, version, priority, essential, pre, deps, status = line.split("\t")
            if not status.endswith(" installed"):
                continue
            self.version[name] = version
            self.depends[name] = [[alt.split()[0].split(":")[0] for alt in group.split("|")]
                                  for group in f"{pre},{deps}".split(",") if group.strip()]
            if priority == "required" or essential == "yes":
                self.base.append(name)

    def closure(self, roots: Iterable[str], *, without: frozenset[str] = frozenset()) -> list[str]:
        """`roots` and everything they depend on (the installed choice of each `a | b`), less `without`."""
        seen: set[str] = set()
        todo = [r for r in roots if r in self.version]
        while todo:
            name = todo.pop()
            if name in seen or name in without:
                continue
            seen.add(name)
            for group in self.depends.get(name, []):
                chosen = next((alt for alt in group if alt in self.version), None)
                if chosen is not None:
                    todo.append(chosen)
        return sorted(seen)

    def recipe(self, packages: list[str]) -> str:
        return ",".join(f"{p}={self.version[p]}" for p in packages)


def _info_files(package: str) -> list[Path]:
    info = Path("/var/lib/dpkg/info")
    return sorted(info.glob(f"{package}.*")) + sorted(info.glob(f"{package}:*.*"))


def _listed_paths(package: str) -> list[str]:
    for listing in (Path(f"/var/lib/dpkg/info/{package}.list"), *Path("/var/lib/dpkg/info").glob(f"{package}:*.list")):
        if listing.exists():
            return [line for line in listing.read_text().splitlines() if line and line != "/."]
    return []


def _canonical(path: str) -> str | None:
    """`path` as it is on this merged-/usr machine (/bin/sh → usr/bin/sh), relative; None if it is not there."""
    parent, name = os.path.split(path)
    real = os.path.join(os.path.realpath(parent), name)
    return real.lstrip("/") if os.path.lexists(real) else None


class RootfsWriter:
    """A layer tar of host paths: sorted, owners and modes kept, mtime 0; parents before children."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add_host_path(self, relative: str) -> None:
        if relative in self.entries or EXCLUDED.match(relative):
            return
        self._parents(relative)
        source = "/" + relative
        st = os.lstat(source)
        info = tarfile.TarInfo(relative)
        info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0
        data = None
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(source)
        elif stat.S_ISREG(st.st_mode):
            data = Path(source).read_bytes()
            info.size = len(data)
        else:
            return  # devices and sockets: the runtime makes /dev
        self.entries[relative] = (info, data)

    def add_file(self, relative: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(relative)
        info = tarfile.TarInfo(relative)
        info.mode, info.size, info.mtime = mode, len(data), 0
        self.entries[relative] = (info, data)

    def add_symlink(self, relative: str, target: str) -> None:
        self._parents(relative)
        info = tarfile.TarInfo(relative)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
        self.entries[relative] = (info, None)

    def add_dir(self, relative: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(relative)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
        self.entries.setdefault(relative, (info, None))

    def _parents(self, relative: str) -> None:
        parent = os.path.dirname(relative)
        if parent and parent not in self.entries:
            if os.path.isdir("/" + parent) and not os.path.islink("/" + parent):
                self.add_host_path(parent)
            else:
                self.add_dir(parent)

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


def _add_packages(layer: RootfsWriter, packages: list[str]) -> None:
    for package in packages:
        for path in _listed_paths(package):
            canonical = _canonical(path)
            if canonical:
                layer.add_host_path(canonical)
        for info in _info_files(package):
            layer.add_host_path(str(info).lstrip("/"))
    _add_alternatives(layer)


def _add_alternatives(layer: RootfsWriter) -> None:
    """The alternatives (`awk` → mawk) whose chosen program the layer holds."""
    for state in sorted(Path("/var/lib/dpkg/alternatives").glob("*")):
        lines = state.read_text().splitlines()
        chosen = Path("/etc/alternatives") / state.name
        if len(lines) < 2 or not chosen.is_symlink():
            continue
        target = _canonical(os.readlink(chosen))
        master = _canonical(lines[1])
        if target and target in layer.entries and master:
            layer.add_host_path(str(state).lstrip("/"))
            layer.add_host_path(str(chosen).lstrip("/"))
            layer.add_host_path(master)


def _dpkg_status(packages: list[str]) -> bytes:
    """The host's dpkg status stanzas of exactly `packages`."""
    wanted, kept = set(packages), []
    for stanza in Path("/var/lib/dpkg/status").read_text().split("\n\n"):
        match = re.search(r"^Package: (\S+)", stanza, re.MULTILINE)
        if match and match.group(1) in wanted:
            kept.append(stanza.strip("\n"))
    return ("\n\n".join(kept) + "\n").encode()


def _accounts(layer: RootfsWriter) -> None:
    """/etc/passwd, group, shadow, gshadow as base-passwd's postinst makes them from its masters."""
    masters = Path("/usr/share/base-passwd")
    # The masters' password fields are `*`; update-passwd moves them to shadow and writes `x`.
    passwd = re.sub(rb"^([^:\n]*):\*:", rb"\1:x:", (masters / "passwd.master").read_bytes(), flags=re.MULTILINE)
    group = re.sub(rb"^([^:\n]*):\*:", rb"\1:x:", (masters / "group.master").read_bytes(), flags=re.MULTILINE)
    layer.add_file("etc/passwd", passwd)
    layer.add_file("etc/group", group)
    users = [line.split(b":")[0] for line in passwd.splitlines() if line]
    groups = [line.split(b":")[0] for line in group.splitlines() if line]
    layer.add_file("etc/shadow", b"".join(u + b":*:19000:0:99999:7:::\n" for u in users), 0o640)
    layer.add_file("etc/gshadow", b"".join(g + b":*::\n" for g in groups), 0o640)


def _cached(kind: str, recipe: str, make: Callable[[], bytes]) -> bytes:
    """The layer for `recipe`, from the cache or made (and cached when the cache is writable)."""
    key = hashlib.sha256(f"{RECIPE_VERSION}\n{kind}\n{recipe}".encode()).hexdigest()[:24]
    path = CACHE / f"{kind}-{key}.tar"
    if path.exists():
        return path.read_bytes()
    data = make()
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)
        for stale in CACHE.glob(f"{kind}-*.tar"):  # an older recipe's layer is never read again
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # not root: made again next time
    return data


def debian_layer(packages: Packages) -> tuple[bytes, list[str]]:
    """The slim rootfs layer and the packages it holds."""
    chosen = packages.closure([*packages.base, *SLIM_EXTRAS])

    def make() -> bytes:
        layer = RootfsWriter()
        for name in MERGED_USR:
            if os.path.islink(f"/{name}"):
                layer.add_symlink(name, os.readlink(f"/{name}"))
        for directory, mode in DIRECTORIES.items():
            layer.add_dir(directory, mode)
        _add_packages(layer, chosen)
        _accounts(layer)
        layer.add_file("var/lib/dpkg/status", _dpkg_status(chosen))
        for empty in ("var/lib/dpkg/available", "var/lib/dpkg/diversions", "var/lib/dpkg/statoverride"):
            layer.add_file(empty, b"")
        return layer.tar()

    return _cached("debian", packages.recipe(chosen), make), chosen


def python_dists(root: str = "kubernetes", *, without: frozenset[str] = ASYNC_ONLY,
                 ) -> list[importlib.metadata.Distribution]:
    """`root` and the distributions it requires (extras and other platforms' markers left out), less
    `without` (by default the asyncio-only ones, which the kubernetes client does not load)."""
    from packaging.requirements import Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen or name in without:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [seen[n] for n in sorted(seen)]


def python_layer(packages: Packages, base: list[str]) -> tuple[bytes, str]:
    """Debian's python3 (less what the base has) and the kubernetes client: (layer, the client's version)."""
    chosen = packages.closure(PYTHON_ROOTS, without=frozenset(base))
    dists = python_dists()
    client_version = next(d.version for d in dists if d.metadata["Name"].lower() == "kubernetes")
    recipe = packages.recipe(chosen) + ";" + _dists_recipe(dists)

    def make() -> bytes:
        layer = RootfsWriter()
        _add_packages(layer, chosen)
        _add_dists(layer, dists)
        # The base's status lists its own packages; this layer's status lists both (a layer replaces the file).
        layer.add_file("var/lib/dpkg/status", _dpkg_status([*base, *chosen]))
        return layer.tar()

    return _cached("python", recipe, make), client_version


def kopf_layer() -> tuple[bytes, str]:
    """kopf and the distributions it needs that the python client layer does not hold: (layer, kopf's
    version)."""
    client = frozenset(d.metadata["Name"].lower() for d in python_dists())
    dists = python_dists("kopf", without=client)
    version = next(d.version for d in dists if d.metadata["Name"].lower() == "kopf")

    def make() -> bytes:
        layer = RootfsWriter()
        _add_dists(layer, dists)
        return layer.tar()

    return _cached("kopf", _dists_recipe(dists), make), version


def _dists_recipe(dists: list[importlib.metadata.Distribution]) -> str:
    return ",".join(f"{d.metadata['Name']}={d.version}" for d in dists)


def _add_dists(layer: RootfsWriter, dists: list[importlib.metadata.Distribution]) -> None:
    """The distributions' files under site-packages, as pip laid them out in this venv."""
    for dist in dists:
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if (file.parts[0] == ".." or "__pycache__" in file.parts or str(file).startswith(ASYNC_TREE)
                    or not source.is_file()):
                continue  # scripts outside site-packages, bytecode (python3 writes its own), kubernetes.aio
            layer.add_file(f"{DIST_PACKAGES}/{file}", source.read_bytes(), 0o644)


def debian_images() -> dict[str, OCIImage]:
    """`debian:bookworm-slim` (and its other tags), `flotilla/python-client:<client version>` and `:latest` and
    `flotilla/kopf:<kopf version>` and `:latest`, by the name nodes pull them as (docker.io's paths, served by
    the cluster registry)."""
    packages = Packages()
    base_layer, base = debian_layer(packages)
    made_by = "flotilla: Debian packages of this machine (provision/images/debian.py)"
    digests: dict[int, str] = {}  # the layers below are alive all along: their ids stay theirs
    debian = make_image([base_layer], {"Cmd": ["bash"], "Env": DEFAULT_ENV}, history=[{"created_by": made_by}],
                        digests=digests)
    images = dict.fromkeys(DEBIAN_TAGS, debian)
    python, version = python_layer(packages, base)
    client = make_image([base_layer, python], {"Cmd": ["python3"], "Env": DEFAULT_ENV},
                        history=[{"created_by": "flotilla: debian:bookworm-slim"},
                                 {"created_by": f"flotilla: python3 and the kubernetes client {version}"}],
                        digests=digests)
    images[f"{PYTHON_CLIENT_REPOSITORY}:{version}"] = client
    images[f"{PYTHON_CLIENT_REPOSITORY}:latest"] = client
    kopf, kopf_version = kopf_layer()
    operator = make_image([base_layer, python, kopf], {"Cmd": ["python3", "-m", "kopf"], "Env": DEFAULT_ENV},
                          history=[{"created_by": "flotilla: debian:bookworm-slim"},
                                   {"created_by": f"flotilla: python3 and the kubernetes client {version}"},
                                   {"created_by": f"flotilla: kopf {kopf_version} and aiohttp"}],
                          digests=digests)
    images[f"{KOPF_REPOSITORY}:{kopf_version}"] = operator
    images[f"{KOPF_REPOSITORY}:latest"] = operator
    return images


if __name__ == "__main__":  # python -m provision.images.debian: build and say what (sizes, time)
    import time

    started = time.monotonic()
    for tag, image in debian_images().items():
        print(tag, image.digest, [len(layer) for layer in image.layers], file=sys.stderr)
    print(f"{time.monotonic() - started:.1f}s", file=sys.stderr)
