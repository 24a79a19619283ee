"""Build the starter from its settings and AWS clients (tests pass their own clients)."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING

from layercache import aws
from layercache.build_records import BuildsTable
from layercache.github_token import SecretToken
from layercache.starting.fan_out import BatchLauncher
from layercache.starting.service import BuildStarter
from layercache.starting.settings import StarterSettings
from layercache.starting.tips import (
    BranchTips,
    CodeCommitBranchTips,
    GitHubBranchTips,
    NoBranchTips,
)

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient
    from mypy_boto3_dynamodb import DynamoDBClient


def branch_tips(settings: StarterSettings) -> BranchTips:
    if settings.source_type == "CODECOMMIT" and settings.source_repository:
        return CodeCommitBranchTips(settings.source_repository, aws.client("codecommit"))
    if "/" in settings.source_repository and settings.github_token_secret_arn:
        token = SecretToken(settings.github_token_secret_arn)
        return GitHubBranchTips(settings.source_repository, token, settings.github_api_url)
    return NoBranchTips()


def make_build_starter(
    settings: StarterSettings,
    dynamodb: DynamoDBClient | None = None,
    codebuild: CodeBuildClient | None = None,
    tips: BranchTips | None = None,
) -> BuildStarter:
    codebuild = codebuild or aws.client("codebuild")
    batches = (
        BatchLauncher(codebuild, settings.build_project_name, settings.fan_out_max_builds)
        if settings.builds_in_batches
        else None
    )
    return BuildStarter(
        project_name=settings.build_project_name,
        table=BuildsTable(settings.builds_table_name, dynamodb or aws.client("dynamodb")),
        codebuild=codebuild,
        supersede=settings.supersede_older_builds,
        lease=timedelta(seconds=settings.claim_lease_seconds),
        tips=tips or branch_tips(settings),
        batches=batches,
        default_branch=settings.default_branch,
        platforms=settings.platforms,
        arm_image=settings.arm_build_image,
    )


@cache
def build_starter() -> BuildStarter:
    return make_build_starter(StarterSettings.from_env())


def reset() -> None:
    """Forget the cached starter (tests change the environment between cases)."""
    build_starter.cache_clear()
