"""GitHub commit statuses: pending when a build starts, its outcome when it ends.

Best effort by design: the build record is written before any status call, and a status
that cannot be posted (GitHub down, rate limited for long, bad token) is logged, never
raised, so it can't make the recorder's invocation fail and retry.

A status that a later one may overtake (`pending`) is posted with `unless`, asked before
every attempt: once the build's final status is recorded, a retry of `pending` is not
sent (the service also re-posts the final status if it finds it recorded after a
`pending` went out, see service.py).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, urlsplit

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from layercache.build_records import BuildStatus, all_steps_cached, images_text
from layercache.recording.build import seconds_text

logger = Logger(child=True)

STATES = {
    BuildStatus.IN_PROGRESS: "pending",
    BuildStatus.SUCCEEDED: "success",
    BuildStatus.FAILED: "failure",
    BuildStatus.FAULT: "error",
    BuildStatus.STOPPED: "error",
    BuildStatus.TIMED_OUT: "error",
}
_DESCRIPTIONS = {
    BuildStatus.IN_PROGRESS: "Image build started",
    BuildStatus.SUCCEEDED: "Image built",
    BuildStatus.FAILED: "Image build failed",
    BuildStatus.FAULT: "Image build faulted",
    BuildStatus.STOPPED: "Image build stopped",
    BuildStatus.TIMED_OUT: "Image build timed out",
}
MAX_DESCRIPTION = 140  # GitHub's limit


@dataclass(frozen=True)
class CommitStatus:
    sha: str
    state: str
    target_url: str
    description: str
    context: str


def commit_status_for(record: Mapping[str, Any], status: BuildStatus) -> CommitStatus | None:
    """The status to post for a build record, or None when it has no commit to post on."""
    sha = record.get("commit")
    if not isinstance(sha, str) or not sha or status not in STATES:
        return None
    images = record.get("images")
    if status is BuildStatus.SUCCEEDED and isinstance(images, list) and images:
        description = images_description(record, images)
    else:
        description = _DESCRIPTIONS[status]
        if status.is_final and record.get("duration_seconds") is not None:
            description += f" in {seconds_text(record['duration_seconds'])}"
        if record.get("failed_phase") and status is not BuildStatus.SUCCEEDED:
            description += f" ({record['failed_phase']} phase)"
        ratio = record.get("cache_hit_ratio")
        if status is BuildStatus.SUCCEEDED and ratio is not None:
            description += f", cache hits {float(ratio):.0%}"
    return CommitStatus(
        sha=sha,
        state=STATES[status],
        target_url=str(record.get("console_url", "")),
        description=description[:MAX_DESCRIPTION],
        context=f"layercache/{record.get('image', 'image')}",
    )


def images_description(record: Mapping[str, Any], images: Sequence[Any]) -> str:
    """A Bake file's succeeded build: `Succeeded in 1m05s, 3 images, 2 cached`.

    An image counts as cached when every one of its steps came from the cache.
    """
    duration = record.get("duration_seconds")
    cached = sum(
        1
        for image in images
        if isinstance(image, Mapping)
        and all_steps_cached(image.get("cached_steps"), image.get("total_steps"))
    )
    return (
        "Succeeded"
        + (f" in {seconds_text(duration)}" if duration is not None else "")
        + f", {images_text(len(images), cached)}"
    )


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0  # a longer wait (e.g. an hour's rate-limit reset) is given up on


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    status: int | None,
    headers: Mapping[str, str] | Message | None,
    now: float,
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to give up.

    `status` None means the request never got an answer (connection error, timeout).
    Rate limits (429, or 403 with Retry-After or no remaining quota) wait what GitHub
    asks; server errors and lost connections back off exponentially.
    """
    if attempt + 1 >= policy.max_attempts:
        return None
    backoff = policy.base_delay * (1 << attempt)
    headers = headers or {}
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    remaining = headers.get("x-ratelimit-remaining") or headers.get("X-RateLimit-Remaining")
    reset = headers.get("x-ratelimit-reset") or headers.get("X-RateLimit-Reset")
    rate_limited = status == 429 or (status == 403 and (retry_after or remaining == "0"))
    if rate_limited:
        if retry_after and retry_after.strip().isdigit():
            wait = float(retry_after)
        elif remaining == "0" and reset and reset.strip().isdigit():
            wait = max(0.0, float(reset) - now)
        else:
            wait = backoff
        return wait if wait <= policy.max_delay else None
    if status is None or status >= 500:
        return min(backoff, policy.max_delay)
    return None


class GitHubStatusClient:
    def __init__(
        self,
        repository: str,
        token: Callable[[], str],
        api_url: str = "https://api.github.com",
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
    ) -> None:
        if urlsplit(api_url).scheme not in ("http", "https"):
            raise ValueError(f"GitHub API URL must be http(s): {api_url!r}")
        self.repository = repository
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout

    def url(self, sha: str) -> str:
        owner, _, name = self.repository.partition("/")
        return (
            f"{self.api_url}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
            f"/statuses/{quote(sha, safe='')}"
        )

    def post(self, status: CommitStatus, *, unless: Callable[[], bool] | None = None) -> bool:
        """Post `status`; True when GitHub accepted it. Failures are logged, not raised.

        `unless`, when given, is asked before every attempt: True (or an AWS error
        asking it) abandons the post, so a retry can't land after a newer status.
        """
        body = json.dumps(
            {
                "state": status.state,
                "target_url": status.target_url or None,
                "description": status.description,
                "context": status.context,
            }
        ).encode()
        log: dict[str, Any] = {
            "sha": status.sha,
            "state": status.state,
            "repository": self.repository,
        }
        try:
            token = self.token()
        except (ClientError, BotoCoreError, ValueError) as error:
            logger.error(
                "GitHub token unavailable; commit status not posted", error=str(error), **log
            )
            return False
        for attempt in range(self.policy.max_attempts):
            if unless is not None and _overtaken(unless, log):
                return False
            request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
                self.url(status.sha),
                data=body,
                method="POST",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28",
                    "Content-Type": "application/json",
                    "User-Agent": "layercache-build-recorder",
                },
            )
            code: int | None
            headers: Message | None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    response.read()
                logger.info("GitHub commit status posted", attempts=attempt + 1, **log)
                return True
            except urllib.error.HTTPError as error:
                code, headers, reason = error.code, error.headers, _error_text(error)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                code, headers, reason = None, None, str(getattr(error, "reason", error))
            delay = retry_delay(self.policy, attempt, code, headers, self.clock())
            if delay is None:
                logger.error(
                    "GitHub commit status not posted",
                    http_status=code,
                    reason=reason,
                    attempts=attempt + 1,
                    **log,
                )
                return False
            logger.warning(
                "GitHub commit status call failed; retrying",
                http_status=code,
                reason=reason,
                delay_seconds=delay,
                **log,
            )
            self.sleep(delay)
        return False  # pragma: no cover - retry_delay gives up on the last attempt


def _overtaken(unless: Callable[[], bool], log: Mapping[str, Any]) -> bool:
    try:
        overtaken = unless()
    except (ClientError, BotoCoreError) as error:
        logger.warning(
            "Can't tell whether the commit status is still due; not posted",
            error=str(error),
            **log,
        )
        return True
    if overtaken:
        logger.info("A newer commit status is recorded; this one is not posted", **log)
    return overtaken


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        payload = error.read(2000).decode("utf-8", "replace")
    except OSError:
        payload = ""
    message = payload
    with contextlib.suppress(ValueError, AttributeError):
        message = str(json.loads(payload).get("message", payload))
    return f"{error.code} {message}".strip()
