"""`kctl wait`: block until objects meet a condition, reach a field value, or are deleted (kubectl wait).

    kctl wait (TYPE NAME... | TYPE/NAME... | -f FILE | TYPE -l SELECTOR | TYPE --all)
              --for=condition=Ready[=true|false] | --for=delete | --for=create
              | --for=jsonpath='{.status.phase}'[=Running]  [--timeout=30s] [-n NS]

What to wait for (`--for`) is parsed before any request, and a bad one is refused
with kubectl's message. Each object is then waited on in turn, as kubectl does, all
under one deadline: a list with `metadata.name=<name>` gives its state and a
resourceVersion, and a watch from there delivers every change until the condition
holds (a watch that ends is resumed by listing again). kubectl's lines are printed
as each object is done (`pod/web condition met`, `pod/web deleted`); failures are
gathered and printed at the end (`error: timed out waiting for the condition on
pods/web`), exit code 1.

As in kubectl: a condition on an object that does not exist, or that disappears
while waited on, is `Error from server (NotFound): pods "x" not found`, but
`--for=delete` counts an object already gone as deleted (and prints nothing for
it); a selector that matches nothing is an error unless waiting for deletion;
`--timeout=0` checks once, a negative timeout waits for a week. Conditions are
`status.conditions[]` entries matched by type and status with Unicode case folding,
and one whose observedGeneration is older than the object's generation does not
count yet. A jsonpath must lead to one value, which is compared as text; with no
`=VALUE`, any value it finds will do.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import click
from google.protobuf.message import Message
from jsonpath_ng.ext import parse as parse_jsonpath

from client import Client
from kctl import context, printers, resources
from kctl.commands.apply import load_manifests
from kctl.errors import CliError, message
from proto import kinds
from proto.duration import DurationError, parse_duration
from proto.errors import ApiError, Gone, NotFound, Unavailable

DEFAULT_TIMEOUT = 30.0
WEEK = 7 * 24 * 3600.0  # what a negative --timeout means
TIMED_OUT = "timed out waiting for the condition"


# ---------------------------------------------------------------- what --for asks


class Condition(Protocol):
    """One kind of --for: whether an object's current state (None = it does not exist) meets it."""

    @property
    def done(self) -> str:
        """What kubectl prints after the object's name once it is met."""

    def met(self, obj: dict[str, Any] | None) -> bool:
        """True when met; CliError when the state can never be judged (a jsonpath to a list)."""


@dataclass(frozen=True)
class Deleted:
    done: str = "deleted"

    def met(self, obj: dict[str, Any] | None) -> bool:
        return obj is None


@dataclass(frozen=True)
class Created:
    done: str = "condition met"

    def met(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None


@dataclass(frozen=True)
class StatusCondition:
    """`condition=Ready[=true]`: a status.conditions entry of that type with that status."""

    type: str
    status: str = "true"
    done: str = "condition met"

    def met(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        for condition in status.get("conditions") or []:
            if condition.get("type", "").casefold() != self.type.casefold() or "status" not in condition:
                continue
            # A condition written for an older spec says nothing about the current one.
            observed = condition.get("observedGeneration", status.get("observedGeneration"))
            if generation is not None and observed is not None and int(observed) < int(generation):
                return False
            return bool(condition["status"].casefold() == self.status.casefold())
        return False


@dataclass(frozen=True)
class JSONPathValue:
    """`jsonpath={.status.phase}=Running`, or without `=VALUE`: the path finds any value."""

    expression: str
    value: str | None
    done: str = "condition met"

    def met(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        found = [m.value for m in _compile(self.expression).find(obj)]
        if not found:
            return False
        if len(found) > 1:
            raise CliError("given jsonpath expression matches more than one value")
        if self.value is None:
            return True
        if isinstance(found[0], dict | list):
            raise CliError("jsonpath leads to a nested object or list which is not supported")
        return _as_text(found[0]).strip() == self.value.strip()


def _as_text(value: Any) -> str:
    """A JSON scalar as Go's %v prints it (kubectl compares that text)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    return json.dumps(value)  # true/false, 3, 2.5


# kubectl's RelaxedJSONPathExpression: `{.a.b}`, `{a.b}`, `.a.b` and `a.b` all mean `.a.b`.
_RELAXED = re.compile(r"^\{\.?([^{}]+)\}$|^\.?([^{}]+)$")


def _compile(expression: str) -> Any:
    try:
        return parse_jsonpath("$." + expression)
    except Exception as exc:  # jsonpath-ng's lexer and parser raise plain Exception as well as their own
        raise CliError(f"cannot parse jsonpath {{.{expression}}}: {exc}") from None


def _split_jsonpath(text: str) -> list[str]:
    """Split on single `=`; `==` (a filter's comparison) stays inside a piece, as in kubectl."""
    pieces, current, i = [], "", 0
    while i < len(text):
        if text.startswith("==", i):
            current, i = current + "==", i + 2
        elif text[i] == "=":
            pieces.append(current)
            current, i = "", i + 1
        else:
            current, i = current + text[i], i + 1
    return [*pieces, current]


def parse_for(text: str) -> Condition:
    """The --for flag as a Condition; CliError with kubectl's message if it is not one."""
    if text.lower() == "delete":
        return Deleted()
    if text.lower() == "create":
        return Created()
    if text.startswith("condition="):
        name, _, status = text.removeprefix("condition=").partition("=")
        return StatusCondition(name, status or "true")
    if text.startswith("jsonpath="):
        pieces = _split_jsonpath(text.removeprefix("jsonpath="))
        if len(pieces) > 2:
            raise CliError("jsonpath wait format must be --for=jsonpath='{.status.readyReplicas}'=3 "
                           "or --for=jsonpath='{.status.readyReplicas}'")
        if not pieces[0]:
            raise CliError("jsonpath expression cannot be empty")
        relaxed = _RELAXED.match(pieces[0])
        if relaxed is None:
            raise CliError("unexpected path string, expected a 'name1.name2' or '.name1.name2' "
                           "or '{name1.name2}' or '{.name1.name2}'")
        expression = relaxed.group(1) or relaxed.group(2)
        _compile(expression)
        if len(pieces) == 1:
            return JSONPathValue(expression, None)
        value = pieces[1].strip("'\"")
        if not value:
            raise CliError("jsonpath wait has to have a value after equal sign, "
                           "like --for=jsonpath='{.status.readyReplicas}'=3")
        return JSONPathValue(expression, value)
    raise CliError(f'unrecognized condition: "{text}"')


def parse_timeout(text: str) -> float:
    """--timeout as a Go duration (30s, 1m30s, 0); negative means a week, as in kubectl."""
    negative = text.startswith("-")
    try:
        seconds = parse_duration(text.removeprefix("-"))
    except DurationError as exc:
        raise click.BadParameter(str(exc)) from None
    return WEEK if negative and seconds else seconds


# ---------------------------------------------------------------- which objects


@dataclass(frozen=True)
class Target:
    kind: kinds.Kind
    name: str
    namespace: str

    @property
    def ref(self) -> str:
        return resources.object_ref(self.kind, self.name)

    def timed_out(self) -> CliError:
        return CliError(f"{TIMED_OUT} on {self.kind.resource}/{self.name}")


async def exists(client: Client, target: Target) -> bool:
    try:
        await client.get(target.kind.message, target.name, target.namespace)
    except NotFound:
        return False
    return True


async def selected(client: Client, requests: list[resources.Request], namespace: str,
                   selector: str) -> list[Target]:
    """Every object of the requested kinds that the selector (or --all) lists."""
    targets: list[Target] = []
    for request in requests:
        found = await client.list(request.kind.message, namespace if request.kind.namespaced else "",
                                  label_selector=selector)
        targets += [Target(request.kind, o.metadata.name, o.metadata.namespace)  # type: ignore[attr-defined]
                    for o in found.items]
    return targets


# ---------------------------------------------------------------- waiting on one object


def _not_found(target: Target) -> NotFound:
    return NotFound(f'{target.kind.qualified_resource} "{target.name}" not found')


def _judge(target: Target, condition: Condition, obj: Message | None) -> bool:
    if obj is None and not isinstance(condition, Deleted | Created):
        raise _not_found(target)  # gone while we waited for a condition on it: it never will
    return condition.met(None if obj is None else printers.as_dict(obj))


async def wait_for(client: Client, target: Target, condition: Condition) -> None:
    """Return once `target` meets `condition`: list it by name, then watch it from that version."""
    cls = target.kind.message
    by_name = f"metadata.name={target.name}"
    while True:
        listed = await client.list(cls, target.namespace, field_selector=by_name)
        if _judge(target, condition, listed.items[0] if listed.items else None):
            return
        try:
            async for event in client.watch(cls, target.namespace, field_selector=by_name,
                                            resource_version=listed.resource_version):
                if event.object is None:
                    continue  # a bookmark
                if _judge(target, condition, None if event.type == "DELETED" else event.object):
                    return
        except Gone:
            pass  # our version was compacted away: list afresh
        except Unavailable as exc:
            if context.unreachable(exc):
                raise
        await asyncio.sleep(0.2)  # the stream ended (GOAWAY, apiserver restart): list again without spinning


async def check_once(client: Client, target: Target, condition: Condition) -> None:
    """--timeout=0: one look, no waiting."""
    try:
        obj: Message | None = await client.get(target.kind.message, target.name, target.namespace)
    except NotFound:
        if not isinstance(condition, Deleted):
            raise
        obj = None
    if not _judge(target, condition, obj):
        raise CliError(f"condition not met for {target.kind.resource}/{target.name}")


# ---------------------------------------------------------------- the command


@click.command("wait")
@click.argument("args", nargs=-1)
@click.option("--for", "for_", default="", metavar="CONDITION",
              help="delete | create | condition=NAME[=VALUE] (VALUE defaults to true) | "
                   "jsonpath='{EXPRESSION}'[=VALUE].")
@click.option("--timeout", "timeout", default="30s", callback=lambda _c, _p, v: parse_timeout(v),
              help="How long to wait (a duration: 30s, 5m); 0 checks once, negative waits for a week.")
@click.option("-f", "--filename", "filenames", multiple=True, help="Wait on the objects in these manifests.")
@click.option("-R", "--recursive", is_flag=True, help="Also read the directories inside -f DIR.")
@click.option("-l", "--selector", default="", help="Wait on every object of TYPE matching this selector.")
@click.option("--all", "all_", is_flag=True, help="Wait on every object of TYPE in the namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="With -l or --all: look in every namespace.")
@context.global_options
def wait(args: tuple[str, ...], for_: str, timeout: float, filenames: tuple[str, ...], recursive: bool,
         selector: str, all_: bool, all_namespaces: bool) -> None:
    """Wait for a condition on one or many objects, or for their deletion."""
    condition = parse_for(for_)
    requests: list[resources.Request] = []
    namespace = ""
    if filenames:
        if args:
            raise CliError("resource/name arguments cannot be provided when a path is specified")
        named = [Target(d.kind, d.name, d.namespace if d.kind.namespaced else "")
                 for d in load_manifests(filenames, recursive, "wait")]
    else:
        if not args:
            raise CliError("you must provide one or more resources by argument or filename")
        requests = resources.parse_requests(args)
        by_name = any(r.names for r in requests)
        if by_name and (selector or all_):
            raise CliError("selectors and the all flag cannot be used when passing resource/name arguments")
        if not by_name and not (selector or all_):
            raise CliError("resource(s) were provided, but no name was specified")
        namespace = "" if all_namespaces and not by_name else context.settings().current_namespace
        named = [Target(r.kind, name, namespace if r.kind.namespaced else "") for r in requests for name in r.names]
    deadline = time.monotonic() + timeout
    errors: list[BaseException] = []

    async def body(client: Client) -> None:
        targets = named or await selected(client, requests, namespace, selector)
        if not targets and not isinstance(condition, Deleted):
            raise CliError("no matching resources found")
        for target in targets:
            try:
                # A named object must exist, unless we wait for its creation; one already
                # deleted is done before we start, and kubectl prints nothing for it.
                if named and not isinstance(condition, Created) and not await exists(client, target):
                    if isinstance(condition, Deleted):
                        continue
                    raise _not_found(target)
                if timeout == 0:
                    await check_once(client, target, condition)
                else:
                    # One deadline for all: an object waited on late gets what time is left.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        await wait_for(client, target, condition)
            except TimeoutError:
                errors.append(CliError(TIMED_OUT) if isinstance(condition, Created) else target.timed_out())
                continue
            except (ApiError, CliError) as exc:
                errors.append(exc)
                continue
            click.echo(f"{target.ref} {condition.done}")

    context.run(body)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        # kubectl prints several failures one per line, without the `error: ` lead.
        for exc in errors:
            click.echo(message(exc) if isinstance(exc, ApiError) else str(exc), err=True)
        raise click.exceptions.Exit(1)
