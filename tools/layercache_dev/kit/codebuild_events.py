"""The "CodeBuild Build State Change" events EventBridge delivers, built from a build.

`build` is a build as BatchGetBuilds (or the kit's CodeBuild model) has it; `phases` are
its phases in that shape. Used by the demo's CodeBuild stand-in and by the tests that
hand the recorder the events of a batch's builds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from layercache_dev.kit.embedded_aws import ACCOUNT, REGION

EVENT_TIME_FORMAT = "%b %d, %Y %I:%M:%S %p"  # as CodeBuild writes times in its events


def event_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(EVENT_TIME_FORMAT)


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


def event_phase(phase: Mapping[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"phase-type": phase["phaseType"]}
    for key, name in (("startTime", "start-time"), ("endTime", "end-time")):
        if key in phase:
            converted[name] = event_time(_moment(phase[key]))
    if "durationInSeconds" in phase:
        converted["duration-in-seconds"] = phase["durationInSeconds"]
    if "phaseStatus" in phase:
        converted["phase-status"] = phase["phaseStatus"]
    converted["phase-context"] = [c.get("message") for c in phase.get("contexts", [])]
    return converted


def state_change_event(
    build: Mapping[str, Any], status: str, phases: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The "CodeBuild Build State Change" event EventBridge would deliver for `build`."""
    started = _moment(build["startTime"])
    arn = build.get("arn") or f"arn:aws:codebuild:{REGION}:{ACCOUNT}:build/{build['id']}"
    environment = build["environment"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CodeBuild Build State Change",
        "source": "aws.codebuild",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [arn],
        "detail": {
            "build-status": status,
            "project-name": build["projectName"],
            "build-id": arn,
            "current-phase": build["currentPhase"] if status == "IN_PROGRESS" else "COMPLETED",
            "current-phase-context": "[]",
            "version": "1",
            "additional-information": {
                "build-number": float(build["buildNumber"]),
                "build-complete": status != "IN_PROGRESS",
                "initiator": build.get("initiator", ""),
                "build-start-time": event_time(started),
                "source-version": build.get("sourceVersion"),
                "source": build.get("source", {}),
                "environment": {
                    "image": environment["image"],
                    "privileged-mode": environment["privilegedMode"],
                    "compute-type": environment["computeType"],
                    "type": environment["type"],
                    "environment-variables": environment["environmentVariables"],
                },
                "phases": [event_phase(phase) for phase in phases],
            },
        },
    }
