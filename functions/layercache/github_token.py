"""A GitHub token kept in Secrets Manager: the recorder posts statuses with it, the
build starter asks GitHub for a branch's tip with it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from layercache import aws

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = ["SecretToken"]


class SecretToken:
    """The GitHub token from Secrets Manager, read once per container.

    The secret holds the token itself, or JSON with a "token" key.
    """

    def __init__(self, secret_arn: str, client: SecretsManagerClient | None = None) -> None:
        self.secret_arn = secret_arn
        self.client: SecretsManagerClient = client or aws.client("secretsmanager")
        self._token: str | None = None

    def __call__(self) -> str:
        if self._token is None:
            text = self.client.get_secret_value(SecretId=self.secret_arn)["SecretString"].strip()
            token = text
            if text.startswith("{"):
                token = str(json.loads(text).get("token", ""))
            self._token = token
        return self._token

    def forget(self) -> None:
        self._token = None
