"""Typed models of the events the triggers receive."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

from layercache.build_records import BuildMode
from layercache.triggers.decisions import PushFacts

# GitHub's push payload lists at most this many commits; with that many, some may be missing.
GITHUB_MAX_LISTED_COMMITS = 20


class _Lenient(BaseModel):
    """GitHub and AWS add fields over time: ignore what we don't read."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GitHubCommit(_Lenient):
    id: str
    message: str = ""
    added: list[str] | None = None
    removed: list[str] | None = None
    modified: list[str] | None = None

    @property
    def paths(self) -> list[str] | None:
        if self.added is None and self.removed is None and self.modified is None:
            return None
        return [*(self.added or ()), *(self.removed or ()), *(self.modified or ())]


class GitHubRepository(_Lenient):
    full_name: str


class GitHubPushEvent(_Lenient):
    """The body of a GitHub `push` webhook delivery."""

    ref: str
    before: str
    after: str
    created: bool = False
    deleted: bool = False
    repository: GitHubRepository
    head_commit: GitHubCommit | None = None
    commits: list[GitHubCommit] = Field(default_factory=list)

    def facts(self) -> PushFacts:
        return PushFacts(
            ref=self.ref,
            deleted=self.deleted,
            head_commit_message=self.head_commit.message if self.head_commit else None,
            changed_paths=self.changed_paths(),
        )

    def changed_paths(self) -> list[str] | None:
        """Every file the push changed, or None when the payload can't say for sure."""
        if not self.commits or len(self.commits) >= GITHUB_MAX_LISTED_COMMITS:
            return None
        paths: list[str] = []
        for commit in self.commits:
            commit_paths = commit.paths
            if commit_paths is None:
                return None
            paths.extend(commit_paths)
        return paths


class CodeCommitReferenceDetail(_Lenient):
    """`detail` of a "CodeCommit Repository State Change" event."""

    event: Literal["referenceCreated", "referenceUpdated", "referenceDeleted"]
    repository_name: str = Field(alias="repositoryName")
    reference_type: str = Field(alias="referenceType")
    reference_name: str = Field(alias="referenceName")
    reference_full_name: str | None = Field(default=None, alias="referenceFullName")
    commit_id: str | None = Field(default=None, alias="commitId")
    old_commit_id: str | None = Field(default=None, alias="oldCommitId")

    @property
    def ref(self) -> str:
        if self.reference_full_name:
            return self.reference_full_name
        prefix = "refs/heads/" if self.reference_type == "branch" else "refs/tags/"
        return prefix + self.reference_name


class CodeCommitReferenceEvent(EventBridgeModel):
    detail: CodeCommitReferenceDetail


class NightlyRebuildRequest(_Lenient):
    """What EventBridge Scheduler sends (template Input), or a hand-made request.

    Without `scheduled_time` it is a manual run: it builds every time it is invoked.
    """

    mode: BuildMode = BuildMode.REFRESH
    scheduled_time: datetime | None = None
    execution_id: str | None = None
    branches: list[str] | None = None
