"""Typed model of EventBridge's "CodeBuild Build State Change" event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

from layercache.build_records import BuildStatus
from layercache.recording.build import BuildFacts, Phase, build_id_of

# CodeBuild writes times in events as "Sep 1, 2017 4:12:29 PM" (UTC).
_EVENT_TIME_FORMAT = "%b %d, %Y %I:%M:%S %p"


def parse_event_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text.strip(), _EVENT_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


class _CodeBuildEventModel(BaseModel):
    """A part of CodeBuild's event detail. AWS adds fields over time: ignore what we don't
    read."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class EnvironmentVariable(_CodeBuildEventModel):
    name: str
    value: str = ""
    type: str = "PLAINTEXT"


class BuildEnvironment(_CodeBuildEventModel):
    image: str | None = None
    environment_variables: list[EnvironmentVariable] = Field(
        default_factory=list, alias="environment-variables"
    )


class EventPhase(_CodeBuildEventModel):
    phase_type: str = Field(alias="phase-type")
    phase_status: str | None = Field(default=None, alias="phase-status")
    start_time: str | None = Field(default=None, alias="start-time")
    end_time: str | None = Field(default=None, alias="end-time")
    duration_in_seconds: float | None = Field(default=None, alias="duration-in-seconds")
    phase_context: list[str | None] = Field(default_factory=list, alias="phase-context")

    def phase(self) -> Phase:
        return Phase(
            name=self.phase_type,
            status=self.phase_status,
            seconds=round(self.duration_in_seconds)
            if self.duration_in_seconds is not None
            else None,
            started_at=parse_event_time(self.start_time),
            ended_at=parse_event_time(self.end_time),
            messages=tuple(
                context.strip() for context in self.phase_context if context and context.strip()
            ),
        )


class AdditionalInformation(_CodeBuildEventModel):
    build_number: float | None = Field(default=None, alias="build-number")
    build_complete: bool = Field(default=False, alias="build-complete")
    build_start_time: str | None = Field(default=None, alias="build-start-time")
    source_version: str | None = Field(default=None, alias="source-version")
    environment: BuildEnvironment = Field(default_factory=BuildEnvironment)
    phases: list[EventPhase] = Field(default_factory=list)


class BuildStateChangeDetail(_CodeBuildEventModel):
    build_status: Literal["IN_PROGRESS", "SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT"] = (
        Field(alias="build-status")
    )
    project_name: str = Field(alias="project-name", min_length=1)
    build_id: str = Field(alias="build-id", min_length=1)
    current_phase: str | None = Field(default=None, alias="current-phase")
    additional_information: AdditionalInformation = Field(
        default_factory=AdditionalInformation, alias="additional-information"
    )


class BuildStateChangeEvent(EventBridgeModel):
    source: Literal["aws.codebuild"]
    detail_type: Literal["CodeBuild Build State Change"] = Field(alias="detail-type")
    detail: BuildStateChangeDetail

    def facts(self) -> BuildFacts:
        info = self.detail.additional_information
        phases = tuple(phase.phase() for phase in info.phases)
        status = BuildStatus(self.detail.build_status)
        ended_at = None
        if status.is_final:
            ended_at = next(
                (p.started_at for p in phases if p.name == "COMPLETED" and p.started_at), None
            )
        return BuildFacts(
            build_id=build_id_of(self.detail.build_id),
            build_arn=self.detail.build_id,
            project=self.detail.project_name,
            account=self.account,
            region=self.region,
            status=status,
            event_time=self.time.astimezone(UTC),
            build_number=round(info.build_number) if info.build_number is not None else None,
            current_phase=self.detail.current_phase,
            started_at=parse_event_time(info.build_start_time),
            ended_at=ended_at,
            source_version=info.source_version,
            environment={
                variable.name: variable.value for variable in info.environment.environment_variables
            },
            phases=phases,
        )
