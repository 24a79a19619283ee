"""Every client's retry budget is what layercache.aws says: attempts counted in full.

botocore's `max_attempts` counts retries, `total_max_attempts` every attempt; a budget
that said 3 and made 4 would outlast GitHub's 10 s.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from layercache import aws
from layercache_dev.kit.moto_codebuild import codebuild_like


@pytest.mark.parametrize(
    "budget",
    [aws.INTERACTIVE, aws.STANDARD, aws.LONG_RUNNING],
    ids=["interactive", "standard", "long-running"],
)
def test_a_budget_makes_exactly_its_attempts(
    stack: Any, budget: aws.Budget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda _seconds: None)
    client = boto3.client("codebuild", region_name="us-east-1", config=budget.config())
    with codebuild_like() as codebuild:
        codebuild.throttle(100)
        with pytest.raises(ClientError, match="ThrottlingException"):
            client.start_build(projectName=stack.project_name)
        assert codebuild.start_calls == budget.attempts
