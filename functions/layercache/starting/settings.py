"""BuildStarterFunction's configuration, read once from the environment template.yaml sets."""

from __future__ import annotations

from pydantic import Field, field_validator

from layercache.settings import GitHubApiSettings, split_csv


class StarterSettings(GitHubApiSettings):
    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    supersede_older_builds: bool = True
    # A claim blocks a retry this long; longer than the function's timeout, so only a
    # dead invocation's claim is ever taken over.
    claim_lease_seconds: int = Field(default=90, ge=1)
    source_type: str = "GITHUB"
    source_repository: str = ""
    default_branch: str = ""
    # FanOut: a Bake file's images in one batch build, one build per image (fan_out.py).
    fan_out: bool = False
    fan_out_max_builds: int = Field(default=20, ge=1, le=100)
    # Several platforms: one native build per platform and a join, in one batch build.
    platforms: tuple[str, ...] = ("linux/amd64",)
    arm_build_image: str = "aws/codebuild/amazonlinux-aarch64-standard:3.0"

    _split = field_validator("platforms", mode="before")(split_csv)

    @property
    def builds_in_batches(self) -> bool:
        return self.fan_out or len(self.platforms) > 1
