"""A GitHub token kept in Secrets Manager: the recorder posts statuses with it, the
build starter asks GitHub for a branch's tip with it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from layercache import aws

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = ["DEFAULT_MAX_AGE_SECONDS", "SecretToken", "TokenUnavailable"]

logger = Logger(child=True)

# A rotated token is used within this long (the webhook secret's default too).
DEFAULT_MAX_AGE_SECONDS = 300


class TokenUnavailable(ValueError):
    """Secrets Manager gave no token and none was read before.

    A ValueError, as a malformed secret is: every caller already treats a token it
    cannot have as "GitHub unreachable" (the recorder logs and skips the status, the
    starter orders by push time).
    """


class SecretToken:
    """The GitHub token from Secrets Manager, through Powertools' SecretsProvider.

    The secret holds the token itself, or JSON with a "token" key. A value is cached for
    `max_age_seconds` (0: read on every call), so a rotated token is picked up without a
    new container. If Secrets Manager fails after a value was read, the last value is
    used (and the failure logged): a throttled read must not cost a commit status.

    Powertools' parameters utility is imported when a token is first made: the recorder
    and the starter import this module whether or not they talk to GitHub.
    """

    def __init__(
        self,
        secret_arn: str,
        client: SecretsManagerClient | None = None,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        if max_age_seconds < 0:
            raise ValueError(f"max_age_seconds must be >= 0, not {max_age_seconds}")
        self.secret_arn = secret_arn
        self.client: SecretsManagerClient = client or aws.client("secretsmanager")
        self.max_age_seconds = max_age_seconds
        self.provider = SecretsProvider(boto3_client=self.client)
        self._last: str | None = None

    def __call__(self) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        try:
            value = self.provider.get(self.secret_arn, max_age=self.max_age_seconds)
        except GetParameterError as error:
            if self._last is None:
                raise TokenUnavailable(str(error)[:300]) from error
            logger.warning(
                "Secrets Manager failed; using the GitHub token read before",
                extra={"error": str(error)[:300]},
            )
            return self._last
        text = (value.decode() if isinstance(value, bytes) else str(value or "")).strip()
        token = text
        if text.startswith("{"):
            token = str(json.loads(text).get("token", ""))
        self._last = token
        return token
