"""kctl's subcommands, one module per family; `COMMANDS` is what main.py registers."""

from __future__ import annotations

import click

from kctl.commands.apply import apply, create
from kctl.commands.batch import create_cronjob, create_job  # noqa: F401 - adds `create job|cronjob`
from kctl.commands.certificate import certificate
from kctl.commands.delete import delete
from kctl.commands.describe import describe
from kctl.commands.etcd import etcd
from kctl.commands.get import get
from kctl.commands.images import image
from kctl.commands.info import api_resources, version
from kctl.commands.ingress import create_ingress  # noqa: F401 - adds `create ingress`
from kctl.commands.join import join
from kctl.commands.metadata import annotate, label
from kctl.commands.nodes import cordon, drain, taint, uncordon
from kctl.commands.pods import exec_, logs
from kctl.commands.rbac import auth  # also adds `create role|clusterrole|rolebinding|clusterrolebinding`
from kctl.commands.secrets import create_secret  # noqa: F401 - adds `create secret docker-registry`
from kctl.commands.serviceaccounts import create_service_account  # noqa: F401 - adds `create sa|token`
from kctl.commands.token import token
from kctl.commands.wait import wait
from kctl.commands.workloads import COMMANDS as WORKLOADS  # also adds `create deployment`

COMMANDS: tuple[click.Command, ...] = (get, describe, apply, create, delete, label, annotate,
                                       api_resources, version, auth, etcd, *WORKLOADS, logs, exec_,
                                       cordon, uncordon, drain, taint, image, token, certificate, join,
                                       wait)
