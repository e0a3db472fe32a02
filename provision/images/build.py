"""`kctl image build`: an OCI image from a root filesystem directory or a simple Containerfile.

Users add their own images to the cluster with `kctl image build DIR -t NAME`
then `kctl image push NAME`. A build runs nothing: there is no container
runtime on the user's side of the cluster, so only the Containerfile
instructions that describe files and settings are taken:

    FROM scratch | FROM <image>        (one stage; <image> from the local store or the cluster registry)
    COPY / ADD <src>... <dest>         (files and directories of the build context; ADD unpacks local tars)
    ENV, WORKDIR, CMD, ENTRYPOINT      (exec form ["a", "b"] or shell form, run by /bin/sh -c)
    EXPOSE, LABEL, USER

RUN (and ARG, VOLUME, HEALTHCHECK, SHELL, ...) is refused with the file, line
and instruction named. `$VARIABLE` references are not expanded. A DIR with no
Containerfile or Dockerfile is taken as the image's root filesystem, as is.

Builds are reproducible: each COPY/ADD makes one uncompressed layer whose tar
entries are sorted, owned by root, with mtime 0, and the config carries no
timestamps, so building the same inputs again gives the same digest (and a
push of an unchanged image uploads nothing).
"""

from __future__ import annotations

import copy
import io
import json
import posixpath
import shlex
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.images.oci import DEFAULT_ENV, Layer, OCIImage, make_image

CONTAINERFILES = ("Containerfile", "Dockerfile")
SUPPORTED = ("FROM", "COPY", "ADD", "ENV", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL", "USER")
# Docker's other instructions, each with why a build here cannot honour it.
REFUSED = {
    "RUN": "commands cannot run during a build here (no container runtime); prepare the files on the host and "
           "COPY them",
    "ARG": "build arguments are not supported",
    "VOLUME": "volumes come from the pod spec",
    "HEALTHCHECK": "use the pod's liveness and readiness probes",
    "ONBUILD": "triggers are not supported",
    "STOPSIGNAL": "not supported",
    "SHELL": "the shell form always runs /bin/sh -c",
    "MAINTAINER": "deprecated: use LABEL maintainer=...",
}
PROTOCOLS = ("tcp", "udp", "sctp")

BaseResolver = Callable[[str], OCIImage]


class BuildError(ValueError):
    """A Containerfile or build context problem; the message names the file and line."""


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str

    def __str__(self) -> str:
        return f"{self.keyword} {self.args}"


def parse(text: str, source: str = "Containerfile") -> list[Instruction]:
    """Instructions with the line each starts on; comments, blank lines and `\\` continuations handled."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (parser directives included) may sit between continued lines, as in Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        line = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword in REFUSED:
            raise BuildError(f"{source}:{start}: {keyword} is not supported: {REFUSED[keyword]}")
        if keyword not in SUPPORTED:
            raise BuildError(f"{source}:{start}: unknown instruction {keyword!r} "
                             f"(supported: {', '.join(SUPPORTED)})")
        if not args.strip():
            raise BuildError(f"{source}:{start}: {keyword} needs arguments")
        instructions.append(Instruction(start, keyword, args.strip()))
    if pending:
        raise BuildError(f"{source}:{start}: the file ends in a line continuation")
    return instructions


# ---------------------------------------------------------------- reproducible layers


def rootfs_layer(root: Path) -> bytes:
    layer = Layer()
    layer.add_tree(root, "")
    return layer.tar()


# ---------------------------------------------------------------- the build


@dataclass
class _Build:
    context: Path
    source: str
    resolve: BaseResolver
    layers: list[bytes] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=lambda: {"Env": list(DEFAULT_ENV)})
    history: list[dict[str, Any]] = field(default_factory=list)
    workdir: str = "/"
    cmd_inherited: bool = False

    def fail(self, step: Instruction, message: str) -> BuildError:
        return BuildError(f"{self.source}:{step.line}: {step.keyword}: {message}")

    def run(self, steps: list[Instruction]) -> OCIImage:
        if not steps or steps[0].keyword != "FROM":
            line = steps[0].line if steps else 1
            raise BuildError(f"{self.source}:{line}: the first instruction must be FROM (FROM scratch for none)")
        for step in steps:
            handler = getattr(self, f"do_{step.keyword.lower()}")
            layer = handler(step)
            self.history.append({"created_by": str(step), **({} if layer else {"empty_layer": True})})
        return make_image(self.layers, self.config, history=self.history)

    def do_from(self, step: Instruction) -> bool:
        if self.history:
            raise self.fail(step, "only one stage: multi-stage builds are not supported")
        words = step.args.split()
        if len(words) != 1:
            raise self.fail(step, f"want FROM <image> or FROM scratch, got {step.args!r}")
        if words[0] == "scratch":
            return False
        try:
            base = self.resolve(words[0])
        except (LookupError, ValueError, RuntimeError) as err:
            raise self.fail(step, str(err)) from err
        parsed = base.config_json
        self.layers = list(base.layers)
        self.config = copy.deepcopy(parsed.get("config", {}))
        self.history = list(parsed.get("history", []))
        self.cmd_inherited = "Cmd" in self.config
        self.workdir = self.config.get("WorkingDir") or "/"
        return False

    def _sources(self, step: Instruction) -> tuple[list[Path], str]:
        words = _words(step, self)
        if any(w.startswith("--") for w in words):
            raise self.fail(step, f"flags are not supported ({' '.join(w for w in words if w.startswith('--'))})")
        if len(words) < 2:
            raise self.fail(step, "want <src>... <dest>")
        *sources, dest = words
        root = self.context.resolve()
        found: list[Path] = []
        for src in sources:
            if "://" in src:
                raise self.fail(step, f"{src}: URLs are not supported (a build downloads nothing)")
            matches = sorted(root.glob(src.lstrip("/"))) if any(c in src for c in "*?[") else [root / src.lstrip("/")]
            for match in matches:
                resolved = match.resolve()
                if resolved != root and root not in resolved.parents:
                    raise self.fail(step, f"{src}: outside the build context {self.context}")
                if not resolved.exists():
                    raise self.fail(step, f"{src}: no such file or directory in the build context {self.context}")
                found.append(resolved)
            if not matches:
                raise self.fail(step, f"{src}: no file in the build context {self.context} matches")
        target = posixpath.normpath(posixpath.join(self.workdir, dest)).lstrip("/")
        if len(found) > 1 and not dest.endswith("/"):
            raise self.fail(step, f"with several sources the destination must be a directory ending in /: {dest}")
        return found, target + ("/" if dest.endswith("/") and target else "")

    def do_copy(self, step: Instruction, *, unpack: bool = False) -> bool:
        sources, dest = self._sources(step)
        layer = Layer()
        for src in sources:
            into_dir = dest.endswith("/") or dest == ""
            base = dest.rstrip("/")
            if unpack and src.is_file() and tarfile.is_tarfile(src):
                layer.add_archive(src, base)
            elif src.is_dir():
                layer.add_tree(src, base)
            else:
                layer.add_tree(src, posixpath.join(base, src.name) if into_dir else base)
        self.layers.append(layer.tar())
        return True

    def do_add(self, step: Instruction) -> bool:
        return self.do_copy(step, unpack=True)

    def do_env(self, step: Instruction) -> bool:
        words = _words(step, self)
        if "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
            key, _, value = step.args.partition(" ")
            pairs = [(key, value.strip())]
        else:
            pairs = [_pair(step, self, w) for w in words]
        env = [e for e in self.config.get("Env", []) if e.split("=", 1)[0] not in {k for k, _ in pairs}]
        self.config["Env"] = env + [f"{k}={v}" for k, v in pairs]
        return False

    def do_workdir(self, step: Instruction) -> bool:
        self.workdir = posixpath.normpath(posixpath.join(self.workdir, step.args))
        self.config["WorkingDir"] = self.workdir
        return False

    def do_cmd(self, step: Instruction) -> bool:
        self.config["Cmd"] = _command(step, self)
        self.cmd_inherited = False
        return False

    def do_entrypoint(self, step: Instruction) -> bool:
        self.config["Entrypoint"] = _command(step, self)
        if self.cmd_inherited:
            self.config.pop("Cmd", None)  # as Docker does: a new entrypoint drops the base image's CMD
        return False

    def do_expose(self, step: Instruction) -> bool:
        ports = self.config.setdefault("ExposedPorts", {})
        for word in step.args.split():
            port, _, proto = word.partition("/")
            proto = proto.lower() or "tcp"
            if not port.isdigit() or not 0 < int(port) < 65536 or proto not in PROTOCOLS:
                raise self.fail(step, f"{word}: want PORT or PORT/tcp|udp|sctp")
            ports[f"{int(port)}/{proto}"] = {}
        return False

    def do_label(self, step: Instruction) -> bool:
        labels = self.config.setdefault("Labels", {})
        labels.update(_pair(step, self, w) for w in _words(step, self))
        return False

    def do_user(self, step: Instruction) -> bool:
        if len(step.args.split()) != 1:
            raise self.fail(step, f"want USER <user>[:<group>], got {step.args!r}")
        self.config["User"] = step.args
        return False


def _words(step: Instruction, build: _Build) -> list[str]:
    try:
        return shlex.split(step.args)
    except ValueError as err:
        raise build.fail(step, f"cannot split {step.args!r}: {err}") from err


def _pair(step: Instruction, build: _Build, word: str) -> tuple[str, str]:
    key, eq, value = word.partition("=")
    if not eq or not key:
        raise build.fail(step, f"{word!r}: want KEY=VALUE")
    return key, value


def _command(step: Instruction, build: _Build) -> list[str]:
    """Exec form `["a", "b"]` as is; shell form `a b` as /bin/sh -c "a b"."""
    if step.args.startswith("["):
        try:
            parsed = json.loads(step.args)
        except json.JSONDecodeError as err:
            raise build.fail(step, f"exec form is not a JSON array of strings: {err}") from err
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise build.fail(step, "exec form must be a JSON array of strings")
        return parsed
    return ["/bin/sh", "-c", step.args]


def find_containerfile(context: Path) -> Path | None:
    for name in CONTAINERFILES:
        if (context / name).is_file():
            return context / name
    return None


def build(context: Path, *, resolve: BaseResolver, containerfile: Path | None = None) -> OCIImage:
    """Build from `containerfile` (default: the context's Containerfile or Dockerfile), or the context as a rootfs."""
    if not context.is_dir():
        raise BuildError(f"{context}: not a directory")
    containerfile = containerfile or find_containerfile(context)
    if containerfile is None:
        return make_image([rootfs_layer(context)], {"Env": list(DEFAULT_ENV)},
                          history=[{"created_by": f"rootfs {context.name}"}])
    steps = parse(containerfile.read_text(), containerfile.name)
    return _Build(context, containerfile.name, resolve).run(steps)


def layer_paths(image: OCIImage) -> Iterator[str]:
    """Every path in the image's layers, lowest layer first."""
    for layer in image.layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            yield from tar.getnames()
