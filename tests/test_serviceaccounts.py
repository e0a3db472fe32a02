"""Identity for pods: ServiceAccounts, bound tokens, their authentication and authorisation.

Given an apiserver as `kctl cluster up` runs it (TLS, RBAC, its service-account
signing key: provision/components.py) on its own etcd, a ServiceAccount gets a
token through the TokenRequest subresource (over HTTP, gRPC and `kubectl create
token`); the token authenticates as `system:serviceaccount:<ns>:<name>` with its
groups, RBAC bound to `view` lets it list pods and not read Secrets, a token bound
to a pod stops working once the pod is gone, and expired, tampered or foreign
tokens are 401. Bad requests are refused naming what is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import Client
from client import config as clientconfig
from controlplane.apiserver.serviceaccount.keys import SigningKey
from controlplane.apiserver.serviceaccount.tokens import BoundObject, ServiceAccountClaims, TokenIssuer
from proto import core_pb2, rbac_pb2
from proto.errors import Forbidden, NotFound
from provision import components
from provision.processes import Etcd, Process, free_port, wait_until

KUBECTL = "/usr/bin/kubectl"


@pytest.fixture(scope="module")
def cluster(own_etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[components.ClusterPlan]:
    folder = tmp_path_factory.mktemp("sa")
    nodes = (components.NodePlan("sa-node", "127.0.0.1", "10.76.0.0/24", control_plane=True),)
    plan = components.ClusterPlan("sa", "127.0.0.1", nodes, "10.76.0.0/16", own_etcd.url, folder / "config",
                                  api_port=free_port(), token_port=free_port(), grpc_port=free_port())
    components.bundle(plan).write(plan.config_dir)
    argv = components.apiserver_argv(plan)
    if "--service-account-signing-key-file" not in argv:  # the test signs its own forgeries with the same key
        key = plan.config_dir / "pki" / "sa.key"
        if not key.exists():
            from controlplane.apiserver.serviceaccount.keys import write_signing_key
            write_signing_key(key)
        argv += ["--service-account-signing-key-file", str(key)]
    # A documentation address (TEST-NET-1): published in the kubernetes Service's endpoints, never dialled here.
    argv += ["--advertise-address", "192.0.2.10"]
    proc = Process("apiserver", argv, folder / "apiserver.log")
    proc.start()

    def answers() -> bool:
        import socket
        with socket.create_connection(("127.0.0.1", plan.api_port), timeout=0.5):
            return True
    try:
        wait_until(answers, "TLS apiserver", proc, timeout=60)
        yield plan
    finally:
        proc.stop()


def cluster_ca(plan: components.ClusterPlan) -> str:
    return Path(plan.path(f"{components.CA}.crt")).read_text()


def signing_key(plan: components.ClusterPlan) -> SigningKey:
    argv = components.apiserver_argv(plan)
    path = (argv[argv.index("--service-account-signing-key-file") + 1]
            if "--service-account-signing-key-file" in argv else str(plan.config_dir / "pki" / "sa.key"))
    return SigningKey.load(Path(path))


@pytest.fixture
async def admin(cluster: components.ClusterPlan) -> AsyncIterator[Client]:
    async with clientconfig.for_component(kubeconfig=cluster.kubeconfig_path(components.ADMIN)).client() as c:
        yield c


@pytest.fixture
async def ns(admin: Client) -> str:
    name = f"sa-{uuid.uuid4().hex[:8]}"
    namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
    namespace.metadata.name = name
    await admin.create(namespace)
    return name


async def service_account(admin: Client, namespace: str, name: str = "robot") -> core_pb2.ServiceAccount:
    sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
    sa.metadata.name, sa.metadata.namespace = name, namespace
    return await admin.create(sa)


async def bind_view(admin: Client, namespace: str, account: str = "robot") -> None:
    binding = rbac_pb2.RoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding")
    binding.metadata.name, binding.metadata.namespace = f"{account}-view", namespace
    binding.subjects.add(kind="ServiceAccount", name=account, namespace=namespace)
    binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
        "rbac.authorization.k8s.io", "ClusterRole", "view")
    await admin.create(binding)


def https(plan: components.ClusterPlan, method: str, path: str, body: Any = None, *, token: str | None = None,
          admin: bool = False, scheme: str = "Bearer") -> tuple[int, Any]:
    """One request to the Kubernetes HTTP API: as a bearer token, or as the admin's certificate."""
    context = ssl.create_default_context(cafile=plan.path(f"{components.CA}.crt"))
    if admin:
        doc = clientconfig.read(Path(plan.kubeconfig_path(components.ADMIN)))
        user = doc["users"][0]["user"]
        folder = plan.config_dir / "test-admin"
        folder.mkdir(exist_ok=True)
        (folder / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (folder / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(folder / "c.crt", folder / "c.key")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"https://127.0.0.1:{plan.api_port}{path}", data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def request_token(plan: components.ClusterPlan, namespace: str, account: str, spec: dict[str, Any] | None = None
                  ) -> tuple[int, Any]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec or {}}
    return https(plan, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body, admin=True)


def whoami(plan: components.ClusterPlan, token: str) -> tuple[int, Any]:
    return https(plan, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                 {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, token=token)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_a_token_request_authenticates_as_the_service_account(cluster: components.ClusterPlan, admin: Client,
                                                                     ns: str) -> None:
    sa = await service_account(admin, ns)
    status, answer = request_token(cluster, ns, "robot")
    assert status == 201, answer
    assert answer["kind"] == "TokenRequest" and answer["spec"]["expirationSeconds"] == 3600
    token = answer["status"]["token"]
    claims = claims_of(token)
    assert claims["sub"] == f"system:serviceaccount:{ns}:robot"
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "robot", "uid": sa.metadata.uid}
    assert claims["exp"] - claims["iat"] == 3600 and claims["aud"] == [claims["iss"]]
    status, review = whoami(cluster, token)
    assert status == 201, review
    # The scheme is case-insensitive: the Python client's load_incluster_config() sends `bearer <token>`.
    status, lower = https(cluster, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, token=token,
                          scheme="bearer")
    assert status == 201 and lower["status"] == review["status"], lower
    assert review["status"]["userInfo"] == {
        "username": f"system:serviceaccount:{ns}:robot",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]}


async def test_view_lets_the_account_list_pods_and_not_read_secrets(cluster: components.ClusterPlan, admin: Client,
                                                                     ns: str) -> None:
    await service_account(admin, ns)
    token = request_token(cluster, ns, "robot")[1]["status"]["token"]
    status, answer = https(cluster, "GET", f"/api/v1/namespaces/{ns}/pods", token=token)
    assert status == 403, answer  # nothing bound yet
    await bind_view(admin, ns)
    for _ in range(50):  # the authoriser's cache follows the binding within milliseconds
        status, answer = https(cluster, "GET", f"/api/v1/namespaces/{ns}/pods", token=token)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200 and answer["kind"] == "PodList", answer
    status, answer = https(cluster, "GET", f"/api/v1/namespaces/{ns}/secrets", token=token)
    assert status == 403
    assert answer["message"] == (f'secrets is forbidden: User "system:serviceaccount:{ns}:robot" cannot list '
                                 f'resource "secrets" in API group "" in the namespace "{ns}"')


async def test_a_token_bound_to_a_pod_dies_with_the_pod(cluster: components.ClusterPlan, admin: Client,
                                                        ns: str) -> None:
    await service_account(admin, ns)
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = "web", ns
    pod.spec.service_account_name = "robot"
    pod.spec.containers.add(name="c", image="busybox")
    pod = await admin.create(pod)
    answer = await admin.create_token(ns, "robot", bound_pod=pod)  # over gRPC, as the kubelet asks
    token = answer.status.token
    assert claims_of(token)["kubernetes.io"]["pod"] == {"name": "web", "uid": pod.metadata.uid}
    assert whoami(cluster, token)[0] == 201
    await admin.delete(core_pb2.Pod, "web", ns, grace_period_seconds=0)
    for _ in range(50):
        status, answer = whoami(cluster, token)
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401, answer
    # ... and a token for the account itself dies with the account.
    other = request_token(cluster, ns, "robot")[1]["status"]["token"]
    await admin.delete(core_pb2.ServiceAccount, "robot", ns)
    for _ in range(50):
        status, answer = whoami(cluster, other)
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401, answer


async def test_expired_tampered_and_foreign_tokens_are_refused(cluster: components.ClusterPlan, admin: Client,
                                                               ns: str) -> None:
    sa = await service_account(admin, ns)
    token = request_token(cluster, ns, "robot")[1]["status"]["token"]
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = f"system:serviceaccount:{ns}:admin"  # a forged identity under the real signature
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert whoami(cluster, f"{header}.{forged}.{signature}")[0] == 401
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert whoami(cluster, f"{header}.{payload}.{flipped}")[0] == 401
    account = ServiceAccountClaims(ns, "robot", sa.metadata.uid, None, (claims["iss"],), 0)
    expired = TokenIssuer(signing_key(cluster), issuer=claims["iss"], now=lambda: time.time() - 7200)
    stale = expired.issue(ServiceAccountClaims(**{**account.__dict__, "expires": int(time.time()) - 3600}))
    status, answer = whoami(cluster, stale)
    assert status == 401 and answer["reason"] == "Unauthorized"
    stranger = TokenIssuer(SigningKey.generate(), issuer=claims["iss"])  # another cluster's key, same issuer
    assert whoami(cluster, stranger.issue(ServiceAccountClaims(**{**account.__dict__,
                                                                  "expires": int(time.time()) + 600})))[0] == 401
    wrong_audience = TokenIssuer(signing_key(cluster), issuer=claims["iss"]).issue(ServiceAccountClaims(
        **{**account.__dict__, "audiences": ("vault",), "expires": int(time.time()) + 600}))
    assert whoami(cluster, wrong_audience)[0] == 401
    bound_to_nothing = TokenIssuer(signing_key(cluster), issuer=claims["iss"]).issue(ServiceAccountClaims(
        **{**account.__dict__, "bound": BoundObject("Pod", "ghost", "u-1"), "expires": int(time.time()) + 600}))
    assert whoami(cluster, bound_to_nothing)[0] == 401


async def test_token_reviews_name_the_account(cluster: components.ClusterPlan, admin: Client, ns: str) -> None:
    await service_account(admin, ns)
    token = request_token(cluster, ns, "robot")[1]["status"]["token"]
    review: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "spec": {"token": token}}
    status, answer = https(cluster, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, admin=True)
    assert status == 201, answer
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"]["username"] == f"system:serviceaccount:{ns}:robot"
    # For another audience: only a token made for it names anyone.
    review["spec"]["audiences"] = ["vault"]
    status, answer = https(cluster, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, admin=True)
    assert (status, answer["status"].get("authenticated", False)) == (201, False), answer
    review["spec"]["token"] = request_token(cluster, ns, "robot", {"audiences": ["vault"]})[1]["status"]["token"]
    status, answer = https(cluster, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, admin=True)
    assert answer["status"]["authenticated"] is True and answer["status"]["audiences"] == ["vault"], answer
    review["spec"]["token"] = token[:-4] + "abcd"
    status, answer = https(cluster, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, admin=True)
    assert (status, answer["status"].get("authenticated", False)) == (201, False)


async def test_bad_token_requests_are_refused_naming_the_problem(cluster: components.ClusterPlan, admin: Client,
                                                                 ns: str) -> None:
    await service_account(admin, ns)
    status, answer = request_token(cluster, ns, "robot", {"expirationSeconds": 599})
    assert status == 422 and answer["details"]["causes"][0]["field"] == "spec.expirationSeconds", answer
    assert "may not specify a duration less than 10 minutes" in answer["message"]
    status, answer = request_token(cluster, ns, "nobody")
    assert status == 404 and answer["message"] == 'serviceaccounts "nobody" not found', answer
    status, answer = request_token(cluster, ns, "robot", {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                                            "name": "ghost"}})
    assert status == 404 and answer["message"] == 'pods "ghost" not found', answer
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = "other", ns
    pod.spec.containers.add(name="c", image="busybox")  # runs as `default`, not robot
    await admin.create(pod)
    status, answer = request_token(cluster, ns, "robot", {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                                            "name": "other"}})
    assert status == 400 and "to pod running with different serviceaccount name" in answer["message"], answer
    status, answer = request_token(cluster, ns, "robot", {"audiences": "everyone"})
    assert status == 422 and "spec.audiences" in answer["message"], answer
    status, answer = https(cluster, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/robot/token",
                           {"apiVersion": "v1", "kind": "Pod"}, admin=True)
    assert status == 400 and "expected TokenRequest" in answer["message"], answer


async def test_a_node_gets_tokens_only_for_its_own_pods(cluster: components.ClusterPlan, admin: Client,
                                                        ns: str) -> None:
    await service_account(admin, ns)
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = "elsewhere", ns
    pod.spec.service_account_name, pod.spec.node_name = "robot", "another-node"
    pod.spec.containers.add(name="c", image="busybox")
    pod = await admin.create(pod)
    node_config = cluster.kubeconfig_path(components.node_identity("sa-node"))
    async with clientconfig.for_component(kubeconfig=node_config).client() as node:
        with pytest.raises(Forbidden, match="node requested token not bound to a pod"):
            await node.create_token(ns, "robot")
        with pytest.raises(Forbidden, match="bound to a pod scheduled on a different node"):
            await node.create_token(ns, "robot", bound_pod=pod)
        mine = core_pb2.Pod()
        mine.CopyFrom(pod)
        mine.metadata.name, mine.spec.node_name = "here", "sa-node"
        mine.metadata.ClearField("uid")
        mine.metadata.ClearField("resource_version")
        mine = await admin.create(mine)
        answer = await node.create_token(ns, "robot", bound_pod=mine, expiration_seconds=3607)
        assert answer.status.token and answer.spec.expiration_seconds == 3607
        status, review = whoami(cluster, answer.status.token)  # as the kubelet's projected file is used
        assert status == 201, review
        with pytest.raises(NotFound):
            await node.create_token(ns, "nobody", bound_pod=mine)


async def test_kubectl_create_token_gives_a_token_kubectl_can_use(cluster: components.ClusterPlan, admin: Client,
                                                                 ns: str, tmp_path: Path) -> None:
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed on this machine")
    await service_account(admin, ns)
    await bind_view(admin, ns)

    def kubectl(*args: str, kubeconfig: str = cluster.kubeconfig_path(components.ADMIN)) -> str:
        done = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    token = kubectl("create", "token", "robot", "-n", ns, "--duration", "10m").strip()
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == 600
    empty = tmp_path / "empty.conf"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    out = kubectl("--server", f"https://127.0.0.1:{cluster.api_port}", "--certificate-authority",
                  cluster.path(f"{components.CA}.crt"), "--token", token, "get", "serviceaccounts", "-n", ns,
                  kubeconfig=str(empty))
    assert out.split("\n")[0].split() == ["NAME", "SECRETS", "AGE"] and out.split("\n")[1].split()[:2] == ["robot", "0"]


async def test_every_namespace_gets_a_default_account_and_the_root_ca(cluster: components.ClusterPlan,
                                                                      admin: Client) -> None:
    from client import InformerFactory
    from controlplane.controllers.rootcacert import RootCACertPublisher
    from controlplane.controllers.serviceaccounts import ServiceAccountsController
    ca_pem = cluster_ca(cluster)
    factory = InformerFactory(admin)
    controllers = [ServiceAccountsController(admin, factory), RootCACertPublisher(admin, factory, ca_pem)]
    factory.start()
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    try:
        name = f"fresh-{uuid.uuid4().hex[:6]}"
        namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
        namespace.metadata.name = name
        await admin.create(namespace)

        async def eventually(read: Any) -> Any:
            for _ in range(100):
                try:
                    return await read()
                except NotFound:
                    await asyncio.sleep(0.05)
            return await read()

        sa = await eventually(lambda: admin.get(core_pb2.ServiceAccount, "default", name))
        assert sa.metadata.name == "default"
        cm = await eventually(lambda: admin.get(core_pb2.ConfigMap, "kube-root-ca.crt", name))
        assert dict(cm.data) == {"ca.crt": ca_pem}
        # Deleted or edited, both come back.
        await admin.delete(core_pb2.ServiceAccount, "default", name)
        cm.data["ca.crt"] = "not a CA"
        await admin.update(cm)
        await asyncio.sleep(0.3)
        again = await eventually(lambda: admin.get(core_pb2.ServiceAccount, "default", name))
        assert again.metadata.uid != sa.metadata.uid
        for _ in range(100):
            cm = await admin.get(core_pb2.ConfigMap, "kube-root-ca.crt", name)
            if cm.data["ca.crt"] == ca_pem:
                break
            await asyncio.sleep(0.05)
        assert dict(cm.data) == {"ca.crt": ca_pem}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        factory.stop()


async def test_kctl_creates_accounts_and_tokens(cluster: components.ClusterPlan, admin: Client, ns: str) -> None:
    import sys
    kctl = str(Path(sys.executable).parent / "kctl")
    config = cluster.kubeconfig_path(components.ADMIN)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kctl, "--kubeconfig", config, "-n", ns, *args], capture_output=True, text=True,
                              timeout=60)

    done = run("create", "serviceaccount", "bot")
    assert (done.returncode, done.stdout) == (0, "serviceaccount/bot created\n"), done.stderr
    done = run("create", "token", "bot", "--duration", "15m", "--audience", "vault", "--audience", "api")
    assert done.returncode == 0, done.stderr
    claims = claims_of(done.stdout.strip())
    assert claims["exp"] - claims["iat"] == 900 and claims["aud"] == ["vault", "api"]
    done = run("get", "sa")
    assert done.stdout.split("\n")[0].split() == ["NAME", "SECRETS", "AGE"] and "bot" in done.stdout, done.stderr
    done = run("create", "token", "bot", "--bound-object-name", "web")
    assert done.returncode != 0 and "can only be set if --bound-object-kind is provided" in done.stderr
    done = run("create", "token", "bot", "--bound-object-kind", "Pod", "--bound-object-name", "ghost")
    assert done.returncode != 0 and 'pods "ghost" not found' in done.stderr, done.stderr
    done = run("create", "token", "nobody")
    assert done.returncode != 0 and 'serviceaccounts "nobody" not found' in done.stderr, done.stderr
    done = run("create", "token", "bot", "--duration", "5m")
    assert done.returncode != 0 and "may not specify a duration less than 10 minutes" in done.stderr, done.stderr


def web_pod(namespace: str, name: str = "web", **spec: Any) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.spec.init_containers.add(name="init", image="busybox")
    pod.spec.containers.add(name="c", image="busybox")
    for field, value in spec.items():
        setattr(pod.spec, field, value)
    return pod


async def test_admission_mounts_the_api_access_volume_in_every_container(cluster: components.ClusterPlan,
                                                                         admin: Client, ns: str) -> None:
    await service_account(admin, ns, "default")
    pod = await admin.create(web_pod(ns))
    assert pod.spec.service_account_name == "default"
    [volume] = [v for v in pod.spec.volumes if v.name.startswith("kube-api-access-")]
    assert len(volume.name) == len("kube-api-access-") + 5
    from proto import manifest
    assert manifest.to_dict(volume)["projected"] == {
        "defaultMode": 420,
        "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        assert [(m.name, m.mount_path, m.read_only) for m in container.volume_mounts] == [
            (volume.name, "/var/run/secrets/kubernetes.io/serviceaccount", True)]


async def test_automount_false_on_the_pod_or_the_account_means_no_token(cluster: components.ClusterPlan,
                                                                        admin: Client, ns: str) -> None:
    quiet = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount", automount_service_account_token=False)
    quiet.metadata.name, quiet.metadata.namespace = "quiet", ns
    await admin.create(quiet)
    await service_account(admin, ns, "robot")
    pods = [await admin.create(web_pod(ns, "a", service_account_name="quiet")),
            await admin.create(web_pod(ns, "b", service_account_name="robot", automount_service_account_token=False))]
    assert all(not p.spec.volumes and not p.spec.containers[0].volume_mounts for p in pods)
    # The pod's own word wins over its account's.
    loud = await admin.create(web_pod(ns, "c", service_account_name="quiet", automount_service_account_token=True))
    assert [v.name[:16] for v in loud.spec.volumes] == ["kube-api-access-"]


async def test_a_pod_naming_a_missing_account_is_refused(cluster: components.ClusterPlan, admin: Client,
                                                         ns: str) -> None:
    with pytest.raises(Forbidden) as refused:
        await admin.create(web_pod(ns, service_account_name="ghost"))
    assert str(refused.value) == (f'pods "web" is forbidden: error looking up service account {ns}/ghost: '
                                  'serviceaccount "ghost" not found')
    with pytest.raises(NotFound):
        await admin.get(core_pb2.Pod, "web", ns)  # nothing stored
    # Without the controller manager's `default` account the pod still runs, with no token and a warning.
    status, answer = https(cluster, "POST", f"/api/v1/namespaces/{ns}/pods",
                           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
                            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, admin=True)
    assert status == 201 and answer["spec"]["serviceAccountName"] == "default", answer
    assert "volumes" not in answer["spec"]


async def test_the_kubernetes_service_lists_the_live_apiservers(cluster: components.ClusterPlan, admin: Client,
                                                                tmp_path: Path) -> None:
    from proto import discovery_pb2

    async def addresses() -> tuple[list[str], list[str]]:
        endpoints = await admin.get(core_pb2.Endpoints, "kubernetes", "default")
        slice_ = await admin.get(discovery_pb2.EndpointSlice, "kubernetes", "default")
        return ([a.ip for s in endpoints.subsets for a in s.addresses],
                [a for e in slice_.endpoints for a in e.addresses])

    async def until(wanted: list[str]) -> None:
        for _ in range(150):
            try:
                if await addresses() == (wanted, wanted):
                    return
            except NotFound:
                pass
            await asyncio.sleep(0.1)
        assert await addresses() == (wanted, wanted)

    svc = await admin.get(core_pb2.Service, "kubernetes", "default")
    assert svc.spec.cluster_ip == "10.96.0.1" and not svc.spec.selector
    assert [(p.name, p.port, p.target_port, p.protocol) for p in svc.spec.ports] == [
        ("https", 443, str(cluster.api_port), "TCP")]
    await until(["192.0.2.10"])
    endpoints = await admin.get(core_pb2.Endpoints, "kubernetes", "default")
    assert [(p.name, p.port) for p in endpoints.subsets[0].ports] == [("https", cluster.api_port)]
    # A second apiserver on the same etcd (as another master) joins the endpoints, and leaves them when it stops.
    argv = components.apiserver_argv(cluster)
    second = [*argv[:argv.index("--https-listen")], "--https-listen", f"127.0.0.1:{cluster.api_port}"]
    rest = argv[argv.index("--https-listen") + 2:]
    for flag in ("--secure-listen", "--token-listen"):
        i = rest.index(flag)
        rest[i + 1] = f"127.0.0.1:{free_port()}"
    key = signing_key_path(cluster)
    second += [*rest, "--service-account-signing-key-file", key, "--advertise-address", "192.0.2.11"]
    # Its own HTTPS port; the Service's targetPort stays the first's (every master uses one port in a cluster).
    second[second.index("--https-listen") + 1] = f"127.0.0.1:{free_port()}"
    proc = Process("apiserver-2", second, tmp_path / "apiserver-2.log")
    proc.start()
    try:
        await until(["192.0.2.10", "192.0.2.11"])
    finally:
        proc.stop()
    await until(["192.0.2.10"])


def signing_key_path(plan: components.ClusterPlan) -> str:
    argv = components.apiserver_argv(plan)
    if "--service-account-signing-key-file" in argv:
        return argv[argv.index("--service-account-signing-key-file") + 1]
    return str(plan.config_dir / "pki" / "sa.key")
