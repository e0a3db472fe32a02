"""The scheduling framework: the extension points a plugin implements, and one decision.

This is kube-scheduler's framework (`framework/interface.go`) in Python. A
scheduling cycle for one pod walks the extension points in order:

    PreFilter → Filter → (PostFilter if no node fits) → Score → NormalizeScore
    → pick the best node → Reserve → [the cache assumes the pod] → Bind

Each extension point is a `typing.Protocol` below whose docstring is its
contract. One difference from Kubernetes, made for speed and stated here once:
Filter and Score are called once per pod with the whole `NodeTable` and answer
for every node at once (a numpy vector), not once per node. A plugin still
decides about one node at a time in meaning; it just writes that as vector
operations, or loops in Python over the few nodes that need it (tainted nodes,
say) and caches what does not change between decisions.

`Framework.schedule` is pure: (PodInfo, NodeTable) in, a node name or a
`FitError` out, no I/O — the scheduler loop (`scheduler.py`) does the
queueing, assuming and binding around it.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from controlplane.scheduler.nodeinfo import MAX_NODE_SCORE, NodeTable, PodInfo, Vector

if TYPE_CHECKING:
    from client import Client, InformerFactory



class Code(enum.Enum):
    SUCCESS = "Success"
    ERROR = "Error"  # something broke: retry the pod with back-off
    UNSCHEDULABLE = "Unschedulable"  # no fit now; may fit after the cluster changes
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"  # preempting others would not help
    SKIP = "Skip"  # PreFilter: this plugin's Filter has nothing to check for this pod


@dataclass(frozen=True)
class Status:
    """A plugin's answer: a code, and reasons a human can read."""

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def success(self) -> bool:
        return self.code in (Code.SUCCESS, Code.SKIP)

    def message(self) -> str:
        return ", ".join(self.reasons)


SUCCESS = Status()


@dataclass
class Handle:
    """What a plugin's constructor may use from the scheduler running it (kube's framework.Handle)."""

    client: Client | None = None
    # The scheduler's shared informers: a plugin that reads API objects besides pods and nodes
    # (VolumeBinding: claims, volumes, classes) adds its informers here before the scheduler starts.
    factory: InformerFactory | None = None
    # Put every parked pod back in line: a plugin's objects changed in a way that may make one fit.
    requeue: Callable[[], None] | None = None


class CycleState(dict[str, Any]):
    """Per-decision scratch space: what a plugin's PreFilter computes for its Filter and Score."""


@dataclass
class FilterResult:
    """Filter's answer for every node: `unfit[i] == 0` means node i fits.

    Otherwise bit b of `unfit[i]` set means `reasons[b]` applies to node i (a node
    short of both cpu and memory has two reasons, as in kube-scheduler). None for
    `unfit` means every node fits.
    """

    unfit: Vector | None
    reasons: Sequence[str] = ()

    @classmethod
    def fits_all(cls) -> FilterResult:
        return cls(None)

    @classmethod
    def from_mask(cls, fits: Vector, reason: str) -> FilterResult:
        return cls(np.where(fits, 0, 1).astype(np.int64), (reason,))


# ---------------------------------------------------------------- extension points


@runtime_checkable
class Plugin(Protocol):
    """Every plugin has a name, which the config and the error messages use."""

    name: str


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> Status:
        """Check the pod itself, and compute what Filter and Score will share.

        SUCCESS carries on; SKIP skips this plugin's Filter for this pod; any other
        code ends the cycle with the pod unschedulable for the status's reasons.
        """


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        """Which nodes can run the pod, and why not for the others.

        Must not change the table. The framework ANDs every Filter's answer; a node
        failing several filters is reported under the first one that failed it.
        """


@runtime_checkable
class PostFilterPlugin(Plugin, Protocol):
    def post_filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable, diagnosis: Diagnosis) -> Status:
        """Called only when no node fits (kube's preemption lives here).

        SUCCESS means the plugin made room (for a later attempt); anything else
        leaves the pod unschedulable.
        """


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        """A raw score for every node (only entries where `feasible` is True are read).

        None means the plugin has no preference for this pod: it is left out of the sum.
        """

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        """Map the raw scores of feasible nodes into [0, MAX_NODE_SCORE]; the weight applies after."""


@runtime_checkable
class ReservePlugin(Plugin, Protocol):
    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        """Claim per-node state for the pod before the Binding is sent; failure aborts the bind."""

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        """Undo `reserve` (the bind failed or a later Reserve refused); must be idempotent."""


@runtime_checkable
class BindPlugin(Plugin, Protocol):
    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        """Make the decision real; SKIP passes it to the next Bind plugin, ERROR unreserves and retries."""


# ---------------------------------------------------------------- outcomes


@dataclass
class Diagnosis:
    """Why no node fits: how many nodes each reason ruled out (the first failing filter's reasons)."""

    reasons: Counter[str] = field(default_factory=Counter)
    pre_filter_message: str = ""


class FitError(Exception):
    """No node can run the pod; its text is kube-scheduler's FailedScheduling message."""

    def __init__(self, pod: PodInfo, num_nodes: int, diagnosis: Diagnosis) -> None:
        self.pod = pod
        self.num_nodes = num_nodes
        self.diagnosis = diagnosis
        super().__init__(self.message())

    def message(self) -> str:
        # kube-scheduler's FitError.Error(): "count reason" pairs sorted as strings.
        text = f"0/{self.num_nodes} nodes are available:"
        if self.num_nodes == 0:
            return "no nodes available to schedule pods"  # kube-scheduler's ErrNoNodesAvailable
        if self.diagnosis.pre_filter_message:
            return f"{text} {self.diagnosis.pre_filter_message}."
        histogram = sorted(f"{count} {reason}" for reason, count in self.diagnosis.reasons.items())
        return f"{text} {', '.join(histogram)}."


@dataclass(frozen=True)
class Weighted:
    plugin: ScorePlugin
    weight: int


# ---------------------------------------------------------------- the framework


class Framework:
    """One profile's plugins in extension-point order, and the decision they make together."""

    def __init__(self, *, scheduler_name: str, plugins: Sequence[Plugin], weights: dict[str, int],
                 seed: int | None = None) -> None:
        self.scheduler_name = scheduler_name
        self.plugins = list(plugins)
        self.pre_filters = [p for p in plugins if isinstance(p, PreFilterPlugin)]
        self.filters = [p for p in plugins if isinstance(p, FilterPlugin)]
        self.post_filters = [p for p in plugins if isinstance(p, PostFilterPlugin)]
        self.scorers = [Weighted(p, weights.get(p.name, 1)) for p in plugins
                        if isinstance(p, ScorePlugin) and weights.get(p.name, 1) > 0]
        self.reservers = [p for p in plugins if isinstance(p, ReservePlugin)]
        self.binders = [p for p in plugins if isinstance(p, BindPlugin)]
        # Ties are broken at random, as kube-scheduler's selectHost does, so equally good
        # nodes share the load instead of the first one taking everything.
        self._random = random.Random(seed)

    # ---------------------------------------------------------------- the pure decision

    def schedule(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> str:
        """The node to run `pod` on; raises FitError when none can."""
        n = len(nodes)
        if n == 0:
            raise FitError(pod, 0, Diagnosis())
        skipped: set[str] = set()
        for pre in self.pre_filters:
            status = pre.pre_filter(state, pod, nodes)
            if status.code == Code.SKIP:
                skipped.add(pre.name)
            elif not status.success:
                raise FitError(pod, n, Diagnosis(pre_filter_message=status.message()))
        results: list[FilterResult] = []
        feasible = np.ones(n, dtype=bool)
        for plugin in self.filters:
            if plugin.name in skipped:
                continue
            result = plugin.filter(state, pod, nodes)
            if result.unfit is not None:
                feasible &= result.unfit == 0
                results.append(result)
        candidates = np.flatnonzero(feasible)
        if candidates.size == 0:
            diagnosis = self.diagnose(results, n)
            for post in self.post_filters:
                post.post_filter(state, pod, nodes, diagnosis)
            raise FitError(pod, n, diagnosis)
        if candidates.size == 1 or not self.scorers:
            return nodes.names[int(candidates[self._random.randrange(candidates.size)])]
        total = self.score(state, pod, nodes, feasible)
        best = total[candidates]
        winners = candidates[best == best.max()]
        return nodes.names[int(winners[self._random.randrange(winners.size)])]

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector:
        """The weighted sum of every Score plugin's normalised scores, per node."""
        total = np.zeros(len(nodes), dtype=np.float64)
        for weighted in self.scorers:
            raw = weighted.plugin.score(state, pod, nodes, feasible)
            if raw is None:
                continue
            normalized = weighted.plugin.normalize_score(state, pod, raw, feasible)
            total += weighted.weight * normalized
        return total

    @staticmethod
    def diagnose(results: Sequence[FilterResult], n: int) -> Diagnosis:
        """Count each node under the reasons of the first filter that ruled it out."""
        diagnosis = Diagnosis()
        undecided = np.ones(n, dtype=bool)
        for result in results:
            assert result.unfit is not None
            failed = undecided & (result.unfit != 0)
            for bit, reason in enumerate(result.reasons):
                count = int(np.count_nonzero(failed & ((result.unfit >> bit) & 1).astype(bool)))
                if count:
                    diagnosis.reasons[reason] += count
            undecided &= ~failed
        return diagnosis

    # ---------------------------------------------------------------- after the decision

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        for i, plugin in enumerate(self.reservers):
            status = plugin.reserve(state, pod, node_name)
            if not status.success:
                for done in reversed(self.reservers[: i + 1]):
                    done.unreserve(state, pod, node_name)
                return Status(status.code, status.reasons, plugin.name)
        return SUCCESS

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in reversed(self.reservers):
            plugin.unreserve(state, pod, node_name)

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        for plugin in self.binders:
            status = await plugin.bind(state, pod, node_name)
            if status.code != Code.SKIP:
                return Status(status.code, status.reasons, plugin.name)
        return Status(Code.ERROR, ("no Bind plugin bound the pod",))


# ---------------------------------------------------------------- helpers for plugins


def default_normalize(scores: Vector, feasible: Vector, *, reverse: bool = False) -> Vector:
    """kube's DefaultNormalizeScore: scale so the best feasible node scores MAX_NODE_SCORE.

    With `reverse`, fewer is better (TaintToleration counts taints it dislikes).
    """
    top = float(scores[feasible].max()) if feasible.any() else 0.0
    if top <= 0:
        return np.full(scores.shape, MAX_NODE_SCORE if reverse else 0, dtype=np.float64)
    scaled = scores * (MAX_NODE_SCORE / top)
    return MAX_NODE_SCORE - scaled if reverse else scaled


def min_max_normalize(scores: Vector, feasible: Vector, *, reverse: bool = False) -> Vector:
    """Spread the feasible nodes' scores over [0, MAX_NODE_SCORE]: the best gets 100, the worst 0.

    With `reverse`, the lowest raw score is the best. All equal: every node gets 100.
    """
    if not feasible.any():
        return scores
    low, high = float(scores[feasible].min()), float(scores[feasible].max())
    if high == low:
        return np.full(scores.shape, float(MAX_NODE_SCORE))
    return ((high - scores) if reverse else (scores - low)) * (MAX_NODE_SCORE / (high - low))
