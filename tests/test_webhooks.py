"""Admission webhooks, as a cluster operator configures them and a user meets them.

Given HTTPS webhook servers on loopback (aiohttp, under a CA this module makes,
trusted through each configuration's caBundle), the session's apiserver calls
them on writes: a validating webhook refuses ConfigMaps labelled deny=true with
its own message and lets others through; a mutating webhook labels new Pods
(kubectl shows the label); with the server gone, failurePolicy Ignore lets
writes through and Fail refuses them with Kubernetes' message; a webhook that
sleeps past its timeoutSeconds costs one request its timeout while the
apiserver serves others; namespaceSelector and objectSelector pick what is
sent; the configurations themselves never reach a webhook; bad configurations
are refused naming the field and nothing refused is stored.

Every configuration here selects only this module's objects (its own
namespaces' label, or an objectSelector), since the apiserver is shared with
every other test module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from google.protobuf.message import Message

from client import Client
from client.certificates import create_ca, create_serving_cert
from controlplane.apiserver.admission.webhook import generic, matching, review
from controlplane.apiserver.audit import AuditLog
from controlplane.apiserver.auth import Attributes, UserInfo
from controlplane.apiserver.endpoints import Endpoints
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Storage
from proto import admissionregistration_pb2, core_pb2, kinds, manifest, selectors
from proto.errors import ApiError, Forbidden, Invalid, NotFound
from provision.processes import Etcd, free_port
from tests.kubectl_support import kubectl

MUTATED_LABEL = "webhook.flotilla.dev/mutated"
DENY_MESSAGE = "ConfigMaps labelled deny=true are not allowed here"
SLOW_SECONDS = 20  # how long /slow sleeps: far past every timeoutSeconds used below
Config = (admissionregistration_pb2.ValidatingWebhookConfiguration
          | admissionregistration_pb2.MutatingWebhookConfiguration)


# ---------------------------------------------------------------- the webhook server


class WebhookServer:
    """HTTPS webhooks in a thread of their own (kubectl runs block the test's loop), recording each review."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.reviews: list[dict[str, Any]] = []
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/validate-deny-label", self._deny_label)
        app.router.add_post("/mutate-add-label", self._add_label)
        app.router.add_post("/mutate-bad-label", self._bad_label)
        app.router.add_post("/allow", self._allow)
        app.router.add_post("/deny", self._deny)
        app.router.add_post("/slow", self._slow)
        # A /slow handler whose caller gave up is cancelled, so shutting down never waits on one.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._tls).start()

    async def _read(self, request: web.Request) -> dict[str, Any]:
        review: dict[str, Any] = await request.json()
        self.reviews.append({"path": request.path, "query": dict(request.query), **review["request"]})
        return review["request"]

    @staticmethod
    def _answer(uid: str, **response: Any) -> web.Response:
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": {"uid": uid, **response}})

    async def _deny_label(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        labels = (review["object"] or {}).get("metadata", {}).get("labels", {})
        if labels.get("deny") == "true":
            return self._answer(review["uid"], allowed=False, status={"code": 403, "message": DENY_MESSAGE})
        return self._answer(review["uid"], allowed=True, warnings=["deny-label webhook checked this object"])

    async def _add_label(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        patch = [] if review["object"]["metadata"].get("labels") else [
            {"op": "add", "path": "/metadata/labels", "value": {}}]
        patch.append({"op": "add", "path": "/metadata/labels/" + MUTATED_LABEL.replace("/", "~1"), "value": "true"})
        return self._answer(review["uid"], allowed=True, patchType="JSONPatch",
                            patch=base64.b64encode(json.dumps(patch).encode()).decode())

    async def _bad_label(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        patch = [{"op": "add", "path": "/metadata/labels/bad", "value": "no spaces allowed"}]
        return self._answer(review["uid"], allowed=True, patchType="JSONPatch",
                            patch=base64.b64encode(json.dumps(patch).encode()).decode())

    async def _allow(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        return self._answer(review["uid"], allowed=True)

    async def _deny(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        return self._answer(review["uid"], allowed=False, status={"code": 422, "reason": "Invalid",
                                                                  "message": "denied by /deny"})

    async def _slow(self, request: web.Request) -> web.Response:
        review = await self._read(request)
        await asyncio.sleep(SLOW_SECONDS)
        return self._answer(review["uid"], allowed=True)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path, Path]:
    """This module's CA (PEM) and a serving certificate for 127.0.0.1 it signed."""
    ca = create_ca("webhook-test-ca")
    cert, key = create_serving_cert(ca, "webhook", ["127.0.0.1", "localhost"]).write(
        tmp_path_factory.mktemp("webhook-tls"), "webhook")
    return ca.cert_pem, cert, key


@pytest.fixture(scope="module")
def server(tls_files: tuple[bytes, Path, Path]) -> Iterator[WebhookServer]:
    running = WebhookServer(tls_files[1], tls_files[2])
    running.start()
    yield running
    running.stop()


@pytest.fixture
def ca_bundle(tls_files: tuple[bytes, Path, Path]) -> bytes:
    return tls_files[0]


# ---------------------------------------------------------------- configurations


def webhook(name: str, url: str, ca_bundle: bytes, *, resources: list[str], operations: list[str] | None = None,
            api_groups: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
            "rules": [{"operations": operations or ["CREATE"], "apiGroups": api_groups or [""],
                       "apiVersions": ["v1"], "resources": resources}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], **extra}


def configuration(kind: str, name: str, *hooks: dict[str, Any]) -> Config:
    config = manifest.from_dict({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                                 "metadata": {"name": name}, "webhooks": list(hooks)})
    assert isinstance(config, Config)
    return config


def in_namespace(namespace: str) -> dict[str, Any]:
    """A namespaceSelector for one test's namespace only (the session apiserver is shared)."""
    return {"namespaceSelector": {"matchLabels": {"webhook-test": namespace}}}


@pytest.fixture
async def ns(client: Client, namespace: str) -> str:
    """A fresh namespace labelled so this test's webhooks select it and nobody else's objects."""
    obj = await client.get(core_pb2.Namespace, namespace)
    obj.metadata.labels["webhook-test"] = namespace
    await client.update(obj)
    return namespace


@pytest.fixture
async def installed(client: Client) -> AsyncIterator[list[Config]]:
    """Configurations a test installs (through `install`); all removed when it ends."""
    created: list[Config] = []
    yield created
    for config in created:
        try:
            await client.delete(type(config), config.metadata.name)
        except NotFound:
            pass


async def install(client: Client, installed: list[Config], config: Config, server: WebhookServer,
                  ca_bundle: bytes, namespace: str) -> Config:
    """Create a configuration and wait until the apiserver calls it.

    The apiserver learns configurations from its watch; a barrier configuration of the same kind,
    created after this one, is seen after it: once the barrier refuses a probe, this one is in force.
    """
    stored = await client.create(config)
    installed.append(stored)
    probe_label = f"probe-{uuid.uuid4().hex[:8]}"
    kind = type(config).DESCRIPTOR.name
    barrier = configuration(kind, f"zz-barrier-{probe_label}", webhook(
        "barrier.webhooks.flotilla.dev", server.url("/deny"), ca_bundle, resources=["configmaps"],
        objectSelector={"matchLabels": {"probe": probe_label}}))
    installed.append(await client.create(barrier))
    probe = core_pb2.ConfigMap()
    probe.metadata.name, probe.metadata.namespace = "probe", namespace
    probe.metadata.labels["probe"] = probe_label
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.create(probe, dry_run=True)
        except ApiError as err:
            # The barrier refused, or the new configuration's own webhook answered first: in force.
            if "denied by /deny" in str(err) or any(f'"{h.name}"' in str(err) for h in config.webhooks):
                break
            raise
        assert time.monotonic() < deadline, "the apiserver never saw the webhook configuration"
        await asyncio.sleep(0.05)
    await client.delete(type(barrier), barrier.metadata.name)
    installed.remove(next(c for c in installed if c.metadata.name == barrier.metadata.name))
    return stored


def config_map(name: str, namespace: str, **labels: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name, cm.metadata.namespace = name, namespace
    cm.metadata.labels.update(labels)
    cm.data["k"] = "v"
    return cm


async def stored(client: Client, cls: type[Message], name: str, namespace: str) -> bool:
    try:
        await client.get(cls, name, namespace)
    except NotFound:
        return False
    return True


# ---------------------------------------------------------------- bad configurations


async def causes_of(client: Client, config: Config) -> list[str]:
    """Each `field: message` of the refusal (messages may hold "; " themselves: split before each field)."""
    with pytest.raises(Invalid) as info:
        await client.create(config)
    assert not await stored(client, type(config), config.metadata.name, "")
    detail = str(info.value).partition(" is invalid: ")[2]
    return [cause.rstrip("; ") for cause in re.split(r"(?=webhooks\[\d+\])", detail) if cause]


async def test_bad_configurations_are_refused_naming_the_field_and_nothing_is_stored(client: Client,
                                                                                      ca_bundle: bytes) -> None:
    def bad(**changes: Any) -> Config:
        hook = webhook("ok.webhooks.flotilla.dev", "https://127.0.0.1:1/x", ca_bundle, resources=["configmaps"])
        hook.update(changes)
        for key in [k for k, v in hook.items() if v is None]:
            del hook[key]
        return configuration("ValidatingWebhookConfiguration", f"bad-{uuid.uuid4().hex[:8]}", hook)

    assert await causes_of(client, bad(clientConfig={"url": "http://127.0.0.1:1/x"})) == [
        'webhooks[0].clientConfig.url: Invalid value: "http": \'https\' is the only allowed URL scheme; '
        "desired format: https://host[/path]"]
    assert await causes_of(client, bad(clientConfig={"url": "https://h.example/x",
                                                     "service": {"namespace": "a", "name": "b"}})) == [
        "webhooks[0].clientConfig: Required value: exactly one of url or service is required"]
    assert await causes_of(client, bad(sideEffects=None)) == [
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"]
    assert await causes_of(client, bad(sideEffects="Some")) == [
        'webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", "NoneOnDryRun"']
    assert await causes_of(client, bad(timeoutSeconds=31)) == [
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"]
    assert await causes_of(client, bad(admissionReviewVersions=["v1beta1"])) == [
        'webhooks[0].admissionReviewVersions: Invalid value: ["v1beta1"]: must include at least one of v1']
    assert await causes_of(client, bad(failurePolicy="Sometimes")) == [
        'webhooks[0].failurePolicy: Unsupported value: "Sometimes": supported values: "Fail", "Ignore"']
    assert await causes_of(client, bad(name="deny")) == [
        'webhooks[0].name: Invalid value: "deny": should be a domain with at least three segments separated by dots']
    assert await causes_of(client, bad(rules=[{"operations": ["CREATE", "*"], "apiGroups": [""],
                                               "apiVersions": ["v1"], "resources": ["pods", "*"]}])) == [
        'webhooks[0].rules[0].operations: Invalid value: ["CREATE","*"]: if \'*\' is present, must not specify '
        "other operations",
        'webhooks[0].rules[0].resources: Invalid value: ["pods","*"]: if \'*\' is present, must not specify other '
        "resources without subresources"]
    assert await causes_of(client, bad(clientConfig={"url": "https://h.example/x", "caBundle": "bm90IGEgY2VydA=="})) \
        == ['webhooks[0].clientConfig.caBundle: Invalid value: "<bytes>": must hold PEM-encoded certificates']
    hook = webhook("same.webhooks.flotilla.dev", "https://h.example/x", ca_bundle, resources=["pods"])
    assert await causes_of(client, configuration("MutatingWebhookConfiguration", "twice", hook, hook)) == [
        'webhooks[1].name: Duplicate value: "same.webhooks.flotilla.dev"']


async def test_a_configuration_gets_kubernetes_defaults_and_kubectl_columns(
        client: Client, ca_bundle: bytes, installed: list[Config], http_url: str, tmp_path: Path) -> None:
    name = f"defaults-{uuid.uuid4().hex[:8]}"
    hook = webhook("defaults.webhooks.flotilla.dev", "https://127.0.0.1:1/x", ca_bundle, resources=["secrets"],
                   objectSelector={"matchLabels": {"never": name}})
    config = await client.create(configuration("MutatingWebhookConfiguration", name, hook))
    installed.append(config)
    got = manifest.to_dict(await client.get(type(config), name))["webhooks"][0]
    assert (got["failurePolicy"], got["matchPolicy"], got["timeoutSeconds"], got["reinvocationPolicy"],
            got["namespaceSelector"], got["rules"][0]["scope"]) == ("Fail", "Equivalent", 10, "Never", {}, "*")
    listed = kubectl(http_url, tmp_path, "get", "mutatingwebhookconfigurations", name)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "WEBHOOKS", "AGE"]
    assert row.split()[:2] == [name, "1"]


# ---------------------------------------------------------------- validating


async def test_a_validating_webhook_denies_configmaps_labelled_deny_and_allows_others(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config],
        http_url: str, tmp_path: Path) -> None:
    name = "deny-label.webhooks.flotilla.dev"
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"deny-{ns}", webhook(
        name, server.url("/validate-deny-label"), ca_bundle, resources=["configmaps"], **in_namespace(ns))),
        server, ca_bundle, ns)

    refused = kubectl(http_url, tmp_path, "create", "configmap", "bad", "-n", ns, "--from-literal=k=v",
                      "--dry-run=client", "-o", "yaml")
    manifest_yaml = refused.stdout.replace("metadata:\n", "metadata:\n  labels:\n    deny: \"true\"\n", 1)
    refused = kubectl(http_url, tmp_path, "create", "-f", "-", stdin=manifest_yaml)
    assert refused.returncode != 0
    assert f'admission webhook "{name}" denied the request: {DENY_MESSAGE}' in refused.stderr
    assert "Error from server (Forbidden)" in refused.stderr
    assert not await stored(client, core_pb2.ConfigMap, "bad", ns)

    with pytest.raises(Forbidden, match=re.escape(f'admission webhook "{name}" denied the request: {DENY_MESSAGE}')):
        await client.create(config_map("bad", ns, deny="true"))
    assert not await stored(client, core_pb2.ConfigMap, "bad", ns)

    allowed = kubectl(http_url, tmp_path, "create", "configmap", "good", "-n", ns, "--from-literal=k=v")
    assert allowed.returncode == 0, allowed.stderr
    assert "Warning: deny-label webhook checked this object" in allowed.stderr  # the response's warnings
    assert await stored(client, core_pb2.ConfigMap, "good", ns)

    # An update is not a CREATE: the rule does not send it, so relabelling is allowed.
    good = await client.get(core_pb2.ConfigMap, "good", ns)
    good.metadata.labels["deny"] = "true"
    await client.update(good)

    # What the webhook was sent: Kubernetes' AdmissionReview v1 request.
    review = next(r for r in reversed(server.reviews) if r["path"] == "/validate-deny-label"
                  and r["name"] == "good")
    assert review["query"] == {"timeout": "10s"}
    assert review["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert review["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert (review["operation"], review["namespace"], review["dryRun"]) == ("CREATE", ns, False)
    assert review["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    assert review["object"]["data"] == {"k": "v"} and review["oldObject"] is None
    assert review["userInfo"]["username"]
    assert len({r["uid"] for r in server.reviews}) == len(server.reviews)  # a uid per call


async def test_deletes_and_dry_runs_are_sent_as_kubernetes_sends_them(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config]) -> None:
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"delete-{ns}", webhook(
        "keep.webhooks.flotilla.dev", server.url("/deny"), ca_bundle, resources=["configmaps"],
        operations=["DELETE"], objectSelector={"matchLabels": {"keep": "yes"}}, **in_namespace(ns)), webhook(
        "record.webhooks.flotilla.dev", server.url("/allow"), ca_bundle, resources=["configmaps"],
        operations=["CREATE"], **in_namespace(ns))), server, ca_bundle, ns)
    await client.create(config_map("kept", ns, keep="yes"))
    with pytest.raises(ApiError, match=re.escape('admission webhook "keep.webhooks.flotilla.dev" denied the request')):
        await client.delete(core_pb2.ConfigMap, "kept", ns)
    assert await stored(client, core_pb2.ConfigMap, "kept", ns)
    sent = next(r for r in reversed(server.reviews) if r["path"] == "/deny" and r["name"] == "kept")
    assert (sent["operation"], sent["object"], sent["oldObject"]["metadata"]["labels"]) == (
        "DELETE", None, {"keep": "yes"})
    assert sent["options"]["kind"] == "DeleteOptions"

    await client.create(config_map("dry", ns), dry_run=True)
    assert not await stored(client, core_pb2.ConfigMap, "dry", ns)
    sent = next(r for r in reversed(server.reviews) if r["path"] == "/allow" and r["name"] == "dry")
    assert sent["dryRun"] is True and sent["options"]["dryRun"] == ["All"]


# ---------------------------------------------------------------- mutating


async def test_a_mutating_webhook_labels_new_pods(client: Client, ns: str, server: WebhookServer, ca_bundle: bytes,
                                                  installed: list[Config], http_url: str, tmp_path: Path) -> None:
    await install(client, installed, configuration("MutatingWebhookConfiguration", f"label-{ns}", webhook(
        "add-label.webhooks.flotilla.dev", server.url("/mutate-add-label"), ca_bundle, resources=["pods"],
        **in_namespace(ns)), webhook(
        "bad-label.webhooks.flotilla.dev", server.url("/mutate-bad-label"), ca_bundle, resources=["pods"],
        objectSelector={"matchLabels": {"breakme": "yes"}}, **in_namespace(ns))), server, ca_bundle, ns)

    ran = kubectl(http_url, tmp_path, "run", "web", "-n", ns, "--image=nginx", "--restart=Never")
    assert ran.returncode == 0, ran.stderr
    shown = kubectl(http_url, tmp_path, "get", "pod", "web", "-n", ns, "--show-labels")
    assert shown.returncode == 0, shown.stderr
    assert f"{MUTATED_LABEL}=true" in shown.stdout
    assert "run=web" in shown.stdout  # kubectl's own label kept beside the webhook's

    def pod(name: str, **labels: str) -> core_pb2.Pod:
        obj = core_pb2.Pod()
        obj.metadata.name, obj.metadata.namespace = name, ns
        obj.metadata.labels.update(labels)
        obj.spec.containers.add(name="c", image="busybox")
        return obj

    created = await client.create(pod("plain"))
    assert created.metadata.labels[MUTATED_LABEL] == "true"
    assert created.metadata.uid and created.spec.containers[0].image_pull_policy  # server-owned and defaulted
    # The second webhook sees the first one's work (they run in order, each on the last one's result);
    # its patch leaves an invalid label, which the strategy's validation after mutation refuses.
    with pytest.raises(Invalid, match=re.escape('metadata.labels: Invalid value: "no spaces allowed"')):
        await client.create(pod("broken", breakme="yes"))
    assert not await stored(client, core_pb2.Pod, "broken", ns)
    sent = [r for r in server.reviews if r["path"] == "/mutate-bad-label"]
    assert sent[-1]["object"]["metadata"]["labels"][MUTATED_LABEL] == "true"


# ---------------------------------------------------------------- failures


async def test_with_the_webhook_server_gone_ignore_lets_writes_through_and_fail_refuses(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config]) -> None:
    gone = f"https://127.0.0.1:{free_port()}/validate"
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"gone-{ns}", webhook(
        "ignore.webhooks.flotilla.dev", gone, ca_bundle, resources=["configmaps"], failurePolicy="Ignore",
        **in_namespace(ns))), server, ca_bundle, ns)
    await client.create(config_map("through", ns))
    assert await stored(client, core_pb2.ConfigMap, "through", ns)

    await install(client, installed, configuration("MutatingWebhookConfiguration", f"gone-{ns}", webhook(
        "fail.webhooks.flotilla.dev", gone, ca_bundle, resources=["configmaps"], **in_namespace(ns))),
        server, ca_bundle, ns)
    with pytest.raises(ApiError) as refused:
        await client.create(config_map("refused", ns))
    port = gone.split(":")[2].split("/")[0]
    assert str(refused.value) == (
        'Internal error occurred: failed calling webhook "fail.webhooks.flotilla.dev": failed to call webhook: '
        f'Post "{gone}?timeout=10s": dial tcp 127.0.0.1:{port}: connect: connection refused')
    assert not await stored(client, core_pb2.ConfigMap, "refused", ns)


async def test_the_ca_bundle_is_the_webhooks_trust_root(client: Client, ns: str, server: WebhookServer,
                                                        ca_bundle: bytes, installed: list[Config]) -> None:
    stranger = create_ca("some-other-ca").cert_pem
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"untrusted-{ns}", webhook(
        "untrusted.webhooks.flotilla.dev", server.url("/allow"), stranger, resources=["configmaps"],
        **in_namespace(ns))), server, ca_bundle, ns)
    with pytest.raises(ApiError, match="tls: failed to verify certificate"):
        await client.create(config_map("untrusted", ns))
    assert not await stored(client, core_pb2.ConfigMap, "untrusted", ns)


async def test_a_webhook_past_its_timeout_fails_by_policy_and_never_holds_the_apiserver(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config]) -> None:
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"slow-{ns}", webhook(
        "slow-fail.webhooks.flotilla.dev", server.url("/slow"), ca_bundle, resources=["configmaps"],
        timeoutSeconds=4, objectSelector={"matchLabels": {"policy": "fail"}}, **in_namespace(ns)), webhook(
        "slow-ignore.webhooks.flotilla.dev", server.url("/slow"), ca_bundle, resources=["configmaps"],
        timeoutSeconds=4, failurePolicy="Ignore", objectSelector={"matchLabels": {"policy": "ignore"}},
        **in_namespace(ns))), server, ca_bundle, ns)

    started = time.monotonic()
    slow = asyncio.ensure_future(client.create(config_map("slow", ns, policy="fail")))
    # While that request waits on the webhook, the apiserver answers others.
    await client.create(config_map("meanwhile", ns))
    assert not slow.done()
    with pytest.raises(ApiError) as refused:
        await slow
    assert time.monotonic() - started < SLOW_SECONDS  # ended by the timeout, not by the webhook's answer
    assert 'failed calling webhook "slow-fail.webhooks.flotilla.dev"' in str(refused.value)
    assert "context deadline exceeded" in str(refused.value)
    assert not await stored(client, core_pb2.ConfigMap, "slow", ns)

    await client.create(config_map("through", ns, policy="ignore"))  # Ignore: through once the timeout passes
    assert await stored(client, core_pb2.ConfigMap, "through", ns)


# ---------------------------------------------------------------- selection


async def test_namespace_and_object_selectors_pick_what_is_sent(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config]) -> None:
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"select-{ns}", webhook(
        "by-namespace.webhooks.flotilla.dev", server.url("/validate-deny-label"), ca_bundle,
        resources=["configmaps"], **in_namespace(ns)), webhook(
        "by-object.webhooks.flotilla.dev", server.url("/deny"), ca_bundle, resources=["secrets"],
        operations=["CREATE", "UPDATE"], objectSelector={"matchLabels": {"checked": "yes"}}, **in_namespace(ns))),
        server, ca_bundle, ns)

    with pytest.raises(Forbidden):
        await client.create(config_map("bad", ns, deny="true"))
    other = core_pb2.Namespace()  # a namespace without the selected label
    other.metadata.name = f"{ns}-other"
    await client.create(other)
    try:
        await client.create(config_map("bad", other.metadata.name, deny="true"))
        assert await stored(client, core_pb2.ConfigMap, "bad", other.metadata.name)
    finally:
        await client.delete(core_pb2.Namespace, other.metadata.name)

    def secret(name: str, **labels: str) -> core_pb2.Secret:
        obj = core_pb2.Secret()
        obj.metadata.name, obj.metadata.namespace = name, ns
        obj.metadata.labels.update(labels)
        return obj

    await client.create(secret("unchecked"))  # its labels do not match: not sent
    with pytest.raises(ApiError, match=re.escape('admission webhook "by-object.webhooks.flotilla.dev" denied the '
                                                 "request: denied by /deny")) as refused:
        await client.create(secret("checked", checked="yes"))
    assert refused.value.reason == "Invalid"  # the webhook's own status reason (and code 422)
    assert not await stored(client, core_pb2.Secret, "checked", ns)
    # An update is sent when the new object (or the old one) matches.
    unchecked = await client.get(core_pb2.Secret, "unchecked", ns)
    unchecked.metadata.labels["checked"] = "yes"
    with pytest.raises(ApiError, match="denied by /deny"):
        await client.update(unchecked)
    assert "checked" not in (await client.get(core_pb2.Secret, "unchecked", ns)).metadata.labels


async def test_the_webhook_configurations_themselves_never_reach_a_webhook(
        client: Client, ns: str, server: WebhookServer, ca_bundle: bytes, installed: list[Config]) -> None:
    # A webhook that would refuse every write of configurations (and is unreachable, failing closed),
    # selecting this test's configurations only.
    mark = {"objectSelector": {"matchLabels": {"webhook-test": ns}}}
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"guard-{ns}", webhook(
        "guard.webhooks.flotilla.dev", f"https://127.0.0.1:{free_port()}/x", ca_bundle, resources=["*"],
        operations=["*"], api_groups=["admissionregistration.k8s.io"], **mark)), server, ca_bundle, ns)
    other = configuration("MutatingWebhookConfiguration", f"other-{ns}", webhook(
        "other.webhooks.flotilla.dev", server.url("/allow"), ca_bundle, resources=["configmaps"],
        **in_namespace(ns)))
    other.metadata.labels["webhook-test"] = ns
    created = await client.create(other)
    installed.append(created)
    await client.delete(admissionregistration_pb2.MutatingWebhookConfiguration, created.metadata.name)
    installed.remove(created)
    assert not any(r["resource"]["group"] == "admissionregistration.k8s.io" for r in server.reviews)


# ---------------------------------------------------------------- matching and responses, without a server


def rule(resources: list[str], *, operations: tuple[str, ...] = ("*",), scope: str = "*",
         groups: tuple[str, ...] = ("*",)) -> admissionregistration_pb2.RuleWithOperations:
    return admissionregistration_pb2.RuleWithOperations(operations=operations, api_groups=groups,
                                                        api_versions=["*"], resources=resources, scope=scope)


def write(resource: str, subresource: str = "", operation: str = "CREATE", namespace: str = "default",
          obj: Message | None = None, old: Message | None = None,
          namespace_labels: dict[str, str] | None = None) -> matching.Attributes:
    kind = kinds.resolve(resource)
    return matching.Attributes(operation, kind, namespace if kind.namespaced else "", subresource, obj, old,
                               namespace_labels)


def test_rules_match_resources_subresources_operations_and_scope_as_kubernetes() -> None:
    assert matching.rule_matches(rule(["pods"]), write("pods"))
    assert not matching.rule_matches(rule(["pods"]), write("pods", "status"))
    assert matching.rule_matches(rule(["pods/*"]), write("pods", "status"))
    assert matching.rule_matches(rule(["pods/*"]), write("pods"))
    assert matching.rule_matches(rule(["*"]), write("configmaps"))
    assert not matching.rule_matches(rule(["*"]), write("pods", "status"))
    assert matching.rule_matches(rule(["*/status"]), write("pods", "status"))
    assert not matching.rule_matches(rule(["*/status"]), write("pods"))
    assert matching.rule_matches(rule(["*/*"]), write("deployments", "scale"))
    assert not matching.rule_matches(rule(["pods"], operations=("UPDATE",)), write("pods"))
    assert not matching.rule_matches(rule(["*"], groups=("apps",)), write("pods"))
    assert matching.rule_matches(rule(["*"], groups=("apps",)), write("deployments"))
    # A Namespace counts as cluster-scoped, as a Node does; a Pod is namespaced.
    assert not matching.rule_matches(rule(["*"], scope="Namespaced"), write("namespaces"))
    assert matching.rule_matches(rule(["*"], scope="Cluster"), write("namespaces"))
    assert matching.rule_matches(rule(["*"], scope="Cluster"), write("nodes"))
    assert not matching.rule_matches(rule(["*"], scope="Cluster"), write("pods"))
    assert matching.rule_matches(rule(["*"], scope="Namespaced"), write("pods"))


def test_selectors_read_the_namespace_or_the_object_old_and_new() -> None:
    env = selectors.from_match_labels({"env": "prod"})
    labelled = core_pb2.Namespace()
    labelled.metadata.name = "prod"
    labelled.metadata.labels["env"] = "prod"
    # namespaceSelector: a namespaced object by its namespace's labels, a Namespace by its own,
    # any other cluster-scoped object always.
    assert matching.namespace_selector_matches(env, write("pods", namespace_labels={"env": "prod"}))
    assert not matching.namespace_selector_matches(env, write("pods", namespace_labels={"env": "dev"}))
    assert matching.namespace_selector_matches(env, write("namespaces", obj=labelled))
    assert not matching.namespace_selector_matches(env, write("namespaces", obj=core_pb2.Namespace()))
    assert matching.namespace_selector_matches(env, write("nodes"))
    # objectSelector: the old or the new object's labels; no object never matches, an empty selector always.
    pod = core_pb2.Pod()
    pod.metadata.labels["env"] = "prod"
    assert matching.object_selector_matches(env, write("pods", operation="UPDATE", obj=core_pb2.Pod(), old=pod))
    assert not matching.object_selector_matches(env, write("pods", operation="DELETE", old=core_pb2.Pod()))
    assert matching.object_selector_matches(selectors.from_match_labels({}), write("pods"))
    assert matching.exempt(kinds.resolve("validatingwebhookconfigurations"))
    assert not matching.exempt(kinds.resolve("configmaps"))


def test_answers_that_are_not_an_admission_review_for_the_request_are_refused() -> None:
    def answer(**response: Any) -> dict[str, Any]:
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    patch = base64.b64encode(b'[{"op": "add", "path": "/metadata/labels/a", "value": "b"}]').decode()
    assert review.verify("u1", answer(uid="u1", allowed=True), mutating=False).allowed
    assert review.verify("u1", answer(uid="u1", allowed=True, patch=patch, patchType="JSONPatch"),
                         mutating=True).patch is not None
    for body, mutating, problem in [
        (answer(uid="u2", allowed=True), False, 'expected response.uid="u1", got "u2"'),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "response": {"uid": "u1"}}, False,
         "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got admission.k8s.io/v1beta1"),
        (answer(uid="u1", allowed=True, patch=patch), True, "webhook returned response.patch but not "
                                                            "response.patchType"),
        (answer(uid="u1", allowed=True, patch=patch, patchType="JSONPatch"), False,
         "validating webhook may not return response.patch"),
        (answer(uid="u1", allowed=True, patch=patch, patchType="MergePatch"), True,
         'webhook returned invalid response.patchType of "MergePatch"'),
        (answer(uid="u1"), False, "response.allowed must be a boolean"),
    ]:
        with pytest.raises(review.InvalidResponse) as refused:
            review.verify("u1", body, mutating=mutating)
        assert str(refused.value).startswith(problem), refused.value


async def test_without_the_configuration_watch_the_apiserver_reads_them_from_storage(
        etcd: Etcd, server: WebhookServer, ca_bundle: bytes) -> None:
    """Before its first list arrives (or in an apiserver that runs no watch), nothing is skipped."""
    storage = Storage(etcd.url)
    await storage.connect()
    registry = Registry(storage)  # no watch_admission_policy: the webhook plugins never hear of a configuration
    name = f"t-{uuid.uuid4().hex[:10]}"
    ns = manifest.from_dict({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": name, "labels": {"webhook-test": name}}})
    await registry.create(kinds.resolve("namespaces"), "", ns)
    config = configuration("ValidatingWebhookConfiguration", f"unwatched-{name}", webhook(
        "unwatched.webhooks.flotilla.dev", server.url("/validate-deny-label"), ca_bundle, resources=["configmaps"],
        **in_namespace(name)))
    configurations = kinds.resolve("validatingwebhookconfigurations")
    await registry.create(configurations, "", config)
    caller = Attributes(UserInfo("admin", ("system:masters",)), "create", "configmaps", name)
    try:
        with pytest.raises(ApiError, match="denied the request") as refused:
            await registry.create(kinds.resolve("configmaps"), name, config_map("bad", name, deny="true"),
                                  caller=caller)
        assert refused.value.reason == "Forbidden"
        await registry.create(kinds.resolve("configmaps"), name, config_map("good", name), caller=caller)
    finally:
        await registry.delete(configurations, "", config.metadata.name)
        for plugin in registry.admission.plugins:
            if isinstance(plugin, generic.Webhooks):
                await plugin.close()  # their HTTPS connection pools
        await storage.close()


EXAMPLE = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: "{name}"
webhooks:
- name: "pod-policy.example.com"
  rules:
  - apiGroups:   [""]
    apiVersions: ["v1"]
    operations:  ["CREATE"]
    resources:   ["pods"]
    scope:       "Namespaced"
  clientConfig:
    service:
      namespace: "example-namespace"
      name: "example-service"
    caBundle: "{ca_bundle}"
  admissionReviewVersions: ["v1"]
  sideEffects: None
  timeoutSeconds: {timeout}
  objectSelector: {{matchLabels: {{never: "{name}"}}}}
"""


async def test_kubectl_applies_explains_and_lists_the_kubernetes_io_example(
        client: Client, ca_bundle: bytes, installed: list[Config], http_url: str, tmp_path: Path) -> None:
    """kubernetes.io's ValidatingWebhookConfiguration (an objectSelector added, so no test's pods meet it)."""
    name = f"pod-policy-{uuid.uuid4().hex[:8]}.example.com"
    bundle = base64.b64encode(ca_bundle).decode()
    applied = kubectl(http_url, tmp_path, "apply", "-f", "-",
                      stdin=EXAMPLE.format(name=name, ca_bundle=bundle, timeout=5))
    assert applied.returncode == 0, applied.stderr
    installed.append(await client.get(admissionregistration_pb2.ValidatingWebhookConfiguration, name))
    applied = kubectl(http_url, tmp_path, "apply", "-f", "-",
                      stdin=EXAMPLE.format(name=name, ca_bundle=bundle, timeout=7))
    assert applied.stdout.strip() == f"validatingwebhookconfiguration.admissionregistration.k8s.io/{name} configured"
    shown = kubectl(http_url, tmp_path, "get", "validatingwebhookconfiguration", name, "-o",
                    "jsonpath={.webhooks[0].timeoutSeconds} {.webhooks[0].clientConfig.service.port} "
                    "{.webhooks[0].failurePolicy}")
    assert shown.stdout == "7 443 Fail"
    explained = kubectl(http_url, tmp_path, "explain", "validatingwebhookconfiguration.webhooks.sideEffects")
    assert explained.returncode == 0, explained.stderr
    assert "None or NoneOnDryRun" in explained.stdout
    resources = kubectl(http_url, tmp_path, "api-resources", "--api-group=admissionregistration.k8s.io", "-o", "wide")
    rows = {line.split()[0]: line for line in resources.stdout.splitlines()[1:]}
    assert set(rows) == {"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
    assert all("api-extensions" in row and "false" in row for row in rows.values())


async def test_the_audit_record_says_which_webhook_failed_open_and_which_mutated(
        etcd: Etcd, server: WebhookServer, ca_bundle: bytes, tmp_path: Path) -> None:
    storage = Storage(etcd.url)
    await storage.connect()
    endpoints = Endpoints(Registry(storage), audit=AuditLog(tmp_path / "audit.log"))
    admin = UserInfo("admin", ("system:masters",))
    name = f"t-{uuid.uuid4().hex[:10]}"
    await endpoints.create(admin, kinds.resolve("namespaces"), "", manifest.from_dict(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"webhook-test": name}}}))
    created = [
        await endpoints.create(admin, kinds.resolve("validatingwebhookconfigurations"), "", configuration(
            "ValidatingWebhookConfiguration", f"audited-{name}", webhook(
                "gone.webhooks.flotilla.dev", f"https://127.0.0.1:{free_port()}/x", ca_bundle,
                resources=["configmaps"], failurePolicy="Ignore", **in_namespace(name)))),
        await endpoints.create(admin, kinds.resolve("mutatingwebhookconfigurations"), "", configuration(
            "MutatingWebhookConfiguration", f"audited-{name}", webhook(
                "labels.webhooks.flotilla.dev", server.url("/mutate-add-label"), ca_bundle,
                resources=["configmaps"], **in_namespace(name))))]
    try:
        stored_cm = await endpoints.create(admin, kinds.resolve("configmaps"), name, config_map("audited", name))
        assert stored_cm.metadata.labels[MUTATED_LABEL] == "true"  # type: ignore[attr-defined]
        record = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
        assert (record["name"], record["result"]) == ("audited", "OK")
        # Keyed by the webhook's index among all configurations (others' may sort before these).
        annotations = record["annotations"]
        assert "gone.webhooks.flotilla.dev" in [v for k, v in annotations.items()
                                                if k.startswith("failed-open.validating.webhook.admission.k8s.io/")]
        assert {"configuration": f"audited-{name}", "webhook": "labels.webhooks.flotilla.dev", "mutated": True} in [
            json.loads(v) for k, v in annotations.items() if k.startswith("mutation.webhook.admission.k8s.io/")]
    finally:
        for config in created:
            await endpoints.registry.delete(kinds.for_message(config), "", config.metadata.name)  # type: ignore[attr-defined]
        for plugin in endpoints.registry.admission.plugins:
            if isinstance(plugin, generic.Webhooks):
                await plugin.close()
        await storage.close()
