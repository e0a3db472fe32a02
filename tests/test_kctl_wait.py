"""`kctl wait`, as a script drives it: block until a pod is Ready, gone, or Running, then go on.

Against the real apiserver (no kubelet: the test itself writes what a kubelet
would, through the status subresource), kctl runs in a worker thread while the
test changes the objects it waits on: the Ready condition, the phase, deletion.
Lines and failures are kubectl's (`pod/web condition met`, `pod/web deleted`,
`error: timed out waiting for the condition on pods/web`, `Error from server
(NotFound): pods "x" not found`), and a bad --for is refused before any wait.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from client import Client
from kctl.commands.wait import JSONPathValue, StatusCondition, parse_for
from kctl.errors import CliError
from kctl.main import cli
from proto import apps_pb2, core_pb2
from provision.processes import ApiServer

Kctl = Callable[..., Result]


@pytest.fixture
def kctl(apiserver: ApiServer, tmp_path: Path) -> Kctl:
    """`kctl -s <apiserver> ARGS...` in-process (CliRunner); call it through asyncio.to_thread to wait."""
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["-s", apiserver.address, *args], env={"KCTL_CONFIG": str(tmp_path / "none")})
    return run


def pod(name: str, namespace: str, **labels: str) -> core_pb2.Pod:
    obj = core_pb2.Pod(api_version="v1", kind="Pod")
    obj.metadata.name, obj.metadata.namespace = name, namespace
    obj.metadata.labels.update(labels)
    obj.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
    return obj


async def set_status(client: Client, name: str, namespace: str, *, ready: str | None = None,
                     phase: str | None = None) -> None:
    """What the kubelet would write: the Ready condition and/or the phase."""
    live = await client.get(core_pb2.Pod, name, namespace)
    if ready is not None:
        condition = next((c for c in live.status.conditions if c.type == "Ready"), None)
        if condition is None:
            condition = live.status.conditions.add(type="Ready")
        condition.status = ready
        condition.last_transition_time.GetCurrentTime()
    if phase is not None:
        live.status.phase = phase
    await client.update_status(live)


async def still_waiting(task: asyncio.Task[Result], seconds: float = 0.7) -> None:
    """The wait has not returned on its own: it really is waiting for what the test does next."""
    await asyncio.sleep(seconds)
    assert not task.done(), task.result().output


def in_background(kctl: Kctl, *args: str) -> asyncio.Task[Result]:
    return asyncio.create_task(asyncio.to_thread(kctl, *args))


# ---------------------------------------------------------------- conditions met


async def test_waits_until_the_pod_is_ready(kctl: Kctl, client: Client, namespace: str) -> None:
    await client.create(pod("web", namespace))
    task = in_background(kctl, "wait", "--for=condition=Ready", "pod/web", "-n", namespace, "--timeout=20s")
    await still_waiting(task)
    await set_status(client, "web", namespace, ready="False")  # a condition, but not the wanted status
    await still_waiting(task, 0.5)
    await set_status(client, "web", namespace, ready="True")
    result = await asyncio.wait_for(task, 15)
    assert result.exit_code == 0, result.output
    assert result.stdout == "pod/web condition met\n"

    # Already met: at once. Status compared case-insensitively, and =false asks for False.
    done = await asyncio.to_thread(kctl, "wait", "--for=condition=ready=TRUE", "pods", "web", "-n", namespace)
    assert (done.exit_code, done.stdout) == (0, "pod/web condition met\n")
    not_false = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready=false", "pod/web", "-n", namespace,
                                        "--timeout=1s")
    assert not_false.exit_code == 1
    assert not_false.stderr == "error: timed out waiting for the condition on pods/web\n"


async def test_a_condition_on_another_kind_names_it_as_kubectl_does(kctl: Kctl, client: Client,
                                                                   namespace: str) -> None:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = "web", namespace
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
    created = await client.create(d)
    timed_out = await asyncio.to_thread(kctl, "wait", "deploy/web", "--for=condition=Available", "-n", namespace,
                                        "--timeout=1s")
    assert timed_out.exit_code == 1
    assert timed_out.stderr == "error: timed out waiting for the condition on deployments/web\n"

    # Available for an older generation does not count; for the current one it does.
    created.spec.replicas = 2
    created = await client.update(created)
    assert created.metadata.generation == 2
    created.status.observed_generation = 1
    created.status.conditions.add(type="Available", status="True", reason="MinimumReplicasAvailable")
    stale = await client.update_status(created)
    old = await asyncio.to_thread(kctl, "wait", "deploy/web", "--for=condition=Available", "-n", namespace,
                                  "--timeout=0")
    assert (old.exit_code, old.stderr) == (1, "error: condition not met for deployments/web\n")
    stale.status.observed_generation = stale.metadata.generation
    await client.update_status(stale)
    met = await asyncio.to_thread(kctl, "wait", "deploy/web", "--for=condition=Available", "-n", namespace)
    assert (met.exit_code, met.stdout) == (0, "deployment.apps/web condition met\n")


async def test_jsonpath_value(kctl: Kctl, client: Client, namespace: str) -> None:
    await client.create(pod("web", namespace, app="web"))
    task = in_background(kctl, "wait", "--for=jsonpath={.status.phase}=Running", "pod/web", "-n", namespace,
                         "--timeout=20s")
    await still_waiting(task)
    await set_status(client, "web", namespace, phase="Running")
    result = await asyncio.wait_for(task, 15)
    assert (result.exit_code, result.stdout) == (0, "pod/web condition met\n"), result.output

    # kubectl's filter form, quotes around the value, and a path with no value (any value will do).
    await set_status(client, "web", namespace, ready="True")
    for spec in ('jsonpath={.status.conditions[?(@.type=="Ready")].status}=True',
                 "jsonpath=.status.phase='Running'", "jsonpath={.status.phase}"):
        met = await asyncio.to_thread(kctl, "wait", f"--for={spec}", "pod/web", "-n", namespace, "--timeout=5s")
        assert (met.exit_code, met.stdout) == (0, "pod/web condition met\n"), (spec, met.output)
    nested = await asyncio.to_thread(kctl, "wait", "--for=jsonpath={.metadata.labels}=x", "pod/web", "-n",
                                     namespace, "--timeout=5s")
    assert (nested.exit_code, nested.stderr) == (
        1, "error: jsonpath leads to a nested object or list which is not supported\n")


async def test_selector_waits_for_every_match(kctl: Kctl, client: Client, namespace: str) -> None:
    for name in ("a", "b", "c"):
        await client.create(pod(name, namespace, app="web"))
    await client.create(pod("other", namespace, app="db"))  # never ready; not selected
    task = in_background(kctl, "wait", "--for=condition=Ready", "pods", "-l", "app=web", "-n", namespace,
                         "--timeout=20s")
    await still_waiting(task)
    for name in ("c", "a"):
        await set_status(client, name, namespace, ready="True")
    await still_waiting(task, 0.5)  # b is not ready yet
    await set_status(client, "b", namespace, ready="True")
    result = await asyncio.wait_for(task, 15)
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["pod/a condition met", "pod/b condition met",
                                                  "pod/c condition met"]

    everything = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready", "pods", "--all", "-n", namespace,
                                         "--timeout=1s")
    assert everything.exit_code == 1
    assert everything.stderr == "error: timed out waiting for the condition on pods/other\n"
    none = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready", "pods", "-l", "app=none", "-n", namespace)
    assert (none.exit_code, none.stderr) == (1, "error: no matching resources found\n")


async def test_manifest_names_what_to_wait_for(kctl: Kctl, client: Client, namespace: str, tmp_path: Path) -> None:
    await client.create(pod("web", namespace))
    await set_status(client, "web", namespace, ready="True")
    manifest = tmp_path / "web.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
                        "spec: {containers: [{name: app, image: registry.k8s.io/pause:3.9}]}\n")
    result = await asyncio.to_thread(kctl, "wait", "-f", str(manifest), "--for=condition=Ready", "-n", namespace)
    assert (result.exit_code, result.stdout) == (0, "pod/web condition met\n"), result.output


# ---------------------------------------------------------------- deletion


async def test_waits_until_the_pod_is_deleted(kctl: Kctl, client: Client, namespace: str) -> None:
    await client.create(pod("web", namespace))
    task = in_background(kctl, "wait", "--for=delete", "pod/web", "-n", namespace, "--timeout=20s")
    await still_waiting(task)
    await client.delete(core_pb2.Pod, "web", namespace, grace_period_seconds=0)
    result = await asyncio.wait_for(task, 15)
    assert (result.exit_code, result.stdout) == (0, "pod/web deleted\n"), result.output

    # Already gone is done: nothing to wait for and, as in kubectl, nothing printed.
    gone = await asyncio.to_thread(kctl, "wait", "--for=delete", "pod/web", "-n", namespace, "--timeout=1s")
    assert (gone.exit_code, gone.stdout, gone.stderr) == (0, "", "")


async def test_a_pod_deleted_while_waited_on_for_a_condition_is_not_found(kctl: Kctl, client: Client,
                                                                          namespace: str) -> None:
    await client.create(pod("web", namespace))
    task = in_background(kctl, "wait", "--for=condition=Ready", "pod/web", "-n", namespace, "--timeout=20s")
    await still_waiting(task)
    await client.delete(core_pb2.Pod, "web", namespace, grace_period_seconds=0)
    result = await asyncio.wait_for(task, 15)
    assert (result.exit_code, result.stderr) == (1, 'Error from server (NotFound): pods "web" not found\n')


# ---------------------------------------------------------------- failures


async def test_timeout_and_missing_objects(kctl: Kctl, client: Client, namespace: str) -> None:
    await client.create(pod("web", namespace))
    timed_out = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready", "pod/web", "-n", namespace,
                                        "--timeout=1s")
    assert (timed_out.exit_code, timed_out.stdout) == (1, "")
    assert timed_out.stderr == "error: timed out waiting for the condition on pods/web\n"

    missing = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready", "pod/nope", "-n", namespace)
    assert (missing.exit_code, missing.stderr) == (1, 'Error from server (NotFound): pods "nope" not found\n')

    # Several failures: one line each, in order, without kubectl's `error: ` lead.
    both = await asyncio.to_thread(kctl, "wait", "--for=condition=Ready", "pod", "nope", "web", "-n", namespace,
                                   "--timeout=1s")
    assert both.exit_code == 1
    assert both.stderr.splitlines() == ['Error from server (NotFound): pods "nope" not found',
                                        "timed out waiting for the condition on pods/web"]


@pytest.mark.parametrize(("args", "error"), [
    (["--for=ready"], 'error: unrecognized condition: "ready"'),
    ([], 'error: unrecognized condition: ""'),
    (["--for=jsonpath={.status.phase}="],
     "error: jsonpath wait has to have a value after equal sign, like --for=jsonpath='{.status.readyReplicas}'=3"),
    (["--for=jsonpath={.status.phase"],
     "error: unexpected path string, expected a 'name1.name2' or '.name1.name2' or '{name1.name2}' "
     "or '{.name1.name2}'"),
    (["--for=jsonpath={.a}=1=2"],
     "error: jsonpath wait format must be --for=jsonpath='{.status.readyReplicas}'=3 "
     "or --for=jsonpath='{.status.readyReplicas}'"),
    (["--for=jsonpath="], "error: jsonpath expression cannot be empty"),
    (["--for=delete", "-l", "app=x"], "error: selectors and the all flag cannot be used when passing "
                                      "resource/name arguments"),
])
def test_bad_for_is_refused_before_waiting(kctl: Kctl, args: list[str], error: str) -> None:
    result = kctl("wait", "pod/web", *args, "-n", f"w-{uuid.uuid4().hex[:8]}")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == error + "\n"


def test_what_for_means() -> None:
    assert parse_for("condition=Ready") == StatusCondition("Ready", "true")
    assert parse_for("condition=Ready=False") == StatusCondition("Ready", "False")
    assert parse_for('jsonpath={.status.conditions[?(@.type=="Ready")].status}=True') == JSONPathValue(
        'status.conditions[?(@.type=="Ready")].status', "True")
    ready = {"metadata": {"generation": 2},
             "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}}
    assert parse_for("condition=ready").met(ready)
    assert not parse_for("condition=Ready").met({**ready, "metadata": {"generation": 3}})
    assert parse_for("jsonpath={.status.observedGeneration}=2").met(ready)
    assert not parse_for("jsonpath={.status.phase}").met(ready)
    with pytest.raises(CliError, match="more than one value"):
        parse_for("jsonpath={.status.conditions[*].type}=Ready").met(
            {"status": {"conditions": [{"type": "A"}, {"type": "B"}]}})
