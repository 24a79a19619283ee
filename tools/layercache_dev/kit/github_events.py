"""Realistic GitHub webhook deliveries, wrapped as Lambda function URL events.

Used by the tests, the demo and `python -m layercache_dev.kit.github_events` (which
rewrites the samples in events/github-webhook/).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from layercache.triggers.signature import sign
from layercache_dev.kit.paths import EVENTS

# The webhook secret of the samples in events/ and of the embedded AWS in events/env.json.
LOCAL_WEBHOOK_SECRET = "layercache-local-webhook-secret"  # noqa: S105 - a public test value
REPOSITORY = "octo-org/service"
ZERO_SHA = "0" * 40


def fake_sha(seed: str) -> str:
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def push_payload(
    *,
    ref: str = "refs/heads/main",
    after: str | None = None,
    before: str | None = None,
    changed: list[str] | None = None,
    message: str = "Update the service",
    repository: str = REPOSITORY,
    deleted: bool = False,
    created: bool = False,
    commit_count: int = 1,
) -> dict[str, Any]:
    """A push payload shaped like GitHub's (only the fields people and we look at)."""
    after = ZERO_SHA if deleted else (after or fake_sha(f"{ref}{message}"))
    before = before or fake_sha(f"before-{after}")
    owner, name = repository.split("/")
    commits = [
        {
            "id": after if index == commit_count - 1 else fake_sha(f"{after}-{index}"),
            "tree_id": fake_sha(f"tree-{after}-{index}"),
            "distinct": True,
            "message": message,
            "timestamp": "2026-11-28T09:14:03+01:00",
            "url": f"https://github.com/{repository}/commit/{after}",
            "author": {"name": "Ada Lovelace", "email": "ada@example.com", "username": "ada"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [],
            "removed": [],
            "modified": list(changed if changed is not None else ["app/main.py"]),
        }
        for index in range(commit_count)
    ]
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {
            "id": 123456789,
            "name": name,
            "full_name": repository,
            "private": True,
            "owner": {"login": owner, "id": 987654},
            "html_url": f"https://github.com/{repository}",
            "default_branch": "main",
        },
        "pusher": {"name": "ada", "email": "ada@example.com"},
        "sender": {"login": "ada", "id": 42, "type": "User"},
        "created": created,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{repository}/compare/{before[:12]}...{after[:12]}",
        "commits": [] if deleted else commits,
        "head_commit": None if deleted else commits[-1],
    }


def ping_payload(repository: str = REPOSITORY) -> dict[str, Any]:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": 448070001,
        "hook": {"type": "Repository", "id": 448070001, "events": ["push"], "active": True},
        "repository": {"full_name": repository},
    }


def function_url_event(
    event_type: str,
    payload: dict[str, Any],
    *,
    secret: str | None = LOCAL_WEBHOOK_SECRET,
    delivery_id: str | None = None,
    form: bool = False,
) -> dict[str, Any]:
    """The event Lambda gets from a function URL for one GitHub delivery."""
    text = json.dumps(payload, separators=(",", ":"))
    if form:
        body, content_type = urlencode({"payload": text}), "application/x-www-form-urlencoded"
    else:
        body, content_type = text, "application/json"
    delivery_id = delivery_id or str(uuid.uuid5(uuid.NAMESPACE_URL, body))
    headers = {
        "content-type": content_type,
        "user-agent": "GitHub-Hookshot/7c6c4a9",
        "x-github-event": event_type,
        "x-github-delivery": delivery_id,
        "x-github-hook-id": "448070001",
        "x-forwarded-proto": "https",
        "host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
    }
    if secret is not None:
        headers["x-hub-signature-256"] = sign(secret.encode(), body.encode())
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "domainName": headers["host"],
            "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "140.82.115.10",
                "userAgent": headers["user-agent"],
            },
            "requestId": str(uuid.uuid5(uuid.NAMESPACE_OID, delivery_id)),
            "routeKey": "$default",
            "stage": "$default",
            "time": "28/Nov/2026:08:14:05 +0000",
            "timeEpoch": 1795853645000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


SAMPLES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "push-main": ("push", push_payload(), {}),
    "push-main-form": ("push", push_payload(message="Bump the base image"), {"form": True}),
    "push-other-branch": ("push", push_payload(ref="refs/heads/feature/login"), {}),
    "push-tag": ("push", push_payload(ref="refs/tags/v1.4.0", created=True), {}),
    "delete-branch": ("push", push_payload(ref="refs/heads/main", deleted=True), {}),
    "push-skip-ci": ("push", push_payload(message="Fix typo in README [skip ci]"), {}),
    "ping": ("ping", ping_payload(), {}),
    "bad-signature": ("push", push_payload(), {"secret": "not-the-secret"}),
}


def write_samples(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (event_type, payload, options) in SAMPLES.items():
        event = function_url_event(event_type, payload, **options)
        (folder / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")


if __name__ == "__main__":
    write_samples(EVENTS / "github-webhook")
