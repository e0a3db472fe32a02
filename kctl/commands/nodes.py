"""`kctl cordon`, `uncordon`, `drain` and `taint`: taking nodes in and out of the scheduler's hands.

All four change a Node and let the scheduler react: cordon sets
spec.unschedulable (NodeUnschedulable then keeps new pods off), taint edits
spec.taints (TaintToleration reads them), and drain cordons, then evicts the
node's pods so their controllers recreate them elsewhere. They read the node,
change it, and write it back, re-reading on Conflict as kubectl's patches retry.

drain refuses, as kubectl does, to evict what nothing would recreate: pods
without a controller (unless --force), DaemonSet pods, which the DaemonSet
would put straight back (unless --ignore-daemonsets, which leaves them), and
pods with emptyDir data (unless --delete-emptydir-data). Mirror pods (static
pods, owned by their kubelet) and finished pods need no decision.

Each pod is evicted, not deleted: its PodDisruptionBudget must allow it. An
eviction the budget refuses (429 TooManyRequests) is tried again every 5 seconds,
as kubectl does, so a drain takes a budget's pods one at a time, each once the
replacement of the last is Ready; drain waits for each evicted pod to be gone.
The apiserver decides (its Evict call, the eviction subresource), so drain needs
only kubectl's rights: get and list pods, create pods/eviction, and change nodes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import click

from client import Client
from client.retry import update_fresh
from kctl import context
from kctl.errors import CliError
from proto import core_pb2, meta_pb2
from proto.errors import NotFound, TooManyRequests
from proto.wellknown import ANNOTATION_MIRROR_POD

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TERMINAL_PHASES = ("Succeeded", "Failed")
POLL_INTERVAL = 0.2
EVICTION_RETRY_INTERVAL = 5.0  # kubectl's pause after an eviction its budget refused


def node_names(args: tuple[str, ...]) -> list[str]:
    """`NAME...`, `node/NAME...` or `nodes NAME...` as node names."""
    names: list[str] = []
    rest = list(args)
    if rest and rest[0] in ("node", "nodes", "no"):
        rest = rest[1:]
    for arg in rest:
        kind, slash, name = arg.rpartition("/")
        if slash and kind not in ("node", "nodes", "no"):
            raise CliError(f"invalid resource type {kind}, only node types are supported")
        names.append(name)
    if not names:
        raise CliError("resource(s) were provided, but no name was specified")
    return names


# ---------------------------------------------------------------- cordon / uncordon


async def set_schedulable(client: Client, name: str, schedulable: bool) -> str:
    """The line kubectl prints: node/NAME (un)cordoned, or already so."""

    def change(node: core_pb2.Node) -> bool:
        if node.spec.unschedulable == (not schedulable):
            return False
        node.spec.unschedulable = not schedulable
        return True

    verb = "uncordoned" if schedulable else "cordoned"
    changed = await update_fresh(client, core_pb2.Node, name, "", change) is not None
    return f"node/{name} {verb}" if changed else f"node/{name} already {verb}"


def _cordon_command(name: str, schedulable: bool, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("nodes", nargs=-1, required=True)
    @context.global_options
    def command(nodes: tuple[str, ...]) -> None:
        names = node_names(nodes)

        async def body(client: Client) -> None:
            for node in names:
                click.echo(await set_schedulable(client, node, schedulable))

        context.run(body)

    return command


cordon = _cordon_command("cordon", False, "Mark nodes unschedulable: NODE...")
uncordon = _cordon_command("uncordon", True, "Mark nodes schedulable again: NODE...")


# ---------------------------------------------------------------- drain


@dataclass
class DrainPlan:
    """What drain would do with a node's pods: delete, leave, and why it refuses."""

    delete: list[core_pb2.Pod] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # warning -> pods
    errors: dict[str, list[str]] = field(default_factory=dict)  # what cannot be deleted -> pods

    def messages(self, table: dict[str, list[str]], lead: str) -> list[str]:
        return [f"{lead}{what}: {', '.join(pods)}" for what, pods in table.items()]


def controller_kind(pod: core_pb2.Pod) -> str:
    ref = next((r for r in pod.metadata.owner_references if r.controller), None)
    return ref.kind if ref is not None else ""


def plan_drain(pods: list[core_pb2.Pod], *, force: bool, ignore_daemonsets: bool,
               delete_emptydir_data: bool) -> DrainPlan:
    """kubectl's drain filters, in its order and with its words."""
    plan = DrainPlan()
    for pod in pods:
        ref = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if ANNOTATION_MIRROR_POD in pod.metadata.annotations:
            continue  # a static pod: only its kubelet can remove it
        if pod.status.phase in TERMINAL_PHASES:
            plan.delete.append(pod)
            continue
        owner = controller_kind(pod)
        if owner == "DaemonSet":
            if ignore_daemonsets:
                plan.warnings.setdefault("ignoring DaemonSet-managed Pods", []).append(ref)
            else:
                plan.errors.setdefault("DaemonSet-managed Pods (use --ignore-daemonsets to ignore)", []).append(ref)
            continue
        refused = False
        if not owner:
            if force:
                plan.warnings.setdefault("deleting Pods that declare no controller", []).append(ref)
            else:
                plan.errors.setdefault("Pods declare no controller (use --force to override)", []).append(ref)
                refused = True
        if any(v.HasField("empty_dir") for v in pod.spec.volumes):
            if delete_emptydir_data:
                plan.warnings.setdefault("deleting Pods with local storage", []).append(ref)
            else:
                plan.errors.setdefault("Pods with local storage (use --delete-emptydir-data to override)",
                                       []).append(ref)
                refused = True
        if not refused:
            plan.delete.append(pod)
    return plan


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


async def evict(client: Client, pod: core_pb2.Pod, grace_period: int, deadline: float | None,
                timeout: float) -> None:
    """Evict the pod, again after each refusal of its budget, then wait until it is gone (kubectl's evictPods).

    A replacement with the same name is a new uid, so it does not count as the pod still being there.
    """
    meta = pod.metadata
    where = f'pods/"{meta.name}" -n "{meta.namespace}"'
    options = meta_pb2.DeleteOptions()
    if grace_period >= 0:  # else the pod's own terminationGracePeriodSeconds
        options.grace_period_seconds = grace_period
    while True:
        click.echo(f"evicting pod {meta.namespace}/{meta.name}")
        left = _remaining(deadline)
        if left is not None and left <= 0:
            raise CliError(f"error when evicting {where}: global timeout reached: {timeout:g}s")
        try:
            await client.evict(meta.namespace, meta.name, delete_options=options)
            break
        except NotFound:
            return  # already gone: nothing to wait for
        except TooManyRequests as err:
            click.echo(f"error when evicting {where} (will retry after {EVICTION_RETRY_INTERVAL:g}s): {err}",
                       err=True)
            left = _remaining(deadline)
            await asyncio.sleep(EVICTION_RETRY_INTERVAL if left is None else max(min(EVICTION_RETRY_INTERVAL, left),
                                                                                 0))
    while True:
        try:
            current = await client.get(core_pb2.Pod, meta.name, meta.namespace)
        except NotFound:
            break
        if current.metadata.uid != meta.uid:
            break
        left = _remaining(deadline)
        if left is not None and left <= 0:
            raise CliError(f'error when waiting for pod "{meta.name}" in namespace "{meta.namespace}" to '
                           f"terminate: global timeout reached: {timeout:g}s")
        await asyncio.sleep(POLL_INTERVAL)
    click.echo(f"pod/{meta.name} evicted")


def _drain_failed(node: str, errors: list[str]) -> CliError:
    joined = ", ".join(errors)
    return CliError(f'unable to drain node "{node}" due to error: {joined}, continuing command...\n'
                    f"There are pending nodes to be drained:\n {node}\n" + "\n".join(errors))


async def evict_node_pods(client: Client, name: str, *, force: bool, ignore_daemonsets: bool,
                          delete_emptydir_data: bool, grace_period: int = -1, timeout: float = 0.0) -> None:
    """A drain's second half (the node is cordoned already): evict its pods as kubectl's safety checks allow.

    Every pod at once, as kubectl: a PodDisruptionBudget lets through what it allows, the rest retry.
    `kctl drain` and `kctl cluster remove-worker` both use it.
    """
    pods = (await client.list(core_pb2.Pod, field_selector=f"spec.nodeName={name}")).items
    plan = plan_drain(pods, force=force, ignore_daemonsets=ignore_daemonsets, delete_emptydir_data=delete_emptydir_data)
    if plan.errors:
        raise _drain_failed(name, plan.messages(plan.errors, "cannot delete "))
    for warning in plan.messages(plan.warnings, "Warning: "):
        click.echo(warning, err=True)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    outcomes = await asyncio.gather(*(evict(client, pod, grace_period, deadline, timeout) for pod in plan.delete),
                                    return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    unexpected = [o for o in failed if not isinstance(o, CliError)]
    if unexpected:
        raise unexpected[0]
    if failed:
        raise _drain_failed(name, [str(o) for o in failed])


@click.command("drain", help="Cordon NODE, then evict its pods (kubectl's safety checks apply).")
@click.argument("node")
@click.option("--force", is_flag=True, help="Also evict pods that no controller would recreate.")
@click.option("--ignore-daemonsets", is_flag=True, help="Leave DaemonSet-managed pods in place.")
@click.option("--delete-emptydir-data", is_flag=True, help="Also evict pods using emptyDir (data is lost).")
@click.option("--grace-period", type=int, default=-1, show_default=True,
              help="Seconds each pod gets to stop; -1 uses the pod's own terminationGracePeriodSeconds.")
@click.option("--timeout", type=float, default=0.0, help="Give up after this many seconds (0: wait forever).")
@context.global_options
def drain(node: str, force: bool, ignore_daemonsets: bool, delete_emptydir_data: bool, grace_period: int,
          timeout: float) -> None:
    [name] = node_names((node,))

    async def body(client: Client) -> None:
        click.echo(await set_schedulable(client, name, False))
        await evict_node_pods(client, name, force=force, ignore_daemonsets=ignore_daemonsets,
                              delete_emptydir_data=delete_emptydir_data, grace_period=grace_period, timeout=timeout)
        click.echo(f"node/{name} drained")

    context.run(body)


# ---------------------------------------------------------------- taint


@dataclass(frozen=True)
class TaintSpec:
    key: str
    value: str
    effect: str  # "" only in a removal: every effect

    def __str__(self) -> str:
        return f"{self.key}:{self.effect}" if self.effect else self.key


def parse_taint(spec: str) -> tuple[TaintSpec, bool]:
    """`key=value:Effect`, `key:Effect` to add; `key:Effect-`, `key-` to remove (second item True)."""
    remove = spec.endswith("-")
    body = spec[:-1] if remove else spec
    key_value, colon, effect = body.partition(":")
    key, _, value = key_value.partition("=")
    if not key or (not remove and not colon):
        raise CliError(f"invalid taint spec: {spec}")
    if effect and effect not in TAINT_EFFECTS:
        raise CliError(f"invalid taint effect: {effect}, unsupported taint effect")
    if colon and not effect:
        raise CliError(f"invalid taint spec: {spec}")
    return TaintSpec(key, value, effect), remove


def apply_taints(node: core_pb2.Node, adds: list[TaintSpec], removes: list[TaintSpec], overwrite: bool) -> bool:
    """Edit node.spec.taints in place; errors as kubectl words them."""
    taints = list(node.spec.taints)
    for spec in removes:
        kept = [t for t in taints if not (t.key == spec.key and (not spec.effect or t.effect == spec.effect))]
        if len(kept) == len(taints):
            raise CliError(f'taint "{spec}" not found')
        taints = kept
    for spec in adds:
        same = [t for t in taints if t.key == spec.key and t.effect == spec.effect]
        if same and not overwrite:
            raise CliError(f"node {node.metadata.name} already has {spec.key} taint(s) with same effect(s) "
                           "and --overwrite is false")
        taints = [t for t in taints if t not in same]
        taint = core_pb2.Taint(key=spec.key, value=spec.value, effect=spec.effect)
        if spec.effect == "NoExecute":
            taint.time_added.GetCurrentTime()  # when NoExecute started counting against tolerationSeconds
        taints.append(taint)
    if taints == list(node.spec.taints):
        return False
    del node.spec.taints[:]
    node.spec.taints.extend(taints)
    return True


@click.command("taint", help="Add (key=value:Effect) or remove (key:Effect-, key-) taints: nodes NAME SPEC...")
@click.argument("args", nargs=-1, required=True)
@click.option("--overwrite", is_flag=True, help="Replace a taint with the same key and effect.")
@context.global_options
def taint(args: tuple[str, ...], overwrite: bool) -> None:
    first = next((i for i, a in enumerate(args) if any(c in a for c in "=:") or a.endswith("-")), len(args))
    names = node_names(args[:first])
    adds: list[TaintSpec] = []
    removes: list[TaintSpec] = []
    for spec in args[first:]:
        parsed, remove = parse_taint(spec)
        (removes if remove else adds).append(parsed)
    if not adds and not removes:
        raise CliError("at least one taint update is required")
    verb = "modified" if adds and removes else ("tainted" if adds else "untainted")

    async def body(client: Client) -> None:
        for name in names:
            await update_fresh(client, core_pb2.Node, name, "",
                               lambda node: apply_taints(node, adds, removes, overwrite))
            click.echo(f"node/{name} {verb}")

    context.run(body)
