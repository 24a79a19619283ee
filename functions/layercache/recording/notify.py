"""The SNS notification of a build that did not succeed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from layercache import aws
from layercache.build_records import BuildStatus
from layercache.recording.build import seconds_text

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

NOTIFY_ON = frozenset(
    {BuildStatus.FAILED, BuildStatus.FAULT, BuildStatus.STOPPED, BuildStatus.TIMED_OUT}
)
MAX_SUBJECT = 100  # SNS: ASCII, no line breaks, under 100 characters
_STATUS_WORDS = {
    BuildStatus.FAILED: "failed",
    BuildStatus.FAULT: "faulted",
    BuildStatus.STOPPED: "was stopped",
    BuildStatus.TIMED_OUT: "timed out",
}


@dataclass(frozen=True)
class Notification:
    subject: str
    message: str


def _ascii_line(text: str) -> str:
    return " ".join(text.encode("ascii", "replace").decode().split())


def failure_notification(record: Mapping[str, Any], status: BuildStatus) -> Notification | None:
    """A readable subject and message for a failed build's record; None when none is due."""
    if status not in NOTIFY_ON:
        return None
    image = str(record.get("image", "image"))
    branch = record.get("branch")
    commit = record.get("commit")
    where = f" on {branch}" if branch else ""
    at = f" at {str(commit)[:8]}" if commit else ""
    subject = _ascii_line(f"layercache: build of {image}{where}{at} {_STATUS_WORDS[status]}")
    phase = record.get("failed_phase")
    reason = record.get("failure_message")
    number = record.get("build_number")
    lines = [
        f"The layercache image build of {image} {_STATUS_WORDS[status]} ({status.value}).",
        "",
        f"Branch:        {branch or 'unknown'}",
        f"Commit:        {commit or 'unknown (no commit was requested, e.g. a nightly rebuild)'}",
        f"Trigger:       {record.get('trigger', 'unknown')} (mode {record.get('mode', 'normal')})",
        f"Failed phase:  {phase or 'unknown'}",
    ]
    if reason:
        lines.append(f"Reason:        {reason}")
    images = [
        str(entry["image"])
        for entry in record.get("images") or ()
        if isinstance(entry, Mapping) and entry.get("image")
    ]
    if images:  # a Bake file's build that exported its images before it ended
        lines.append(f"Images:        {', '.join(images)}")
    lines += [
        f"Build:         {record.get('build_id', '?')}"
        + (f" (#{number})" if number is not None else ""),
        f"Duration:      {seconds_text(record.get('duration_seconds'))}",
        f"Requested at:  {record.get('requested_at', 'unknown')}",
        "",
        f"Logs and details: {record.get('console_url', '')}",
    ]
    return Notification(subject=subject[:MAX_SUBJECT], message="\n".join(lines) + "\n")


class SnsNotifier:
    def __init__(self, topic_arn: str, client: SNSClient | None = None) -> None:
        self.topic_arn = topic_arn
        self.client: SNSClient = client or aws.client("sns")

    def publish(self, notification: Notification) -> str:
        response = self.client.publish(
            TopicArn=self.topic_arn,
            Subject=notification.subject,
            Message=notification.message,
        )
        return response["MessageId"]
