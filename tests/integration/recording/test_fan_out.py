"""FanOut on moto: a push starts one batch build, its builds are recorded as one build.

The starter plans the batch from the branch's last published images (the first batch,
with no plan, is one build of everything); each build of the batch reports to the
recorder on its own, and the recorder records the batch once: IN_PROGRESS with the
first build, SUCCEEDED when the last part is in (whatever the order, duplicates, or two
finishing at once), FAILED as soon as one fails. One commit status per outcome, the
moving tags of every image moved together, the plan kept for the next batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from layercache.build_records import (
    ENV_FANOUT_IMAGES,
    ENV_FANOUT_NEWCOMERS,
    BuildsTable,
    PlannedImage,
    Trigger,
    build_pk,
)
from layercache.build_requests import BuildRequestMessage
from layercache.recording.batch import BatchUnknown
from layercache.recording.store import BuildRecordStore
from layercache.starting.service import BuildStarter
from layercache.starting.settings import StarterSettings
from layercache.starting.wiring import make_build_starter
from layercache_dev.kit.codebuild_events import state_change_event
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import invoke_function
from layercache_dev.kit.moto_atomic import atomic_backends
from layercache_dev.kit.moto_codebuild import CodeBuildLike, codebuild_like

from .conftest import IMAGE, RECORDER, REGION, FakeGitHub
from .test_bake_images import TARGETS, entry, moving_tags, push, repository, sha

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@dataclass
class FanOut:
    stack: Stack
    codebuild: CodeBuildLike
    starter: BuildStarter
    table: BuildsTable
    github: FakeGitHub
    pushes: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # what the builds pushed last

    def request(self, commit: str, branch: str = "main", delivery: str = "") -> BuildRequestMessage:
        """The build request of a push of `commit` (a redelivery: the same push again)."""
        if not delivery:
            self.pushes += 1
        return BuildRequestMessage.for_push(
            image=IMAGE,
            branch=branch,
            commit=commit,
            before=None,
            trigger=Trigger.GITHUB,
            requested_at=T0 + timedelta(minutes=self.pushes),
            pushed_at=T0 + timedelta(minutes=self.pushes),
            build=True,
            reason="push",
            delivery_id=delivery or f"delivery-{self.pushes}",
        )

    def push(self, commit: str, branch: str = "main") -> str:
        """A push of `commit`: the starter starts its batch. The batch's id."""
        outcome = self.starter.handle(self.request(commit, branch))
        assert outcome.started, outcome
        assert outcome.build_id is not None
        return outcome.build_id

    def run(self, batch_id: str, identifier: str) -> dict[str, Any]:
        """Start one node's build and deliver its IN_PROGRESS event to the recorder."""
        build = self.codebuild.start_member(batch_id, identifier)
        invoke_function(RECORDER, member_event(self.codebuild, build["id"], "IN_PROGRESS"))
        return build

    def finish(
        self, build: dict[str, Any], commit: str, status: str = "SUCCEEDED"
    ) -> dict[str, Any]:
        """The build ends having built its share; its final event, not yet delivered."""
        environment = self.codebuild.environment_of(build["id"])
        share = [name for name in environment[ENV_FANOUT_IMAGES].split(",") if name]
        if environment[ENV_FANOUT_NEWCOMERS] == "true" and not share:
            share = list(TARGETS)
        self.digests.update({target: push(target, commit) for target in share})
        entries = [entry(target, self.digests[target], commit) for target in share]
        self.codebuild.finish(build["id"], status, exported=exports(entries))
        return member_event(self.codebuild, build["id"], status)

    def item(self, batch_id: str) -> dict[str, Any]:
        item = self.table.get(build_pk(batch_id))
        assert item is not None
        return item


def exports(entries: list[dict[str, Any]]) -> dict[str, str]:
    return {
        "LAYERCACHE_IMAGE_DIGEST": "",
        "LAYERCACHE_IMAGE_TAGS": "",
        "LAYERCACHE_MOVING_TAGS": "main,latest",
        "LAYERCACHE_CACHE_HIT_RATIO": "0.5",
        "LAYERCACHE_CACHE_REF_HIT": "none",
        "LAYERCACHE_BUILD_SECONDS": "2.0",
        "LAYERCACHE_PUSH_SECONDS": "0.5",
        "LAYERCACHE_CACHED_STEPS": str(sum(e["cached_steps"] for e in entries)),
        "LAYERCACHE_TOTAL_STEPS": str(sum(e["total_steps"] for e in entries)),
        "LAYERCACHE_CACHE_STATUS": "warm",
        "LAYERCACHE_IMAGES": json.dumps(entries, separators=(",", ":")),
    }


def member_event(codebuild: CodeBuildLike, build_id: str, status: str) -> dict[str, Any]:
    """The "CodeBuild Build State Change" event of one build of a batch."""
    return state_change_event(codebuild.build(build_id), status)


@pytest.fixture
def fan_out(
    stack: Stack,
    function_env: Any,
    fresh_recorder: None,
    github_token_secret: str,
    fake_github: FakeGitHub,
) -> Iterator[FanOut]:
    ecr = boto3.client("ecr", region_name=REGION)
    for target in TARGETS:
        ecr.create_repository(repositoryName=repository(target))
    function_env(
        RECORDER,
        BATCH_BUILDS="true",
        GITHUB_TOKEN_SECRET_ARN=github_token_secret,
        GITHUB_API_URL=fake_github.url,
    )
    starter_env = {**stack.environment("BuildStarterFunction"), "FAN_OUT": "true"}
    with codebuild_like() as codebuild:
        starter = make_build_starter(
            StarterSettings.from_env(starter_env),
            codebuild=boto3.client("codebuild", region_name=REGION),
        )
        yield FanOut(stack, codebuild, starter, starter.table, fake_github)


def descriptions(github: FakeGitHub) -> list[str]:
    return [request["body"]["description"] for request in github.requests]


def states(github: FakeGitHub) -> list[str]:
    return [request["body"]["state"] for request in github.requests]


# ---------------------------------------------------------------- the first batch
def test_the_first_batch_is_one_build_of_everything_and_plans_the_next(fan_out: FanOut) -> None:
    a = sha("a")
    batch_id = fan_out.push(a)
    [node] = fan_out.codebuild.graph_of(batch_id)
    assert node["env"]["variables"][ENV_FANOUT_NEWCOMERS] == "true"
    assert fan_out.item(batch_id)["kind"] == "batch"

    build = fan_out.run(batch_id, node["identifier"])
    assert states(fan_out.github) == ["pending"]
    result = invoke_function(RECORDER, fan_out.finish(build, a))

    assert result["recorded"]
    assert result["build_id"] == batch_id
    assert result["tags_published"] == ["main", "latest"]
    item = fan_out.item(batch_id)
    assert item["status"] == "SUCCEEDED"
    assert [image["image"] for image in item["images"]] == list(TARGETS)
    assert "/batch/" in item["console_url"]
    assert all(digest is not None for digest in moving_tags().values())
    head = fan_out.table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.bake_plan == (
        PlannedImage("base"),
        PlannedImage("api", ("base",)),
        PlannedImage("worker", ("base",)),
    )
    assert states(fan_out.github) == ["pending", "success"]
    assert descriptions(fan_out.github)[-1].endswith("3 images, 1 cached")


def planned(fan_out: FanOut) -> str:
    """A first batch run to its end: the branch has a plan. The commit it built."""
    a = sha("a")
    batch_id = fan_out.push(a)
    [node] = fan_out.codebuild.graph_of(batch_id)
    build = fan_out.run(batch_id, node["identifier"])
    invoke_function(RECORDER, fan_out.finish(build, a))
    fan_out.github.requests.clear()
    return a


# ---------------------------------------------------------------- a planned batch
def test_a_planned_batch_builds_each_image_after_its_base_and_records_once(
    fan_out: FanOut,
) -> None:
    planned(fan_out)
    b = sha("b")
    batch_id = fan_out.push(b)
    graph = {node["identifier"]: node for node in fan_out.codebuild.graph_of(batch_id)}
    assert graph["api"]["depend-on"] == ["base"]
    assert graph["worker"]["depend-on"] == ["base"]
    assert "depend-on" not in graph["base"]

    base = fan_out.run(batch_id, "base")
    first = invoke_function(RECORDER, fan_out.finish(base, b))
    assert first["status"] == "IN_PROGRESS"  # one part in, the batch goes on
    assert fan_out.item(batch_id)["status"] == "IN_PROGRESS"
    worker, api = fan_out.run(batch_id, "worker"), fan_out.run(batch_id, "api")
    worker_done = fan_out.finish(worker, b)
    api_done = fan_out.finish(api, b)
    invoke_function(RECORDER, worker_done)
    last = invoke_function(RECORDER, api_done)
    again = invoke_function(RECORDER, api_done)  # EventBridge delivers it twice

    assert last["status"] == "SUCCEEDED"
    assert last["reported"]
    assert not again["reported"]
    item = fan_out.item(batch_id)
    assert [image["image"] for image in item["images"]] == ["base", "api", "worker"]
    assert item["build_seconds"] == 6  # three builds' host-seconds
    assert states(fan_out.github) == ["pending", "success"]
    assert moving_tags() == fan_out.digests


def test_the_last_two_parts_finishing_at_once_record_the_batch_once(fan_out: FanOut) -> None:
    planned(fan_out)
    b = sha("b")
    batch_id = fan_out.push(b)
    invoke_function(RECORDER, fan_out.finish(fan_out.run(batch_id, "base"), b))
    done = [fan_out.finish(fan_out.run(batch_id, name), b) for name in ("api", "worker")]
    results: list[dict[str, Any]] = []

    def deliver(event: dict[str, Any]) -> None:
        results.append(invoke_function(RECORDER, event))

    with atomic_backends():
        threads = [threading.Thread(target=deliver, args=(event,)) for event in done]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(r["status"] for r in results) == ["IN_PROGRESS", "SUCCEEDED"] or all(
        r["status"] == "SUCCEEDED" for r in results
    )
    assert sum(r["reported"] for r in results) == 1
    assert fan_out.item(batch_id)["status"] == "SUCCEEDED"
    assert states(fan_out.github) == ["pending", "success"]


def test_a_failed_image_fails_the_batch_at_once_and_publishes_nothing(fan_out: FanOut) -> None:
    a = planned(fan_out)
    before = moving_tags()
    b = sha("b")
    batch_id = fan_out.push(b)
    base = fan_out.run(batch_id, "base")

    failed = invoke_function(RECORDER, fan_out.finish(base, b, "FAILED"))

    assert failed["status"] == "FAILED"
    assert failed["reported"]
    assert fan_out.item(batch_id)["status"] == "FAILED"
    assert fan_out.codebuild.settle_batch(batch_id) == "FAILED"
    assert moving_tags() == before
    assert a
    assert states(fan_out.github) == ["pending", "failure"]


def test_a_build_stopped_after_the_batch_failed_changes_nothing(fan_out: FanOut) -> None:
    planned(fan_out)
    b = sha("b")
    batch_id = fan_out.push(b)
    base, tool = fan_out.run(batch_id, "base"), fan_out.run(batch_id, "api")
    invoke_function(RECORDER, fan_out.finish(base, b, "FAILED"))

    late = invoke_function(RECORDER, fan_out.finish(tool, b, "STOPPED"))

    assert not late["recorded"]
    assert fan_out.item(batch_id)["status"] == "FAILED"
    assert states(fan_out.github) == ["pending", "failure"]


# ---------------------------------------------------------------- the starter
def test_a_retry_after_a_lost_answer_adopts_the_batch_it_started(fan_out: FanOut) -> None:
    planned(fan_out)
    fan_out.codebuild.lose_response(1)
    with pytest.raises(Exception, match="response lost"):
        fan_out.push(sha("b"))
    claim = fan_out.table.claim(f"CLAIM#{IMAGE}#main#{sha('b')}")
    assert claim is not None
    assert claim.build_id is None

    request = fan_out.request(sha("b"), delivery="redelivery")
    outcome = fan_out.starter.handle(request)

    assert outcome.started
    assert len(fan_out.codebuild.batches()) == 2  # the first batch and this one, once


def test_a_newer_push_stops_the_older_batch(fan_out: FanOut) -> None:
    planned(fan_out)
    older = fan_out.push(sha("b"))
    newer = fan_out.push(sha("c"))

    assert fan_out.codebuild.batch(older)["buildBatchStatus"] == "STOPPED"
    assert fan_out.codebuild.batch(newer)["buildBatchStatus"] == "IN_PROGRESS"
    claim = fan_out.table.claim(f"CLAIM#{IMAGE}#main#{sha('b')}")
    assert claim is not None
    assert claim.superseded_by == newer


def test_a_new_branch_starts_from_the_default_branchs_plan(fan_out: FanOut) -> None:
    planned(fan_out)
    batch_id = fan_out.push(sha("f"), branch="feature")

    assert [n["identifier"] for n in fan_out.codebuild.graph_of(batch_id)] == [
        "base",
        "api",
        "worker",
    ]


# ---------------------------------------------------------------- under failure
def test_a_throttled_start_build_batch_is_retried_and_starts_one_batch(fan_out: FanOut) -> None:
    planned(fan_out)
    fan_out.codebuild.throttle(1)
    calls = fan_out.codebuild.batch_start_calls

    fan_out.push(sha("b"))

    assert fan_out.codebuild.batch_start_calls == calls + 2  # the SDK retried once
    assert len(fan_out.codebuild.batches()) == 2  # the first batch, and this one once


def test_an_event_of_a_batch_not_yet_readable_fails_and_its_retry_records(
    fan_out: FanOut,
) -> None:
    """BatchGetBuildBatches may not know a batch its build reports on yet: the invocation
    fails (Lambda retries the event), and nothing is recorded half."""
    planned(fan_out)
    b = sha("b")
    batch_id = fan_out.push(b)
    base = fan_out.run(batch_id, "base")
    done = fan_out.finish(base, b)
    hidden = fan_out.codebuild._batches.pop(batch_id)

    with pytest.raises(BatchUnknown):
        invoke_function(RECORDER, done)

    assert not any(name.startswith("part#") for name in fan_out.item(batch_id))
    fan_out.codebuild._batches[batch_id] = hidden
    assert invoke_function(RECORDER, done)["status"] == "IN_PROGRESS"
    assert "part#base" in fan_out.item(batch_id)


def test_a_retry_after_a_kill_between_the_last_part_and_the_record_records_once(
    fan_out: FanOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the last part was written, before the batch's status: the retry of
    that event finds every part in, records SUCCEEDED and reports once."""
    planned(fan_out)
    b = sha("b")
    batch_id = fan_out.push(b)
    invoke_function(RECORDER, fan_out.finish(fan_out.run(batch_id, "base"), b))
    invoke_function(RECORDER, fan_out.finish(fan_out.run(batch_id, "worker"), b))
    last = fan_out.finish(fan_out.run(batch_id, "api"), b)
    apply = BuildRecordStore.apply

    def killed(store: BuildRecordStore, update: Any) -> Any:
        if update.key["pk"] == build_pk(batch_id) and "SUCCEEDED" in update.values.values():
            raise RuntimeError("killed")
        return apply(store, update)

    monkeypatch.setattr(BuildRecordStore, "apply", killed)
    with pytest.raises(RuntimeError, match="killed"):
        invoke_function(RECORDER, last)
    assert fan_out.item(batch_id)["status"] == "IN_PROGRESS"
    monkeypatch.setattr(BuildRecordStore, "apply", apply)

    result = invoke_function(RECORDER, last)

    assert result["status"] == "SUCCEEDED"
    assert result["reported"]
    assert fan_out.item(batch_id)["status"] == "SUCCEEDED"
    assert states(fan_out.github) == ["pending", "success"]
