from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from layercache.build_records import BuildMode
from layercache.triggers.decisions import PushPolicy, decide_push
from layercache.triggers.github import WebhookDelivery
from layercache.triggers.models import (
    GITHUB_MAX_FILES_PER_COMMIT,
    GITHUB_MAX_LISTED_COMMITS,
    CodeCommitReferenceEvent,
    GitHubPushEvent,
    NightlyRebuildRequest,
)
from layercache.triggers.signature import is_valid_signature
from layercache_dev.kit.github_events import LOCAL_WEBHOOK_SECRET, push_payload
from layercache_dev.kit.template import resource

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


def test_a_25_commit_push_lists_every_changed_file() -> None:
    """GitHub's 20-commit cap is for timeline events: a delivery lists up to 2048."""
    payload = push_payload(changed=["docs/a.md"], commit_count=25)
    payload["commits"][3]["added"] = ["app/new.py"]
    paths = GitHubPushEvent.model_validate(payload).changed_paths()
    assert paths is not None
    assert sorted(set(paths)) == ["app/new.py", "docs/a.md"]


@pytest.mark.parametrize(
    ("commits", "known"),
    [
        (1, True),
        (21, True),
        (25, True),
        (GITHUB_MAX_LISTED_COMMITS - 1, True),
        (GITHUB_MAX_LISTED_COMMITS, False),
    ],
)
def test_changed_paths_are_unknown_only_at_githubs_commit_limit(commits: int, known: bool) -> None:
    payload = push_payload(commit_count=commits)
    assert (GitHubPushEvent.model_validate(payload).changed_paths() is not None) is known


@pytest.mark.parametrize(
    ("files", "known"),
    [(GITHUB_MAX_FILES_PER_COMMIT - 1, True), (GITHUB_MAX_FILES_PER_COMMIT, False)],
)
def test_changed_paths_are_unknown_only_at_githubs_file_limit(files: int, known: bool) -> None:
    payload = push_payload(changed=[f"f{index}" for index in range(files)], commit_count=2)
    assert (GitHubPushEvent.model_validate(payload).changed_paths() is not None) is known


def test_a_commits_file_limit_counts_added_removed_and_modified_together() -> None:
    payload = push_payload(changed=[f"m{index}" for index in range(1000)])
    payload["commits"][0]["added"] = [f"a{index}" for index in range(1000)]
    payload["commits"][0]["removed"] = [f"r{index}" for index in range(1000)]
    assert GitHubPushEvent.model_validate(payload).changed_paths() is None


def test_pushed_at_is_epoch_seconds_in_utc() -> None:
    payload = push_payload()
    payload["repository"]["pushed_at"] = 1795853643
    pushed = GitHubPushEvent.model_validate(payload).pushed_time()
    assert pushed == datetime(2026, 11, 28, 8, 14, 3, tzinfo=UTC)
    assert pushed is not None
    assert pushed.utcoffset() == timedelta(0)


def test_pushed_at_as_text_is_read_in_utc() -> None:
    payload = push_payload()
    payload["repository"]["pushed_at"] = "2026-11-28T09:14:03+01:00"
    pushed = GitHubPushEvent.model_validate(payload).pushed_time()
    assert pushed == datetime(2026, 11, 28, 8, 14, 3, tzinfo=UTC)


def test_no_pushed_at_is_none() -> None:
    assert GitHubPushEvent.model_validate(push_payload()).pushed_time() is None


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
    request = NightlyRebuildRequest.model_validate({"manual": True})
    assert request.mode is BuildMode.REFRESH
    assert request.scheduled_time is None
    assert request.branches is None


def test_nightly_manual_sample() -> None:
    request = NightlyRebuildRequest.model_validate(load("nightly-rebuild", "manual-clean.json"))
    assert (request.manual, request.mode, request.branches) == (True, BuildMode.CLEAN, ["main"])


def test_the_schedules_input_in_the_template_is_accepted() -> None:
    """template.yaml's Input, with the placeholders the scheduler fills in."""
    text = resource("NightlyRebuildFunction")["Properties"]["Events"]["Nightly"]["Properties"][
        "Input"
    ]
    filled = text.replace("<aws.scheduler.scheduled-time>", "2026-11-29T03:00:00Z").replace(
        "<aws.scheduler.execution-id>", "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    )
    request = NightlyRebuildRequest.model_validate_json(filled)
    assert request.scheduled_time == datetime(2026, 11, 29, 3, tzinfo=UTC)
    assert request.execution_id == "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    assert request.manual is False


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"mode": "refresh"},
        {"mode": "turbo", "manual": True},
        {"branches": ["main"]},
        {"manual": False},
        {"manual": True, "scheduled_time": "2026-11-29T03:00:00Z"},
        {"manual": True, "unknown": 1},
        {"scheduled_time": "2026-11-29T03:00:00Z", "detail-type": "Scheduled Event"},
        {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
    ],
)
def test_nightly_refuses_anything_but_its_two_shapes(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NightlyRebuildRequest.model_validate(value)


NIGHTLY_KEYS = {"mode", "scheduled_time", "execution_id", "manual", "branches"}


@given(
    st.dictionaries(
        st.text(max_size=15).filter(lambda key: key not in NIGHTLY_KEYS),
        st.none() | st.booleans() | st.text(max_size=10),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([{"manual": True}, {"scheduled_time": "2026-11-29T03:00:00Z"}]),
)
def test_nightly_refuses_any_key_of_its_own(extra: dict[str, Any], valid: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NightlyRebuildRequest.model_validate({**valid, **extra})


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "mode": st.sampled_from([mode.value for mode in BuildMode]),
            "execution_id": st.text(max_size=10),
            "branches": st.lists(st.text(max_size=10), max_size=3),
            "manual": st.just(False),
        },
    )
)
def test_nightly_refuses_any_input_that_is_neither_scheduled_nor_manual(
    value: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        NightlyRebuildRequest.model_validate(value)


@pytest.mark.parametrize(
    "value",
    [
        {"mode": "refresh", "scheduled_time": "2026-11-29T03:00:00Z", "branches": ["main"]},
        {"manual": True, "execution_id": "0a1b2c3d"},
        {"mode": "refresh", "scheduled_time": "2026-11-29T03:00:00"},
        {"manual": True, "branches": []},
    ],
    ids=[
        "schedule with branches",
        "manual with execution id",
        "time without zone",
        "manual with no branch",
    ],
)
def test_nightly_accepts_only_exactly_its_two_shapes(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NightlyRebuildRequest.model_validate(value)
