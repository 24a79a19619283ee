"""The source's own word on where a branch is, asked only when the events can't tell.

Each answer is the tip's commit, or None when the source can't say (no token, branch
gone, API down): the ordering then falls back to push times. Never raises for that.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_codecommit import CodeCommitClient

logger = Logger(child=True)


class BranchTips(Protocol):
    def tip(self, branch: str) -> str | None: ...


class NoBranchTips:
    """A source we can't ask (GitHub without a token)."""

    def tip(self, branch: str) -> str | None:
        return None


class CodeCommitBranchTips:
    def __init__(self, repository: str, client: CodeCommitClient) -> None:
        self.repository = repository
        self.client = client

    def tip(self, branch: str) -> str | None:
        try:
            found = self.client.get_branch(repositoryName=self.repository, branchName=branch)
        except (ClientError, BotoCoreError) as error:
            logger.warning("GetBranch failed; ordering by push time", extra={"error": str(error)})
            return None
        commit = found.get("branch", {}).get("commitId")
        return str(commit) if commit else None


class GitHubBranchTips:
    """GET /repos/{owner}/{name}/branches/{branch} with the stack's GitHub token."""

    def __init__(
        self,
        repository: str,
        token: Callable[[], str],
        api_url: str = "https://api.github.com",
        timeout_seconds: float = 3.0,
    ) -> None:
        if urlsplit(api_url).scheme not in ("https", "http"):
            raise ValueError(f"GitHub API URL must be http(s): {api_url}")
        self.repository = repository
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def tip(self, branch: str) -> str | None:
        url = f"{self.api_url}/repos/{self.repository}/branches/{quote(branch, safe='')}"
        try:
            request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
                url,
                headers={
                    "Authorization": f"Bearer {self.token()}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28",
                    "User-Agent": "layercache",
                },
            )
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError, ClientError, BotoCoreError) as error:
            logger.warning("GitHub branch lookup failed; ordering by push time", error=str(error))
            return None
        commit = body.get("commit", {}).get("sha") if isinstance(body, dict) else None
        return str(commit) if commit else None
