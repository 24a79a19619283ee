"""Typed models of the events the triggers receive."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from layercache.build_records import BuildMode
from layercache.triggers.decisions import PushFacts

# A push delivery lists at most this many commits, and at most this many changed files
# per commit: at either limit the payload may be cut, and the changed files are unknown.
# (GitHub's 20-commit cap applies to timeline events, not to webhook deliveries.)
GITHUB_MAX_LISTED_COMMITS = 2048
GITHUB_MAX_FILES_PER_COMMIT = 3000


class _SourceEventModel(BaseModel):
    """A part of a GitHub or CodeCommit event. Both add fields over time: ignore what we
    don't read."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GitHubCommit(_SourceEventModel):
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


class GitHubRepository(_SourceEventModel):
    full_name: str
    # Push deliveries carry the push's time here, as epoch seconds.
    pushed_at: int | datetime | None = None


class GitHubPushEvent(_SourceEventModel):
    """The body of a GitHub `push` webhook delivery."""

    ref: str
    before: str
    after: str
    created: bool = False
    deleted: bool = False
    forced: bool = False
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

    def pushed_time(self) -> datetime | None:
        """When GitHub says the push happened (ordering's last resort), if it says."""
        value = self.repository.pushed_at
        if isinstance(value, int):
            return datetime.fromtimestamp(value, tz=UTC)
        return value.astimezone(UTC) if isinstance(value, datetime) else None

    def changed_paths(self) -> list[str] | None:
        """Every file the push changed, or None when the payload can't say for sure."""
        if not self.commits or len(self.commits) >= GITHUB_MAX_LISTED_COMMITS:
            return None
        paths: list[str] = []
        for commit in self.commits:
            commit_paths = commit.paths
            if commit_paths is None or len(commit_paths) >= GITHUB_MAX_FILES_PER_COMMIT:
                return None
            paths.extend(commit_paths)
        return paths


class CodeCommitReferenceDetail(_SourceEventModel):
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


class NightlyRebuildRequest(BaseModel):
    """The nightly function's only inputs: EventBridge Scheduler's (the template's Input:
    `mode`, `scheduled_time`, `execution_id`), or a run by hand, `{"manual": true}` with
    optional `branches` (at least one) and `mode`.

    Anything else (a stray EventBridge event, `{}`, a mix of the two) is refused: it
    would start builds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: BuildMode = BuildMode.REFRESH
    scheduled_time: AwareDatetime | None = None
    execution_id: str | None = None
    manual: bool = False
    branches: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _scheduled_or_manual(self) -> NightlyRebuildRequest:
        if self.manual:
            if self.scheduled_time is not None or self.execution_id is not None:
                raise ValueError("a run by hand has no scheduled_time or execution_id")
        elif self.scheduled_time is None or self.branches is not None:
            raise ValueError(
                "either the schedule's scheduled_time (without branches) or manual: true"
            )
        return self
