"""ImagePrunerFunction's settings, read once from the environment template.yaml sets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import Field, field_validator, model_validator

from layercache.pruning.plan import Policy
from layercache.settings import EnvSettings, split_csv

_REPOSITORY_ARN_MARK = ":repository/"


class PrunerSettings(EnvSettings):
    image_repository_name: str = Field(min_length=1)
    build_project_name: str = ""
    # With a Bake file, each target's repository `<image_repository_name>/<target>` is
    # pruned too: the builds table names them (`REPOSITORIES#<image>`).
    bake_file: str = ""
    builds_table_name: str = ""
    # The stack's cache repository (`<image_repository_name>-cache`; with a Bake file, each
    # image's cache is `<cache_repository_name>/<target>`): always pruned, like the images.
    cache_repository_name: str = ""
    # Repository ARNs (or names) to prune; empty: the stack's own image repository.
    prune_repositories: tuple[str, ...] = ()
    prune_protected_tags: tuple[str, ...] = ("latest", "v*")
    prune_keep_per_branch: int = Field(default=5, ge=1)
    prune_keep_days: float = Field(default=7.0, ge=0)
    prune_dry_run: bool = False
    prune_check_ecs_tasks: bool = True
    prune_check_lambda_functions: bool = True
    # Images whose tags follow no convention the pruner knows: kept (None), or this many days.
    prune_unknown_after_days: float | None = Field(default=None, ge=0)

    _split = field_validator("prune_repositories", "prune_protected_tags", mode="before")(split_csv)

    @field_validator("prune_unknown_after_days", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("prune_repositories")
    @classmethod
    def _valid_repositories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if entry.startswith("arn:") and _REPOSITORY_ARN_MARK not in entry:
                raise ValueError(f"not an ECR repository ARN: {entry}")
        return value

    @model_validator(mode="after")
    def _table_for_bake_repositories(self) -> Self:
        if self.reads_image_repositories and not self.builds_table_name:
            raise ValueError("BAKE_FILE is set: BUILDS_TABLE_NAME must name the builds table")
        return self

    @property
    def reads_image_repositories(self) -> bool:
        """Whether the Bake targets' repositories are read from the builds table."""
        return bool(self.bake_file.strip())

    @property
    def repositories(self) -> tuple[str, ...]:
        """Names of the repositories to prune (ARNs reduced to their repository name), and
        the stack's cache repository."""
        configured = (
            tuple(
                entry.split(_REPOSITORY_ARN_MARK, 1)[1] if entry.startswith("arn:") else entry
                for entry in self.prune_repositories
            )
            if self.prune_repositories
            else (self.image_repository_name,)
        )
        cache = (self.cache_repository_name,) if self.cache_repository_name else ()
        return tuple(dict.fromkeys((*configured, *cache)))

    def policy(self, in_use: Mapping[str, str] | None = None) -> Policy:
        return Policy(
            protected_tags=self.prune_protected_tags,
            keep_per_branch=self.prune_keep_per_branch,
            keep_days=self.prune_keep_days,
            in_use=dict(in_use or {}),
            unknown_after_days=self.prune_unknown_after_days,
        )
