"""The hand-over between the triggers and the build starter: one message per build request.

The triggers decide and hand a `BuildRequestMessage` to BuildRequestQueue (SQS FIFO), answering
their caller at once; BuildStarterFunction consumes it. Every field is fixed when the
trigger accepts the request, so the consumer's retries send CodeBuild the same StartBuild.

Ordering: one message group per image and branch, so a branch's requests are handled one
at a time in the order they were accepted (the consumer then orders by what the events
say about commits, not by arrival alone; see docs/ordering.md).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from layercache.build_records import BuildMode, Trigger, claim_pk, timestamp

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REFS_HEADS = "refs/heads/"


class BuildRequestMessage(BaseModel):
    """One request to build a branch, as a trigger accepted it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(min_length=1)
    branch: str = Field(min_length=1)
    # The pushed commit; None for nightly and manual builds of the branch head.
    commit: str | None = None
    # The branch's commit before the push, as the event says (GitHub `before`,
    # CodeCommit `oldCommitId`): the evidence that `commit` is newer than it.
    before: str | None = None
    # A force push (GitHub `forced`): it may move the branch back to an older commit.
    forced: bool = False
    trigger: Trigger
    mode: BuildMode = BuildMode.NORMAL
    # What makes two requests the same: the commit for pushes, the night for schedules.
    occasion: str = Field(min_length=1)
    requested_at: datetime
    # When the source says the push happened (GitHub `repository.pushed_at`, the
    # CodeCommit event's time): the last resort for ordering unrelated commits.
    pushed_at: datetime | None = None
    # False for a push that moves the branch but needs no image (path filters, [skip ci]).
    build: bool = True
    reason: str = ""
    delivery_id: str | None = None

    @classmethod
    def for_push(
        cls,
        *,
        image: str,
        branch: str,
        commit: str,
        before: str | None,
        trigger: Trigger,
        requested_at: datetime,
        pushed_at: datetime | None,
        build: bool,
        reason: str,
        delivery_id: str | None = None,
        forced: bool = False,
    ) -> BuildRequestMessage:
        return cls(
            image=image,
            branch=branch,
            commit=commit,
            before=before if before and set(before) != {"0"} else None,
            forced=forced,
            trigger=trigger,
            occasion=commit,
            requested_at=requested_at,
            pushed_at=pushed_at,
            build=build,
            reason=reason,
            delivery_id=delivery_id,
        )

    @property
    def source_version(self) -> str:
        """What CodeBuild checks out: the exact commit, else the branch (never a bare name,
        which git would resolve to a tag of the same name first)."""
        return self.commit or REFS_HEADS + self.branch

    @property
    def claim_pk(self) -> str:
        occasion = (
            self.occasion if self.mode is BuildMode.NORMAL else f"{self.occasion}@{self.mode}"
        )
        return claim_pk(self.image, self.branch, occasion)

    @property
    def group_id(self) -> str:
        """The FIFO message group: one per image and branch (any text, so hashed)."""
        return hashlib.sha256(f"{self.image}#{self.branch}".encode()).hexdigest()

    @property
    def deduplication_id(self) -> str:
        """Identical messages sent twice within SQS's 5-minute window are kept once."""
        return hashlib.sha256(self.to_message().encode()).hexdigest()

    def to_message(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_message(cls, body: str) -> BuildRequestMessage:
        return cls.model_validate_json(body)

    def log_keys(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "commit": self.commit,
            "trigger": self.trigger.value,
            "occasion": self.occasion,
            "requested_at": timestamp(self.requested_at),
        }


class BuildRequestQueue:
    """Hands requests on to BuildRequestQueue (SQS FIFO)."""

    def __init__(self, queue_url: str, client: SQSClient) -> None:
        self.queue_url = queue_url
        self.client = client

    def send(self, request: BuildRequestMessage) -> str:
        """Send one request durably; its message id. Raises when SQS does not take it."""
        response = self.client.send_message(
            QueueUrl=self.queue_url,
            MessageBody=request.to_message(),
            MessageGroupId=request.group_id,
            MessageDeduplicationId=request.deduplication_id,
        )
        return str(response["MessageId"])
