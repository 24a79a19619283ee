"""One pruning run: find what runs, then per repository read, plan, log and (unless dry) delete.

The repositories: the configured ones (`PRUNE_REPOSITORIES`, or the stack's own image
repository), then, with a Bake file, each target's repository under the stack's prefix as
the builds table names it. Each is a unit of its own: its own snapshot, branches, cache
refs and plan; one that fails is reported and the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from layercache import aws
from layercache.build_records import BuildsTable, utc_now
from layercache.pruning.ecr import DeleteOutcome, EcrRegistry
from layercache.pruning.in_use import (
    EcsServices,
    EcsTasks,
    InUseSource,
    LambdaFunctions,
    ServiceImages,
    TagRef,
    collect,
    protected_tags_for,
)
from layercache.pruning.plan import Plan, Policy, make_plan
from layercache.pruning.repositories import ImageRepositories
from layercache.pruning.settings import PrunerSettings

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

logger = Logger(child=True)

REPOSITORY_NOT_FOUND = "RepositoryNotFoundException"


@dataclass(frozen=True)
class RepositoryReport:
    repository: str
    dry_run: bool
    plan: Plan
    outcome: DeleteOutcome | None
    aws_calls: int
    # Why this repository could not be pruned (nothing of it was deleted), if it could not.
    error: str | None = None
    # A Bake target's repository that no longer exists (deleted by hand): skipped, no error.
    missing: bool = False

    @property
    def images_kept(self) -> int:
        return len(self.plan.kept)

    @property
    def images_deleted(self) -> int:
        return len(self.outcome.deleted) if self.outcome else 0

    @property
    def bytes_freed(self) -> int:
        return self.outcome.bytes_freed if self.outcome else 0

    @property
    def failures(self) -> int:
        return len(self.outcome.failed) + len(self.outcome.skipped) if self.outcome else 0

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "repository": self.repository,
            "dry_run": self.dry_run,
            "images": len(self.plan.decisions),
            "kept": self.images_kept,
            "planned_deletions": len(self.plan.deleted),
            "planned_bytes": self.plan.bytes_to_free,
            "reasons": self.plan.reason_counts(),
            "aws_calls": self.aws_calls,
        }
        if self.error is not None:
            summary["error"] = self.error
        if self.missing:
            summary["missing"] = True
        if self.outcome is not None:
            summary |= {
                "deleted": self.images_deleted,
                "already_gone": len(self.outcome.already_gone),
                "failed": [asdict(f) for f in self.outcome.failed],
                "skipped": [asdict(f) for f in self.outcome.skipped],
                "bytes_freed": self.bytes_freed,
            }
        return summary


class Pruner:
    """Prunes the configured repositories under the configured policy."""

    def __init__(
        self,
        settings: PrunerSettings,
        registry: EcrRegistry,
        in_use_sources: Sequence[InUseSource] = (),
        clock: Callable[[], datetime] = utc_now,
        ecs_services: EcsServices | None = None,
        image_repositories: ImageRepositories | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._in_use_sources = in_use_sources
        self._clock = clock
        self._ecs_services = ecs_services
        self._image_repositories = image_repositories

    def run(self) -> list[RepositoryReport]:
        """Prune every repository; one that fails is reported and the others still run.

        What runs (ECS, Lambda) is read first: if that fails, nothing is pruned at all.
        The Bake targets' repositories come after the configured ones; if the builds table
        cannot be read, that is reported like a repository that failed (`<image>/*`).
        """
        in_use = collect(self._in_use_sources)
        services = self._ecs_services.images() if self._ecs_services else ServiceImages()
        for digest, where in services.digests.items():
            in_use.setdefault(digest, where)
        policy = self.settings.policy(in_use)
        configured = self.settings.repositories
        reports = [
            self._prune_or_report(repository, policy, services.tags) for repository in configured
        ]
        if self._image_repositories is not None:
            reports += self._prune_image_repositories(
                self._image_repositories, configured, policy, services.tags
            )
        return reports

    def _prune_image_repositories(
        self,
        source: ImageRepositories,
        configured: Sequence[str],
        policy: Policy,
        service_tags: Mapping[TagRef, str],
    ) -> list[RepositoryReport]:
        try:
            names = source.names()
        except Exception as error:
            logger.exception(
                "Could not read the image repositories", extra={"repository": source.pattern}
            )
            return [self._failed(source.pattern, error, aws_calls=0)]
        logger.info(
            "Image repositories of the Bake file",
            extra={"prefix": source.pattern, "repositories": list(names)},
        )
        cache = self.settings.cache_repository_name
        caches = [source.cache_of(name, cache) for name in names] if cache else []
        return [
            self._prune_or_report(name, policy, service_tags, may_be_gone=True)
            for name in (*names, *caches)
            if name not in configured  # listed in PRUNE_REPOSITORIES too: pruned once
        ]

    def _prune_or_report(
        self,
        repository: str,
        policy: Policy,
        service_tags: Mapping[TagRef, str],
        *,
        may_be_gone: bool = False,
    ) -> RepositoryReport:
        """`prune`, or a report of why not. With `may_be_gone`, a repository that does not
        exist (a Bake target's, deleted by hand) is skipped: reported `missing`, no error."""
        calls_before = self._registry.total_calls
        try:
            return self.prune(repository, policy, service_tags)
        except ClientError as error:
            if not (may_be_gone and _code(error) == REPOSITORY_NOT_FOUND):
                logger.exception("Could not prune repository", extra={"repository": repository})
                return self._failed(repository, error, self._registry.total_calls - calls_before)
            logger.info(
                "Skipped an image repository that no longer exists",
                extra={"repository": repository},
            )
            return RepositoryReport(
                repository=repository,
                dry_run=self.settings.prune_dry_run,
                plan=Plan(kept=(), deleted=()),
                outcome=None,
                aws_calls=self._registry.total_calls - calls_before,
                missing=True,
            )
        except Exception as error:
            logger.exception("Could not prune repository", extra={"repository": repository})
            return self._failed(repository, error, self._registry.total_calls - calls_before)

    def _failed(self, repository: str, error: Exception, aws_calls: int) -> RepositoryReport:
        return RepositoryReport(
            repository=repository,
            dry_run=self.settings.prune_dry_run,
            plan=Plan(kept=(), deleted=()),
            outcome=None,
            aws_calls=aws_calls,
            error=f"{type(error).__name__}: {error}"[:1000],
        )

    def prune(
        self,
        repository: str,
        policy: Policy,
        service_tags: Mapping[TagRef, str] | None = None,
    ) -> RepositoryReport:
        dry_run = self.settings.prune_dry_run
        calls_before = self._registry.total_calls
        images = self._registry.snapshot(repository)
        if service_tags:  # tags of this repository an ECS service names
            uri = self._registry.repository_uri(repository)
            policy = replace(policy, in_use_tags=protected_tags_for(uri, service_tags))
        plan = make_plan(images, policy, self._clock())
        _log_plan(repository, plan, dry_run)
        outcome = None if dry_run else self._registry.delete(repository, plan)
        report = RepositoryReport(
            repository=repository,
            dry_run=dry_run,
            plan=plan,
            outcome=outcome,
            aws_calls=self._registry.total_calls - calls_before,
        )
        logger.info("Pruned repository", extra={"summary": report.summary()})
        return report


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _log_plan(repository: str, plan: Plan, dry_run: bool) -> None:
    """Every deletion with its reason; kept images too on a dry run (at debug level otherwise)."""
    for decision in plan.kept:
        record = {"repository": repository, "dry_run": dry_run, **decision.log_record()}
        if dry_run:
            logger.info("Plan: keep", extra=record)
        else:
            logger.debug("Plan: keep", extra=record)
    for decision in plan.deleted:
        record = {"repository": repository, "dry_run": dry_run, **decision.log_record()}
        logger.info("Plan: delete", extra=record)


def dry_run_plan(
    ecr_client: ECRClient | Any,
    repository: str,
    policy: Policy | None = None,
    now: datetime | None = None,
    in_use: Mapping[str, str] | None = None,
) -> tuple[Plan, int]:
    """A full dry-run plan of `repository` and the number of AWS calls it took (benchmark hook)."""
    registry = EcrRegistry(ecr_client)
    policy = policy or Policy(in_use=dict(in_use or {}))
    plan = make_plan(registry.snapshot(repository), policy, now or utc_now())
    return plan, registry.total_calls


@cache
def default_service() -> Pruner:
    """The pruner as the deployed function runs it (tests call `default_service.cache_clear()`)."""
    settings = PrunerSettings.from_env()
    sources: list[InUseSource] = []
    if settings.prune_check_ecs_tasks:
        sources.append(EcsTasks())
    if settings.prune_check_lambda_functions:
        sources.append(LambdaFunctions())
    services = EcsServices() if settings.prune_check_ecs_tasks else None
    image_repositories = None
    if settings.reads_image_repositories:
        table = BuildsTable(settings.builds_table_name, aws.client("dynamodb"))
        image_repositories = ImageRepositories(table, settings.image_repository_name)
    return Pruner(
        settings,
        EcrRegistry(),
        sources,
        ecs_services=services,
        image_repositories=image_repositories,
    )
