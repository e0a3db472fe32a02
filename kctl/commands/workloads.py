"""kctl's workload verbs: rollout, scale, set image, create deployment, run, autoscale, expose, top.

Each is kubectl's verb on Flotilla's API and prints what kubectl prints
(`deployment.apps/web scaled`). They only write desired state (a
Deployment's replicas or template, a Service, an HPA); the controller
manager does the rest. `rollout` (status, history, undo for Deployments and
DaemonSets) lives in rollout.py and is registered from here. The async
functions (`rollout_undo`, `scale`, ...) take a Client, so tests and scripts
call them without a command line.
"""

from __future__ import annotations

from typing import Any

import click
from google.protobuf.message import Message

from client import Client
from client.retry import update_fresh
from kctl import context, printers, resources
from kctl.commands.apply import create
from kctl.commands.rollout import rollout, rollout_undo, target  # noqa: F401 - rollout_undo for scripts
from kctl.errors import CliError
from kctl.flags import INT32
from proto import apps_pb2, autoscaling_pb2, core_pb2, kinds, metrics_pb2
from proto.quantity import int_value, milli_value

# ---------------------------------------------------------------- scale, set image


async def scale(client: Client, kind: kinds.Kind, name: str, namespace: str, replicas: int) -> str:
    def change(obj: Any) -> bool:
        obj.spec.replicas = replicas
        return True

    await update_fresh(client, kind.message, name, namespace, change)
    return f"{resources.object_ref(kind, name)} scaled"


@click.command("scale")
@click.argument("args", nargs=-1, required=True)
@click.option("--replicas", type=INT32, required=True, help="The new number of replicas.")
@context.global_options
def scale_command(args: tuple[str, ...], replicas: int) -> None:
    """Set the number of replicas of a deployment, replica set or stateful set."""
    if replicas < 0:
        raise CliError("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    kind, name = target(args, tuple(k.kind for k in kinds.KINDS if k.scalable))
    namespace = context.settings().current_namespace
    click.echo(context.run(lambda client: scale(client, kind, name, namespace, replicas)))


@click.group("set")
def set_group() -> None:
    """Set specific features on objects (image)."""


@set_group.command("image")
@click.argument("args", nargs=-1, required=True)
@context.global_options
def set_image(args: tuple[str, ...]) -> None:
    """Update container images: TYPE NAME CONTAINER=IMAGE... ('*' for every container)."""
    pairs = [a for a in args if "=" in a]
    kind, name = target(tuple(a for a in args if "=" not in a),
                        ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Pod"))
    if not pairs:
        raise CliError("at least one image update is required")
    images = dict(p.split("=", 1) for p in pairs)
    namespace = context.settings().current_namespace

    def change(obj: Any) -> bool:
        spec = obj.spec if kind.kind == "Pod" else obj.spec.template.spec
        containers = [*spec.init_containers, *spec.containers]
        for cname in images:
            if cname != "*" and not any(c.name == cname for c in containers):
                raise CliError(f'unable to find container named "{cname}"')
        for c in containers:
            image = images.get(c.name, images.get("*"))
            if image is not None:
                c.image = image
        return True

    async def body(client: Client) -> None:
        await update_fresh(client, kind.message, name, namespace, change)
        click.echo(f"{resources.object_ref(kind, name)} image updated")

    context.run(body)


# ---------------------------------------------------------------- create deployment, run


def container_name(image: str) -> str:
    """kubectl names the container after the image: `registry/nginx:1.25` -> `nginx`."""
    base = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    return base or "app"


def new_deployment(name: str, namespace: str, image: str, replicas: int, port: int) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, namespace
    d.metadata.labels["app"] = name
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    c = d.spec.template.spec.containers.add(name=container_name(image), image=image)
    if port:
        c.ports.add(container_port=port)
    return d


@create.command("deployment")
@click.argument("name")
@click.option("--image", required=True, help="The image of the deployment's container.")
@click.option("-r", "--replicas", default=1, type=INT32, help="Number of replicas.")
@click.option("--port", default=0, type=INT32, help="The container port to expose.")
@context.global_options
def create_deployment(name: str, image: str, replicas: int, port: int) -> None:
    """Create a deployment named NAME running IMAGE."""
    d = new_deployment(name, context.settings().current_namespace, image, replicas, port)

    async def body(client: Client) -> None:
        created = await client.create(d)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)


create.add_command(create_deployment, "deploy")


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(f"invalid label spec: {item}")
        labels[key] = value
    return labels


@click.command("run")
@click.argument("name")
@click.argument("arguments", nargs=-1)
@click.option("--image", required=True, help="The container image to run.")
@click.option("--port", default=0, type=INT32, help="The port the container exposes.")
@click.option("-l", "--labels", default="", help="Labels for the pod, k=v,k2=v2 (default run=NAME).")
@click.option("--restart", default="Always", type=click.Choice(["Always", "OnFailure", "Never"]))
@click.option("--command", "as_command", is_flag=True,
              help="The words after -- are the command (replacing the image's entrypoint), not its arguments.")
@context.global_options
def run_command(name: str, arguments: tuple[str, ...], image: str, port: int, labels: str, restart: str,
                as_command: bool) -> None:
    """Run IMAGE as a bare pod named NAME: `kctl run NAME --image=IMAGE [-- ARG...]`.

    Words after `--` become the container's args (passed to the image's
    entrypoint), or with --command its command, as in kubectl.
    """
    if as_command and not arguments:
        raise CliError("--command needs the command after --: kctl run NAME --image=IMAGE --command -- CMD ARG...")
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, context.settings().current_namespace
    pod.metadata.labels.update(parse_labels(labels) or {"run": name})
    c = pod.spec.containers.add(name=name, image=image)
    (c.command if as_command else c.args).extend(arguments)
    if port:
        c.ports.add(container_port=port)
    pod.spec.restart_policy = restart

    async def body(client: Client) -> None:
        created = await client.create(pod)
        click.echo(f"pod/{created.metadata.name} created")

    context.run(body)


# ---------------------------------------------------------------- autoscale, expose


@click.command("autoscale")
@click.argument("args", nargs=-1, required=True)
@click.option("--min", "min_replicas", default=-1, type=INT32, help="Lower limit of replicas (default 1).")
@click.option("--max", "max_replicas", required=True, type=INT32, help="Upper limit of replicas.")
@click.option("--cpu-percent", default=-1, type=INT32, help="Target average CPU utilisation (default 80).")
@click.option("--name", default="", help="The HPA's name (default: the target's).")
@context.global_options
def autoscale(args: tuple[str, ...], min_replicas: int, max_replicas: int, cpu_percent: int, name: str) -> None:
    """Create a HorizontalPodAutoscaler for a deployment or replica set."""
    kind, target_name = target(args, ("Deployment", "ReplicaSet"))
    namespace = context.settings().current_namespace
    hpa = autoscaling_pb2.HorizontalPodAutoscaler(api_version="autoscaling/v2", kind="HorizontalPodAutoscaler")
    hpa.metadata.name, hpa.metadata.namespace = name or target_name, namespace
    ref = hpa.spec.scale_target_ref
    ref.api_version, ref.kind, ref.name = kind.api_version, kind.kind, target_name
    if min_replicas >= 1:
        hpa.spec.min_replicas = min_replicas
    hpa.spec.max_replicas = max_replicas
    if cpu_percent >= 0:
        metric = hpa.spec.metrics.add(type="Resource")
        metric.resource.name = "cpu"
        metric.resource.target.type = "Utilization"
        metric.resource.target.average_utilization = cpu_percent

    async def body(client: Client) -> None:
        await client.get(kind.message, target_name, namespace)  # NotFound reads better than a dangling HPA
        await client.create(hpa)
        click.echo(f"horizontalpodautoscaler.autoscaling/{hpa.metadata.name} autoscaled")

    context.run(body)


def _selector_of(obj: Message) -> dict[str, str]:
    """The labels a Service built from `obj` selects (kubectl expose's rules)."""
    if isinstance(obj, core_pb2.Pod):
        return dict(obj.metadata.labels)
    if isinstance(obj, core_pb2.Service):
        return dict(obj.spec.selector)
    spec: Any = getattr(obj, "spec")  # noqa: B009 - Deployment or ReplicaSet
    if spec.selector.match_expressions:
        raise CliError("couldn't convert expressions to map: the selector uses matchExpressions")
    return dict(spec.selector.match_labels)


@click.command("expose")
@click.argument("args", nargs=-1, required=True)
@click.option("--port", default=0, type=INT32, help="The port the service serves on.")
@click.option("--target-port", default="", help="The pod port (number or name) to send traffic to.")
@click.option("--type", "type_", default="ClusterIP",
              type=click.Choice(["ClusterIP", "NodePort", "LoadBalancer"]))
@click.option("--name", default="", help="The service's name (default: the exposed object's).")
@click.option("--protocol", default="TCP", type=click.Choice(["TCP", "UDP", "SCTP"]))
@context.global_options
def expose(args: tuple[str, ...], port: int, target_port: str, type_: str, name: str, protocol: str) -> None:
    """Expose a pod, deployment, replica set or service as a new Service."""
    kind, source = target(args, ("Pod", "Deployment", "ReplicaSet", "Service"))
    namespace = context.settings().current_namespace

    async def body(client: Client) -> None:
        obj = await client.get(kind.message, source, namespace)
        svc = core_pb2.Service(api_version="v1", kind="Service")
        svc.metadata.name, svc.metadata.namespace = name or source, namespace
        svc.metadata.labels.update(getattr(obj, "metadata").labels)  # noqa: B009
        svc.spec.selector.update(_selector_of(obj))
        if not svc.spec.selector:
            raise CliError(f"couldn't retrieve selectors via --selector flag or introspection: "
                           f"{kind.singular} {source} has no labels")
        svc.spec.type = type_
        exposed = port or _first_port(obj)
        if not exposed:
            raise CliError("couldn't find port via --port flag or introspection")
        svc.spec.ports.add(port=exposed, protocol=protocol, target_port=target_port or str(exposed))
        created = await client.create(svc)
        click.echo(f"service/{created.metadata.name} exposed")

    context.run(body)


def _first_port(obj: Message) -> int:
    if isinstance(obj, core_pb2.Service):
        return obj.spec.ports[0].port if obj.spec.ports else 0
    spec: Any = obj.spec if isinstance(obj, core_pb2.Pod) else getattr(obj, "spec").template.spec  # noqa: B009
    for c in spec.containers:
        for p in c.ports:
            return int(p.container_port)
    return 0


# ---------------------------------------------------------------- top


def _mi(value: int) -> str:
    return f"{value // (1024 * 1024)}Mi"


@click.group("top")
def top() -> None:
    """Show CPU and memory use of pods or nodes (from the kubelets' reports)."""


@top.command("pods")
@click.option("-A", "--all-namespaces", is_flag=True, help="Pods of every namespace.")
@click.option("--containers", is_flag=True, help="One line per container.")
@context.global_options
def top_pods(all_namespaces: bool, containers: bool) -> None:
    """CPU (cores) and memory (bytes) per pod."""
    namespace = "" if all_namespaces else context.settings().current_namespace

    async def body(client: Client) -> None:
        reports = sorted((await client.list(metrics_pb2.PodMetrics, namespace)).items,
                         key=lambda m: (m.metadata.namespace, m.metadata.name))
        if not reports:
            raise CliError("metrics not available yet" if all_namespaces
                           else f"No resources found in {namespace} namespace.")
        header = (["NAMESPACE"] if all_namespaces else []) + ["POD"] + (["NAME"] if containers else []) + [
            "CPU(cores)", "MEMORY(bytes)"]
        rows = [header]
        for m in reports:
            lead = [m.metadata.namespace] if all_namespaces else []
            if containers:
                for c in m.containers:
                    rows.append([*lead, m.metadata.name, c.name, f"{milli_value(c.usage.get('cpu', '0'))}m",
                                 _mi(int_value(c.usage.get("memory", "0")))])
            else:
                cpu = sum(milli_value(c.usage.get("cpu", "0")) for c in m.containers)
                mem = sum(int_value(c.usage.get("memory", "0")) for c in m.containers)
                rows.append([*lead, m.metadata.name, f"{cpu}m", _mi(mem)])
        click.echo("\n".join(printers.format_table(rows)))

    context.run(body)


@top.command("nodes")
@context.global_options
def top_nodes() -> None:
    """CPU and memory per node, and as a share of what the node can allocate."""

    async def body(client: Client) -> None:
        reports = sorted((await client.list(metrics_pb2.NodeMetrics)).items, key=lambda m: m.metadata.name)
        if not reports:
            raise CliError("metrics not available yet")
        nodes = {n.metadata.name: n for n in (await client.list(core_pb2.Node)).items}
        rows = [["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]]
        for m in reports:
            cpu, mem = milli_value(m.usage.get("cpu", "0")), int_value(m.usage.get("memory", "0"))
            node = nodes.get(m.metadata.name)
            alloc_cpu = milli_value(node.status.allocatable.get("cpu", "0")) if node else 0
            alloc_mem = int_value(node.status.allocatable.get("memory", "0")) if node else 0
            rows.append([m.metadata.name, f"{cpu}m", f"{cpu * 100 // alloc_cpu}%" if alloc_cpu else "<unknown>",
                         _mi(mem), f"{mem * 100 // alloc_mem}%" if alloc_mem else "<unknown>"])
        click.echo("\n".join(printers.format_table(rows)))

    context.run(body)


COMMANDS: tuple[click.Command, ...] = (rollout, scale_command, set_group, run_command, autoscale, expose, top)
