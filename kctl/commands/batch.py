"""`kctl create job` and `kctl create cronjob`, as kubectl builds them.

`create job NAME --image=IMG [-- COMMAND...]` makes a Job of one container
named NAME (restartPolicy Never); `create job NAME --from=cronjob/CJ` runs a
CronJob's job template at once (owned by the CronJob and annotated
`cronjob.kubernetes.io/instantiate: manual`, as kubectl does), and
`create cronjob NAME --image=IMG --schedule=SPEC [-- COMMAND...]` a CronJob
whose pods restart OnFailure. The controllers do the rest; `get`, `describe`
and `apply` need nothing of their own.
"""

from __future__ import annotations

import click

from client import Client
from kctl import context, resources
from kctl.commands.apply import create
from kctl.errors import CliError
from proto import batch_pb2, meta_pb2
from proto.wellknown import ANNOTATION_CRONJOB_INSTANTIATE


def new_job(name: str, namespace: str, image: str, command: tuple[str, ...]) -> batch_pb2.Job:
    job = batch_pb2.Job(api_version="batch/v1", kind="Job")
    job.metadata.name, job.metadata.namespace = name, namespace
    job.spec.template.spec.containers.add(name=name, image=image, command=list(command))
    job.spec.template.spec.restart_policy = "Never"
    return job


def job_from_cron_job(name: str, cj: batch_pb2.CronJob) -> batch_pb2.Job:
    """A manual run of `cj`'s job template, owned by `cj` so its history and deletion follow it."""
    template = cj.spec.job_template
    job = batch_pb2.Job(api_version="batch/v1", kind="Job")
    job.metadata.name, job.metadata.namespace = name, cj.metadata.namespace
    job.metadata.annotations[ANNOTATION_CRONJOB_INSTANTIATE] = "manual"
    job.metadata.annotations.update(template.metadata.annotations)
    job.metadata.labels.update(template.metadata.labels)
    job.metadata.owner_references.append(meta_pb2.OwnerReference(
        api_version="batch/v1", kind="CronJob", name=cj.metadata.name, uid=cj.metadata.uid, controller=True))
    job.spec.CopyFrom(template.spec)
    return job


def new_cron_job(name: str, namespace: str, image: str, schedule: str, restart: str,
                 command: tuple[str, ...]) -> batch_pb2.CronJob:
    cj = batch_pb2.CronJob(api_version="batch/v1", kind="CronJob")
    cj.metadata.name, cj.metadata.namespace = name, namespace
    cj.spec.schedule = schedule
    cj.spec.job_template.metadata.name = name
    pod = cj.spec.job_template.spec.template.spec
    pod.containers.add(name=name, image=image, command=list(command))
    pod.restart_policy = restart
    return cj


async def _create(client: Client, obj: batch_pb2.Job | batch_pb2.CronJob) -> None:
    created = await client.create(obj)
    click.echo(f"{resources.ref_of(created)} created")


@create.command("job")
@click.argument("name")
@click.argument("command", nargs=-1)
@click.option("--image", default="", help="The image of the job's container.")
@click.option("--from", "from_", default="", help="Run a CronJob's job template now: --from=cronjob/NAME.")
@context.global_options
def create_job(name: str, command: tuple[str, ...], image: str, from_: str) -> None:
    """Create a job named NAME: `--image=IMAGE [-- COMMAND ARG...]`, or `--from=cronjob/NAME`."""
    if not image and not from_:
        raise CliError("either --image or --from must be specified")
    if image and from_:
        raise CliError("--image and --from are mutually exclusive")
    if command and from_:
        raise CliError("cannot specify --from and command")
    namespace = context.settings().current_namespace

    async def body(client: Client) -> None:
        if not from_:
            await _create(client, new_job(name, namespace, image, command))
            return
        type_name, _, source = from_.partition("/")
        if not source or resources.resolve(type_name).kind != "CronJob":
            raise CliError(f"from must be an existing cronjob: {from_}")
        cj = await client.get(batch_pb2.CronJob, source, namespace)
        await _create(client, job_from_cron_job(name, cj))

    context.run(body)


@create.command("cronjob")
@click.argument("name")
@click.argument("command", nargs=-1)
@click.option("--image", required=True, help="The image of the job's container.")
@click.option("--schedule", required=True, help="A schedule in cron format: '*/1 * * * *', '@hourly'.")
@click.option("--restart", default="OnFailure", type=click.Choice(["OnFailure", "Never"]),
              help="The job's restart policy.")
@context.global_options
def create_cronjob(name: str, command: tuple[str, ...], image: str, schedule: str, restart: str) -> None:
    """Create a cron job named NAME running IMAGE on SCHEDULE: `[-- COMMAND ARG...]`."""
    cj = new_cron_job(name, context.settings().current_namespace, image, schedule, restart, command)

    async def body(client: Client) -> None:
        await _create(client, cj)

    context.run(body)


create.add_command(create_cronjob, "cj")
