"""boto3 clients with the retry behaviour every function wants."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

# Standard mode retries throttling and transient errors with backoff before surfacing them.
RETRYING = Config(retries={"max_attempts": 5, "mode": "standard"})


def client(service: str) -> Any:
    """A boto3 client for `service`; AWS_ENDPOINT_URL (embedded AWS) is honoured by boto3."""
    return boto3.client(service, config=RETRYING)  # type: ignore[call-overload]
