"""Strategies of batch/v1: Job and CronJob (Kubernetes' pkg/registry/batch/{job,cronjob}/strategy.go).

A new Job gets its selector from the server: unless `manualSelector` is true,
its pod template is labelled with the Job's uid and name
(`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and their
legacy unprefixed twins) and its selector matches the uid, so its pods can never
be mistaken for another Job's — even a later Job of the same name. Both kinds
start with an empty status: it is the controllers' to write.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import batch as validation
from controlplane.apiserver.validation.field import Errors
from proto import batch_pb2
from proto.wellknown import (
    LABEL_CONTROLLER_UID,
    LABEL_JOB_NAME,
    LABEL_LEGACY_CONTROLLER_UID,
    LABEL_LEGACY_JOB_NAME,
)


def generate_selector(job: batch_pb2.Job) -> None:
    """Label the template with the Job's uid and name, and select the uid (generateSelector).

    Labels the user already set are kept: a conflicting one makes the selector miss
    the template, which validation then refuses.
    """
    labels = job.spec.template.metadata.labels
    for key in (LABEL_LEGACY_JOB_NAME, LABEL_JOB_NAME):
        labels.setdefault(key, job.metadata.name)
    for key in (LABEL_LEGACY_CONTROLLER_UID, LABEL_CONTROLLER_UID):
        labels.setdefault(key, job.metadata.uid)
    job.spec.selector.match_labels.setdefault(LABEL_CONTROLLER_UID, job.metadata.uid)


class JobStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        job: Any = obj
        job.ClearField("status")
        if not (job.spec.HasField("manual_selector") and job.spec.manual_selector):
            generate_selector(job)

    def default(self, obj: Message) -> None:
        defaults.default_job(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_job(obj, old)  # type: ignore[arg-type]


class CronJobStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")

    def default(self, obj: Message) -> None:
        defaults.default_cron_job(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_cron_job(obj, old)  # type: ignore[arg-type]
