"""events/build-starter/: each sample does what `sam local invoke -e` users expect of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layercache.build_requests import BuildRequestMessage
from layercache_dev.kit.functions import invoke_function

from .conftest import Pipeline

SAMPLES = Path(__file__).resolve().parents[3] / "events" / "build-starter"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


def invoke(name: str) -> dict[str, Any]:
    response: dict[str, Any] = invoke_function("BuildStarterFunction", sample(name))
    return response


def test_push_sample_starts_a_build_of_its_commit(pipeline: Pipeline) -> None:
    request = BuildRequestMessage.from_message(sample("push-main")["Records"][0]["body"])
    assert invoke("push-main") == {"batchItemFailures": []}
    (build,) = pipeline.builds()
    assert build["sourceVersion"] == request.commit


def test_nightly_sample_builds_the_branch_not_a_tag_of_its_name(pipeline: Pipeline) -> None:
    assert invoke("nightly-main") == {"batchItemFailures": []}
    (build,) = pipeline.builds()
    assert build["sourceVersion"] == "refs/heads/main"
    assert pipeline.codebuild.environment_of(build["id"])["LAYERCACHE_MODE"] == "refresh"


def test_a_message_that_is_no_request_is_dropped_not_retried(pipeline: Pipeline) -> None:
    assert invoke("not-a-request") == {"batchItemFailures": []}
    assert not pipeline.builds()
