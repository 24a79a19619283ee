"""Settings every test tier shares: no real AWS credentials, no metadata probing."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from layercache import dimensions
from layercache_dev.kit.lambda_context import FakeLambdaContext
from layercache_dev.kit.prerequisites import BuilderKind, missing_prerequisites

# Set before any boto3 client exists, so no test can reach a real account.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "layercache",
        "POWERTOOLS_METRICS_NAMESPACE": "layercache",
        "POWERTOOLS_DEV": "false",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture(autouse=True)
def _no_stray_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def emitted_metrics(output: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents Powertools printed to `output` (one JSON per line).

    Every metrics test reads them here, so each checks on the way that the documents use
    only the dimension names `layercache.dimensions` declares: a second spelling of one
    (`Trigger` beside `trigger`) would be a second dimension to CloudWatch.
    """
    documents = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    for document in documents:
        names = dimension_names(document)
        assert names <= dimensions.ALL, f"undeclared dimension(s): {sorted(names - dimensions.ALL)}"
    return documents


def dimension_names(document: dict[str, Any]) -> set[str]:
    """Every dimension name an EMF document's directives declare."""
    return {
        name
        for directive in document["_aws"]["CloudWatchMetrics"]
        for dimension_set in directive["Dimensions"]
        for name in dimension_set
    }


def require_docker_tier(kind: BuilderKind = "remote") -> None:
    """Skip without the docker tier (engine, registry, builder), with the reason; under
    LAYERCACHE_REQUIRE_DOCKER=1 (CI) a missing piece fails the test instead."""
    require("docker tier", missing_prerequisites(kind))


def require(tier: str, missing: list[str]) -> None:
    """Skip, naming what `tier` lacks; under LAYERCACHE_REQUIRE_DOCKER=1 (CI), fail."""
    if not missing:
        return
    reason = f"{tier}: " + "; ".join(missing) + " (run .ci/setup-docker as root)"
    if os.environ.get("LAYERCACHE_REQUIRE_DOCKER") == "1":
        pytest.fail(reason + " and LAYERCACHE_REQUIRE_DOCKER=1", pytrace=False)
    pytest.skip(reason)
