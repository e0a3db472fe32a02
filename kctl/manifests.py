"""Reading manifests for `apply -f`, `create -f` and `delete -f`: files, directories, stdin.

Every document (YAML `---` documents, JSON, and the items of a `kind: List`) is
parsed with proto.manifest.from_dict before anything is written, so a single
typo (an unknown field, `cpu: abc`, YAML that does not parse) stops the whole
command and stores nothing. Each failure names its file, document and field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.message import Message

from kctl.errors import CliError
from proto import kinds, manifest
from proto.errors import ApiError, NotFound

EXTENSIONS = (".yaml", ".yml", ".json")
STDIN = "-"


class InvalidManifests(CliError):
    """One or more documents failed to parse; one line per document."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\nerror: ".join(problems))
        self.problems = problems


@dataclass
class Document:
    """One object from a manifest file, parsed and placed in its namespace."""

    source: str  # the file as the user named it, or "STDIN"
    index: int  # 1-based document number within the file
    item: int | None  # position in a `kind: List`, if it came from one
    kind: kinds.Kind
    obj: Message

    @property
    def where(self) -> str:
        return _where(self.source, self.index, self.item)

    @property
    def name(self) -> str:
        return str(self.obj.metadata.name)  # type: ignore[attr-defined]

    @property
    def namespace(self) -> str:
        return str(self.obj.metadata.namespace)  # type: ignore[attr-defined]


def _where(source: str, index: int, item: int | None) -> str:
    """`"web.yaml" (document 2)`, or `(document 1, items[3])` inside a List."""
    inner = f", items[{item}]" if item is not None else ""
    return f'"{source}" (document {index}{inner})'


def load(filenames: tuple[str, ...] | list[str], *, namespace: str, explicit_namespace: bool,
         verb: str = "apply", recursive: bool = False, require_name: bool = True,
         custom_objects: list[dict[str, Any]] | None = None) -> list[Document]:
    """Every object in the named files, validated; raises InvalidManifests listing each bad one.

    With `custom_objects`, documents of kinds the kinds table does not know (a CRD's) are put there,
    as written, instead of being refused: kctl/custom.py applies them over the HTTP API.
    """
    docs: list[Document] = []
    problems: list[str] = []
    for source, text in _read(filenames, recursive):
        try:
            raw = list(_documents(source, text))
        except CliError as exc:
            problems.append(str(exc))
            continue
        for index, item, data in raw:
            try:
                docs.append(_parse(source, index, item, data, namespace, explicit_namespace, require_name))
            except NotFound as exc:
                if custom_objects is not None and str(exc).startswith("no matches for kind"):
                    custom_objects.append(data)
                    continue
                problems.append(f"error validating {_where(source, index, item)}: {exc}")
            except (ApiError, CliError) as exc:
                problems.append(f"error validating {_where(source, index, item)}: {exc}")
    if problems:
        raise InvalidManifests(problems)
    if not docs and not custom_objects:
        raise CliError(f"no objects passed to {verb}" if filenames else "must specify -f")
    return docs


def _read(filenames: tuple[str, ...] | list[str], recursive: bool) -> Iterator[tuple[str, str]]:
    for name in filenames:
        if name == STDIN:
            yield "STDIN", sys.stdin.read()
            continue
        path = Path(name)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for file in sorted(p for p in path.glob(pattern) if p.suffix in EXTENSIONS and p.is_file()):
                yield str(file), _text(str(file), file)
        elif path.exists():
            yield name, _text(name, path)
        else:
            raise CliError(f'the path "{name}" does not exist')


def _text(source: str, path: Path) -> str:
    """A manifest file's text; one that is not UTF-8 is an error naming the file, not a traceback."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"error parsing {source}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} "
                       f"at offset {exc.start})") from None


def _documents(source: str, text: str) -> Iterator[tuple[int, int | None, Any]]:
    """(document number, List item or None, data) for every object in one file."""
    if source.endswith(".json"):
        try:
            docs: list[Any] = [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise CliError(f"error parsing {source}: line {exc.lineno}: {exc.msg}") from None
        except RecursionError:
            raise CliError(f"error parsing {source}: nested too deeply") from None
    else:
        try:
            docs = [d for d in yaml.safe_load_all(text)]
        except yaml.YAMLError as exc:
            raise CliError(f"error parsing {source}: {_yaml_problem(exc)}") from None
        except RecursionError:  # PyYAML's composer recurses once per level of nesting
            raise CliError(f"error parsing {source}: yaml: nested too deeply") from None
    number = 0
    for data in docs:
        if data is None:
            continue  # an empty document, e.g. after a trailing `---`
        number += 1
        if isinstance(data, dict) and str(data.get("kind", "")).endswith("List") and "items" in data:
            items = data.get("items") or []
            if not isinstance(items, list):
                raise CliError(f"error parsing {source}: document {number}: items must be a list")
            for i, item in enumerate(items):
                yield number, i, item
        else:
            yield number, None, data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`line 4: mapping values are not allowed here`: the line and the problem, on one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"yaml: {where}{' '.join(str(problem).split())}"


def _parse(source: str, index: int, item: int | None, data: Any, namespace: str,
           explicit_namespace: bool, require_name: bool) -> Document:
    obj = manifest.from_dict(data)
    kind = kinds.for_message(obj)
    meta = obj.metadata  # type: ignore[attr-defined]
    if require_name and not meta.name:
        raise CliError(f'{kind.kind} is invalid: metadata.name: Required value')
    if kind.namespaced:
        if meta.namespace and explicit_namespace and meta.namespace != namespace:
            raise CliError(f'the namespace from the provided object "{meta.namespace}" does not match the '
                           f'namespace "{namespace}". You must pass \'--namespace={meta.namespace}\' to '
                           "perform this operation.")
        meta.namespace = meta.namespace or namespace
    else:
        meta.namespace = ""
    return Document(source, index, item, kind, obj)
