"""boto3 clients whose timeouts and retries fit inside the function that uses them.

botocore's defaults (60 s connect, 60 s read, several attempts) outlast a 30 s Lambda:
the function would be killed mid-retry, and its work lost or half done. Every client
here has a budget: standard-mode retries (throttling and transient errors, with
backoff) with short timeouts, so the worst case of one call stays well inside the
calling function's timeout and a call that can't succeed surfaces as an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config


@dataclass(frozen=True)
class Budget:
    connect_seconds: float
    read_seconds: float
    attempts: int

    @property
    def worst_case_seconds(self) -> float:
        """Every attempt timing out, plus standard mode's backoff (at most 20 s each)."""
        backoff = sum(min(20.0, 2.0**attempt) for attempt in range(self.attempts - 1))
        return self.attempts * (self.connect_seconds + self.read_seconds) + backoff

    def config(self) -> Config:
        return Config(
            connect_timeout=self.connect_seconds,
            read_timeout=self.read_seconds,
            # `total_max_attempts` counts the first try; botocore's `max_attempts` would not.
            retries={"total_max_attempts": self.attempts, "mode": "standard"},
        )


# Calls someone is waiting on (GitHub gives a webhook 10 s): 9 s in the very worst case.
INTERACTIVE = Budget(connect_seconds=1, read_seconds=1, attempts=3)
# Everything else, inside a 60 s function.
STANDARD = Budget(connect_seconds=2, read_seconds=5, attempts=4)
# A function with minutes to spend (the pruner has 300 s): ECR throttles DescribeImages,
# BatchGetImage and BatchDeleteImage per account and region, and a call that gives up
# stops the pruning of its repository. 8 attempts wait out up to 71 s of backoff; the
# worst case of one call (167 s) still ends inside the function.
LONG_RUNNING = Budget(connect_seconds=2, read_seconds=10, attempts=8)


def client(service: str, budget: Budget = STANDARD) -> Any:
    """A boto3 client for `service`; AWS_ENDPOINT_URL (embedded AWS) is honoured by boto3."""
    return boto3.client(service, config=budget.config())  # type: ignore[call-overload]
