"""The user's AWS session, and what its errors mean in one line.

Credentials and region come from the usual places (`--region`, `AWS_REGION`,
`AWS_DEFAULT_REGION`, `AWS_PROFILE`, ~/.aws), and `AWS_ENDPOINT_URL` points every
client elsewhere (an embedded AWS, a test server).
"""

from __future__ import annotations

import html
import os
import re
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from layercache.build_records import BuildsTable

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

NO_REGION = (
    "no AWS region: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION "
    "(or a region in your AWS profile)"
)
NO_CREDENTIALS = (
    "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "or run `aws configure` / `aws sso login`"
)
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "UnauthorizedOperation",
        "UnauthorizedException",
    }
)
REJECTED_CREDENTIALS_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
# The DynamoDB operations BuildsTable's readers make.
TABLE_OPERATIONS = frozenset({"GetItem", "Query"})
# A command makes a handful of calls: retry throttling briefly, then say what failed.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10)


class CommandError(Exception):
    """Something the user can act on: printed as one line, exit status 2."""


class AwsAccess:
    """One boto3 session, its clients, and the table the command reads (for error messages)."""

    def __init__(self, session: boto3.session.Session) -> None:
        if session.region_name is None:
            raise CommandError(NO_REGION)
        self.session = session
        self.region: str = session.region_name
        self.table_name: str | None = None

    @classmethod
    def open(cls, region: str | None) -> AwsAccess:
        try:
            session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION"))
        except BotoCoreError as error:  # a named profile that does not exist, for one
            raise CommandError(explain(error)) from None
        return cls(session)

    def dynamodb(self) -> DynamoDBClient:
        return self.session.client("dynamodb", config=CLIENT_CONFIG)

    def cloudformation(self) -> CloudFormationClient:
        return self.session.client("cloudformation", config=CLIENT_CONFIG)

    def sqs(self) -> SQSClient:
        return self.session.client("sqs", config=CLIENT_CONFIG)

    def logs(self) -> Any:
        """A CloudWatch Logs client (typed Any: the dev environment has no stubs for it)."""
        return self.session.client("logs", config=CLIENT_CONFIG)

    def builds_table(self, table_name: str) -> BuildsTable:
        self.table_name = table_name
        return BuildsTable(table_name, self.dynamodb())

    def explain(self, error: BotoCoreError | ClientError) -> str:
        if (
            isinstance(error, ClientError)
            and self.table_name
            and error.operation_name in TABLE_OPERATIONS
            and error.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
        ):
            return f"no DynamoDB table named {self.table_name!r} in {self.region}"
        return explain(error)


def explain(error: BotoCoreError | ClientError) -> str:
    """One line for an AWS error: what went wrong and, where it helps, what to do."""
    if isinstance(error, NoRegionError):
        return NO_REGION
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return NO_CREDENTIALS
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return f"cannot reach AWS: {error}"
    if isinstance(error, BotoCoreError):
        return str(error)
    details = error.response.get("Error", {})
    code = details.get("Code", "")
    message = readable_message(str(details.get("Message", "")))
    operation = error.operation_name
    if code in REJECTED_CREDENTIALS_CODES:
        return f"AWS rejected the credentials ({code}): {message}"
    # 403 is how AWS refuses an authorization; an answer botocore could not parse (a proxy,
    # an emulator) has only its HTTP status as the code.
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ACCESS_DENIED_CODES or status == 403:
        return f"access denied ({operation}): {message}"
    return f"{operation} failed ({code}): {message}"


def readable_message(message: str) -> str:
    """The message on one line; from an XML error document, its <Message> only."""
    if message.lstrip().startswith("<"):
        found = re.search(r"<Message>(.*?)</Message>", message, re.DOTALL)
        message = html.unescape(found.group(1)) if found else "(no readable message)"
    return " ".join(message.split())
