from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel
from pydantic import ValidationError

from layercache.build_records import BuildMode
from layercache.triggers.decisions import PushPolicy, decide_push
from layercache.triggers.github import WebhookDelivery
from layercache.triggers.models import (
    CodeCommitReferenceEvent,
    GitHubPushEvent,
    NightlyRebuildRequest,
)
from layercache.triggers.signature import is_valid_signature
from layercache_dev.github_events import LOCAL_WEBHOOK_SECRET, push_payload

EVENTS = Path(__file__).resolve().parents[3] / "events"
POLICY = PushPolicy(watched_branches=frozenset({"main"}))


def load(*parts: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENTS.joinpath(*parts).read_text())
    return event


def delivery(name: str) -> WebhookDelivery:
    return WebhookDelivery.from_function_url(
        parse(event=load("github-webhook", f"{name}.json"), model=LambdaFunctionUrlModel)
    )


@pytest.mark.parametrize(
    ("sample", "builds"),
    [
        ("push-main", True),
        ("push-main-form", True),
        ("push-other-branch", False),
        ("push-tag", False),
        ("delete-branch", False),
        ("push-skip-ci", False),
    ],
)
def test_github_push_samples_decide_as_named(sample: str, builds: bool) -> None:
    push = GitHubPushEvent.model_validate(delivery(sample).payload())
    assert decide_push(push.facts(), POLICY).build is builds


@pytest.mark.parametrize("sample", ["push-main", "push-main-form", "ping", "push-tag"])
def test_samples_are_signed_with_the_local_secret(sample: str) -> None:
    one = delivery(sample)
    assert is_valid_signature(LOCAL_WEBHOOK_SECRET.encode(), one.body, one.signature)


def test_bad_signature_sample_is_not() -> None:
    one = delivery("bad-signature")
    assert not is_valid_signature(LOCAL_WEBHOOK_SECRET.encode(), one.body, one.signature)


def test_form_delivery_decodes_to_the_same_payload_as_json() -> None:
    form = delivery("push-main-form")
    assert form.content_type == "application/x-www-form-urlencoded"
    assert form.payload()["ref"] == "refs/heads/main"


def test_base64_bodies_are_decoded() -> None:
    event = load("github-webhook", "push-main.json")
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    decoded = WebhookDelivery.from_function_url(parse(event=event, model=LambdaFunctionUrlModel))
    assert decoded.payload()["after"] == delivery("push-main").payload()["after"]


def test_headers_are_case_insensitive() -> None:
    event = load("github-webhook", "ping.json")
    event["headers"] = {name.title(): value for name, value in event["headers"].items()}
    one = WebhookDelivery.from_function_url(parse(event=event, model=LambdaFunctionUrlModel))
    assert one.event_type == "ping"
    assert one.signature is not None


def test_changed_paths_join_every_commit() -> None:
    payload = push_payload(changed=["a.py"], commit_count=3)
    payload["commits"][0]["added"] = ["new.py"]
    payload["commits"][1]["removed"] = ["old.py"]
    paths = GitHubPushEvent.model_validate(payload).changed_paths()
    assert paths is not None
    assert sorted(set(paths)) == ["a.py", "new.py", "old.py"]


def test_changed_paths_unknown_when_github_truncated_the_commit_list() -> None:
    payload = push_payload(commit_count=20)
    assert GitHubPushEvent.model_validate(payload).changed_paths() is None


def test_changed_paths_unknown_without_file_lists() -> None:
    payload = push_payload()
    for commit in payload["commits"]:
        for key in ("added", "removed", "modified"):
            del commit[key]
    assert GitHubPushEvent.model_validate(payload).changed_paths() is None


def test_push_without_commits_has_unknown_paths() -> None:
    payload = push_payload(created=True)
    payload["commits"] = []
    assert GitHubPushEvent.model_validate(payload).changed_paths() is None


def test_push_model_rejects_a_payload_without_ref() -> None:
    payload = push_payload()
    del payload["ref"]
    with pytest.raises(ValidationError):
        GitHubPushEvent.model_validate(payload)


def test_codecommit_sample_parses_with_aliases() -> None:
    event = parse(
        event=load("codecommit-trigger", "reference-updated.json"), model=CodeCommitReferenceEvent
    )
    detail = event.detail
    assert detail.event == "referenceUpdated"
    assert detail.repository_name == "service"
    assert detail.ref == "refs/heads/main"
    assert detail.old_commit_id is not None
    assert event.detail_type == "CodeCommit Repository State Change"


def test_codecommit_created_branch_has_no_old_commit() -> None:
    event = parse(
        event=load("codecommit-trigger", "reference-created.json"), model=CodeCommitReferenceEvent
    )
    assert event.detail.old_commit_id is None


def test_codecommit_ref_without_full_name() -> None:
    raw = load("codecommit-trigger", "tag-created.json")
    del raw["detail"]["referenceFullName"]
    event = parse(event=raw, model=CodeCommitReferenceEvent)
    assert event.detail.ref == "refs/tags/v1.4.0"


def test_codecommit_model_rejects_unknown_event_kinds() -> None:
    raw = load("codecommit-trigger", "reference-updated.json")
    raw["detail"]["event"] = "commentOnCommitCreated"
    with pytest.raises(ValidationError):
        parse(event=raw, model=CodeCommitReferenceEvent)


def test_nightly_schedule_sample() -> None:
    request = NightlyRebuildRequest.model_validate(load("nightly-rebuild", "schedule.json"))
    assert request.mode is BuildMode.REFRESH
    assert request.scheduled_time is not None
    assert request.scheduled_time.tzinfo is not None


def test_nightly_manual_request_defaults() -> None:
    request = NightlyRebuildRequest.model_validate({})
    assert request.mode is BuildMode.REFRESH
    assert request.scheduled_time is None
    assert request.branches is None


def test_nightly_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValidationError):
        NightlyRebuildRequest.model_validate({"mode": "turbo"})
