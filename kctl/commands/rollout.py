"""`kctl rollout status|history|undo|pause|resume|restart` for Deployments, DaemonSets and StatefulSets.

kubectl asks a per-kind "viewer" or "rollbacker" for each verb, and so does
this module (`ROLLOUTS`): each kind says how its rollout status reads, where
its history lives and how an old revision comes back.

- A Deployment's history is its ReplicaSets (`deployment.kubernetes.io/revision`);
  undo copies the old ReplicaSet's template back into the Deployment, and the
  Deployment controller scales that ReplicaSet up again as the newest revision.
- A DaemonSet's or StatefulSet's history is its ControllerRevisions
  (controlplane/controllers/history.py): undo writes the revision's template back,
  and the controller renumbers that revision as the newest and rolls the pods to it.

Messages are kubectl's (`daemon set "x" successfully rolled out`,
`deployment.apps/web rolled back`). The async functions take a Client, so
tests and scripts call them without a command line.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click

from client import Client
from client.retry import update_fresh
from controlplane.controllers import history
from controlplane.controllers.deployment import templates_equal
from kctl import context, printers, resources
from kctl.errors import CliError
from proto import apps_pb2, core_pb2, kinds, manifest
from proto.wellknown import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_RESTARTED_AT,
    ANNOTATION_REVISION,
    LABEL_POD_TEMPLATE_HASH,
    revision_of,
)

# ---------------------------------------------------------------- naming what to roll


def target(args: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[kinds.Kind, str]:
    """`TYPE NAME` or `TYPE/NAME` as (kind, name), refusing kinds the verb does not handle."""
    if len(args) == 1 and "/" in args[0]:
        type_name, _, name = args[0].partition("/")
    elif len(args) == 2:
        type_name, name = args
    else:
        raise CliError("expected TYPE NAME or TYPE/NAME")
    kind = resources.resolve(type_name)
    if kind.kind not in allowed:
        raise CliError(f'no {kind.resource} "{name}" can be handled here: expected one of '
                       f'{", ".join(k.lower() for k in allowed)}')
    return kind, name


def _owned(obj: Any, candidates: list[Any]) -> list[Any]:
    uid = obj.metadata.uid
    return [c for c in candidates if any(r.uid == uid and r.controller for r in c.metadata.owner_references)]


@dataclass(frozen=True)
class Revision:
    """One entry of a workload's history, however the kind stores it."""

    number: int
    change_cause: str
    template: core_pb2.PodTemplateSpec


# ---------------------------------------------------------------- Deployment


async def owned_replicasets(client: Client, d: apps_pb2.Deployment) -> list[apps_pb2.ReplicaSet]:
    return _owned(d, list((await client.list(apps_pb2.ReplicaSet, d.metadata.namespace)).items))


def _without_hash(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    """The deployment template a ReplicaSet was made from (the controller adds the hash label)."""
    copy = core_pb2.PodTemplateSpec()
    copy.CopyFrom(template)
    copy.metadata.labels.pop(LABEL_POD_TEMPLATE_HASH, None)
    return copy


async def deployment_status(client: Client, name: str, namespace: str) -> tuple[str, bool]:
    """kubectl's DeploymentStatusViewer: the status message now, and whether the rollout is done."""
    d = await client.get(apps_pb2.Deployment, name, namespace)
    s = d.status
    if d.metadata.generation > s.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    progressing = next((c for c in s.conditions if c.type == "Progressing"), None)
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        raise CliError(f'deployment "{name}" exceeded its progress deadline')
    want = d.spec.replicas
    if s.updated_replicas < want:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.updated_replicas} out of {want} '
                "new replicas have been updated..."), False
    if s.replicas > s.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.replicas - s.updated_replicas} old '
                "replicas are pending termination..."), False
    if s.available_replicas < s.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {s.available_replicas} of '
                f"{s.updated_replicas} updated replicas are available..."), False
    return f'deployment "{name}" successfully rolled out', True


async def deployment_history(client: Client, name: str, namespace: str) -> tuple[Any, list[Revision]]:
    d = await client.get(apps_pb2.Deployment, name, namespace)
    return d, sorted((Revision(revision_of(rs), rs.metadata.annotations.get(ANNOTATION_CHANGE_CAUSE, ""),
                               _without_hash(rs.spec.template)) for rs in await owned_replicasets(client, d)),
                     key=lambda r: r.number)


def deployment_current(d: apps_pb2.Deployment, revisions: list[Revision]) -> int:
    return int(d.metadata.annotations.get(ANNOTATION_REVISION, "0") or 0)


def _refuse_paused(d: Any) -> None:
    if d.spec.paused:
        raise CliError(f"you cannot rollback a paused deployment; resume it first with "
                       f"'kctl rollout resume deployment/{d.metadata.name}' and try again")


# ---------------------------------------------------------------- DaemonSet


async def daemon_set_status(client: Client, name: str, namespace: str) -> tuple[str, bool]:
    """kubectl's DaemonSetStatusViewer."""
    ds = await client.get(apps_pb2.DaemonSet, name, namespace)
    if ds.spec.update_strategy.type != "RollingUpdate":
        raise CliError("rollout status is only available for RollingUpdate strategy type")
    s = ds.status
    if ds.metadata.generation > s.observed_generation:
        return "Waiting for daemon set spec update to be observed...", False
    if s.updated_number_scheduled < s.desired_number_scheduled:
        return (f'Waiting for daemon set "{name}" rollout to finish: {s.updated_number_scheduled} out of '
                f"{s.desired_number_scheduled} new pods have been updated..."), False
    if s.number_available < s.desired_number_scheduled:
        return (f'Waiting for daemon set "{name}" rollout to finish: {s.number_available} of '
                f"{s.desired_number_scheduled} updated pods are available..."), False
    return f'daemon set "{name}" successfully rolled out', True


def revision_history(cls: type[Any]) -> Callable[[Client, str, str], Awaitable[tuple[Any, list[Revision]]]]:
    """The history viewer of a kind that keeps ControllerRevisions (DaemonSet, StatefulSet)."""

    async def viewer(client: Client, name: str, namespace: str) -> tuple[Any, list[Revision]]:
        obj = await client.get(cls, name, namespace)
        revisions = []
        for cr in _owned(obj, list((await client.list(apps_pb2.ControllerRevision, namespace)).items)):
            template = history.template_of(cr)
            if template is not None:
                revisions.append(Revision(int(cr.revision), cr.metadata.annotations.get(ANNOTATION_CHANGE_CAUSE, ""),
                                          template))
        return obj, sorted(revisions, key=lambda r: r.number)

    return viewer


def newest_revision(obj: Any, revisions: list[Revision]) -> int:
    """The highest revision is the current template's (the controller renumbers on rollback)."""
    return max((r.number for r in revisions), default=0)


# ---------------------------------------------------------------- StatefulSet


async def stateful_set_status(client: Client, name: str, namespace: str) -> tuple[str, bool]:
    """kubectl's StatefulSetStatusViewer: a partition's rollout is done once the pods above it are updated."""
    sts = await client.get(apps_pb2.StatefulSet, name, namespace)
    if sts.spec.update_strategy.type != "RollingUpdate":
        raise CliError("rollout status is only available for RollingUpdate strategy type")
    s = sts.status
    if s.observed_generation == 0 or sts.metadata.generation > s.observed_generation:
        return "Waiting for statefulset spec update to be observed...", False
    if s.ready_replicas < sts.spec.replicas:
        return f"Waiting for {sts.spec.replicas - s.ready_replicas} pods to be ready...", False
    if sts.spec.update_strategy.HasField("rolling_update"):
        partition = sts.spec.update_strategy.rolling_update.partition
        if s.updated_replicas < sts.spec.replicas - partition:
            return (f"Waiting for partitioned roll out to finish: {s.updated_replicas} out of "
                    f"{sts.spec.replicas - partition} new pods have been updated..."), False
        return f"partitioned roll out complete: {s.updated_replicas} new pods have been updated...", True
    if s.update_revision != s.current_revision:
        return (f"waiting for statefulset rolling update to complete {s.updated_replicas} pods at revision "
                f"{s.update_revision}..."), False
    return (f"statefulset rolling update complete {s.current_replicas} pods at revision "
            f"{s.current_revision}..."), True


# ---------------------------------------------------------------- the per-kind table


@dataclass(frozen=True)
class Rollout:
    status: Callable[[Client, str, str], Awaitable[tuple[str, bool]]]
    history: Callable[[Client, str, str], Awaitable[tuple[Any, list[Revision]]]]
    current: Callable[[Any, list[Revision]], int]
    before_undo: Callable[[Any], None] = lambda _obj: None


ROLLOUTS: dict[str, Rollout] = {
    "Deployment": Rollout(deployment_status, deployment_history, deployment_current, _refuse_paused),
    "DaemonSet": Rollout(daemon_set_status, revision_history(apps_pb2.DaemonSet), newest_revision),
    "StatefulSet": Rollout(stateful_set_status, revision_history(apps_pb2.StatefulSet), newest_revision),
}
ROLLING_KINDS = tuple(ROLLOUTS)


async def rollout_status_line(client: Client, name: str, namespace: str, *,
                              kind: str = "Deployment") -> tuple[str, bool]:
    """kubectl's status message for the workload now, and whether its rollout is done."""
    return await ROLLOUTS[kind].status(client, name, namespace)


async def rollout_undo(client: Client, name: str, namespace: str, *, to_revision: int = 0,
                       kind: str = "Deployment") -> str:
    """Copy revision `to_revision` (0: the one before the current) back into the workload; kubectl's message."""
    found = kinds.for_kind("", kind)
    rollout = ROLLOUTS[kind]
    obj, revisions = await rollout.history(client, name, namespace)
    ref = resources.object_ref(found, name)
    if to_revision:
        chosen = next((r for r in revisions if r.number == to_revision), None)
        if chosen is None:
            raise CliError(f"unable to find specified revision {to_revision} in history")
    else:
        current = rollout.current(obj, revisions)
        older = [r for r in revisions if r.number < current] if current else revisions[:-1]
        if not older:
            raise CliError(f'no rollout history found for {found.singular} "{name}"')
        chosen = older[-1]
    if templates_equal(chosen.template, obj.spec.template):
        return f"{ref} skipped rollback (current template already matches revision {chosen.number})"

    def change(fresh: Any) -> bool:
        rollout.before_undo(fresh)
        fresh.spec.template.CopyFrom(chosen.template)
        return True

    await update_fresh(client, found.message, name, namespace, change)
    return f"{ref} rolled back"


# ---------------------------------------------------------------- commands


@click.group("rollout")
def rollout() -> None:
    """Manage the rollout of a deployment, daemon set or stateful set: status, history, undo, pause, resume,
    restart."""


def _workload_args(f: Any) -> Any:
    return click.argument("args", nargs=-1, required=True)(f)


@rollout.command("status")
@_workload_args
@click.option("-w", "--watch", default=True, type=bool, help="Watch until the rollout finishes.")
@click.option("--timeout", default=0.0, type=float, help="Seconds to wait (0: for ever).")
@context.global_options
def rollout_status(args: tuple[str, ...], watch: bool, timeout: float) -> None:
    """Show the status of a rollout, waiting until it finishes."""
    kind, name = target(args, ROLLING_KINDS)
    namespace = context.settings().current_namespace

    async def body(client: Client) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        last = ""
        while True:
            line, done = await rollout_status_line(client, name, namespace, kind=kind.kind)
            if line != last:
                click.echo(line)
                last = line
            if done or not watch:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise CliError("timed out waiting for the condition")
            await asyncio.sleep(0.5)

    context.run(body)


@rollout.command("history")
@_workload_args
@click.option("--revision", default=0, type=int, help="Show the pod template of this revision.")
@context.global_options
def rollout_history(args: tuple[str, ...], revision: int) -> None:
    """List the revisions of a deployment, daemon set or stateful set (or show one with --revision)."""
    kind, name = target(args, ROLLING_KINDS)
    namespace = context.settings().current_namespace
    ref = resources.object_ref(kind, name)

    async def body(client: Client) -> None:
        _obj, revisions = await ROLLOUTS[kind.kind].history(client, name, namespace)
        if revision:
            chosen = next((r for r in revisions if r.number == revision), None)
            if chosen is None:
                raise CliError(f"unable to find the specified revision {revision}")
            click.echo(f"{ref} with revision #{revision}")
            click.echo(printers.to_yaml({"Pod Template": manifest.to_dict(chosen.template)}))
            return
        click.echo(f"{ref} ")
        rows = [["REVISION", "CHANGE-CAUSE"]] + [[str(r.number), r.change_cause or "<none>"] for r in revisions]
        click.echo("\n".join(printers.format_table(rows, gap=2)))

    context.run(body)


@rollout.command("undo")
@_workload_args
@click.option("--to-revision", default=0, type=int, help="The revision to roll back to (0: the previous).")
@context.global_options
def rollout_undo_command(args: tuple[str, ...], to_revision: int) -> None:
    """Roll back to a previous revision."""
    kind, name = target(args, ROLLING_KINDS)
    namespace = context.settings().current_namespace
    click.echo(context.run(lambda client: rollout_undo(client, name, namespace, to_revision=to_revision,
                                                       kind=kind.kind)))


def _pause_command(verb: str, paused: bool) -> click.Command:
    @click.command(verb)
    @_workload_args
    @context.global_options
    def command(args: tuple[str, ...]) -> None:
        # Only Deployments pause: a DaemonSet's rollout has no such switch (kubectl refuses it too).
        _, name = target(args, ("Deployment",))
        namespace = context.settings().current_namespace

        def change(d: apps_pb2.Deployment) -> bool:
            if d.spec.paused == paused:
                raise CliError(f'deployments.apps "{name}" is {"already" if paused else "not"} paused')
            d.spec.paused = paused
            return True

        async def body(client: Client) -> None:
            await update_fresh(client, apps_pb2.Deployment, name, namespace, change)
            click.echo(f"deployment.apps/{name} {verb}d")

        context.run(body)

    command.help = f"{verb.capitalize()} a deployment's rollout."
    return command


rollout.add_command(_pause_command("pause", True))
rollout.add_command(_pause_command("resume", False))


@rollout.command("restart")
@_workload_args
@context.global_options
def rollout_restart(args: tuple[str, ...]) -> None:
    """Restart every pod of a deployment, daemon set or stateful set, by a rolling update (a new template
    annotation)."""
    kind, name = target(args, ROLLING_KINDS)
    namespace = context.settings().current_namespace
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = resources.object_ref(kind, name)

    def change(obj: Any) -> bool:
        if kind.kind == "Deployment" and obj.spec.paused:
            raise CliError(f"can't restart paused deployment (run rollout resume first): {ref}")
        obj.spec.template.metadata.annotations[ANNOTATION_RESTARTED_AT] = stamp
        return True

    async def body(client: Client) -> None:
        await update_fresh(client, kind.message, name, namespace, change)
        click.echo(f"{ref} restarted")

    context.run(body)
