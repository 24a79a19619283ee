"""A CodeCommit branch update (EventBridge), from decision to build start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from layercache.build_records import Trigger, utc_now
from layercache.build_requests import BuildRequestMessage, BuildRequestQueue
from layercache.triggers.decisions import PushDecision, PushFacts, branch_of, decide_push
from layercache.triggers.models import CodeCommitReferenceDetail
from layercache.triggers.settings import CodeCommitTriggerSettings

if TYPE_CHECKING:
    from mypy_boto3_codecommit import CodeCommitClient

logger = Logger(child=True)


class CodeCommitChanges:
    """What a push changed, read from CodeCommit (moto lacks these APIs: tests stub them)."""

    def __init__(self, client: CodeCommitClient, max_pages: int) -> None:
        self.client = client
        self.max_pages = max_pages

    def commit_message(self, repository: str, commit_id: str) -> str:
        commit = self.client.get_commit(repositoryName=repository, commitId=commit_id)["commit"]
        return commit.get("message", "")

    def changed_paths(self, repository: str, before: str | None, after: str) -> list[str] | None:
        """Paths changed between two commits; None when unknowable (new branch, huge diff)."""
        if not before or set(before) == {"0"}:
            return None
        paths: list[str] = []
        pages = self.client.get_paginator("get_differences").paginate(
            repositoryName=repository, beforeCommitSpecifier=before, afterCommitSpecifier=after
        )
        for number, page in enumerate(pages, start=1):
            for difference in page.get("differences", []):
                for blob in (difference.get("beforeBlob"), difference.get("afterBlob")):
                    if blob and blob.get("path"):
                        paths.append(blob["path"])
            if number == self.max_pages and page.get("NextToken"):
                logger.info("Diff too large to read whole; building anyway")
                return None
        return paths


@dataclass(frozen=True)
class TriggerResult:
    decision: PushDecision
    # The hand-over's message id, when the push was handed on to the starter.
    request_id: str | None = None


class CodeCommitTriggerService:
    def __init__(
        self,
        settings: CodeCommitTriggerSettings,
        changes: CodeCommitChanges,
        queue: BuildRequestQueue,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.changes = changes
        self.queue = queue
        self.clock = clock

    def handle(
        self, detail: CodeCommitReferenceDetail, pushed_at: datetime | None = None
    ) -> TriggerResult:
        """Decide on one branch update and hand it on; `pushed_at` is the event's time."""
        repository = self.settings.source_repository
        if repository and detail.repository_name != repository:
            return TriggerResult(
                PushDecision(False, f"event of repository {detail.repository_name}")
            )
        if detail.event == "referenceDeleted" or not detail.commit_id:
            return TriggerResult(PushDecision(False, f"{detail.reference_name} was deleted"))
        branch = branch_of(detail.ref)
        policy = self.settings.push_policy()
        if branch is None or branch not in policy.watched_branches:
            # Cheap rules first: no CodeCommit call for a push we would not build anyway.
            return TriggerResult(decide_push(PushFacts(detail.ref, False, None, ()), policy))
        facts = PushFacts(
            ref=detail.ref,
            deleted=False,
            head_commit_message=self.changes.commit_message(
                detail.repository_name, detail.commit_id
            ),
            changed_paths=(
                self.changes.changed_paths(
                    detail.repository_name, detail.old_commit_id, detail.commit_id
                )
                if policy.path_filters
                else None
            ),
        )
        decision = decide_push(facts, policy)
        logger.info("Push decision", extra={"build": decision.build, "reason": decision.reason})
        # Handed on even without a build: it moves the branch the starter orders by.
        request = BuildRequestMessage.for_push(
            image=self.settings.image_repository_name,
            branch=branch,
            commit=detail.commit_id,
            before=detail.old_commit_id,
            trigger=Trigger.CODECOMMIT,
            requested_at=self.clock(),
            pushed_at=pushed_at,
            build=decision.build,
            reason=decision.reason,
        )
        return TriggerResult(decision, self.queue.send(request))
