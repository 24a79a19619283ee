"""The events that start a pruning run: a successful image build, and the daily schedule."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

BUILD_STATE_CHANGE = "CodeBuild Build State Change"


class BuildStateDetail(BaseModel):
    """The part of CodeBuild's state-change detail the pruner reads (hyphenated keys)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    build_status: str = Field(alias="build-status")
    project_name: str = Field(alias="project-name")
    build_id: str = Field(default="", alias="build-id")


class BuildSucceededEvent(EventBridgeModel):
    source: Literal["aws.codebuild"]
    detail_type: Literal["CodeBuild Build State Change"] = Field(alias="detail-type")
    detail: BuildStateDetail


class ScheduledEvent(EventBridgeModel):
    source: Literal["aws.events"]
    detail_type: Literal["Scheduled Event"] = Field(alias="detail-type")
    detail: dict[str, Any]
