"""A deployed layercache stack, as its CloudFormation outputs and resources name things."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from layercache_cli.aws import CommandError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

# template.yaml's Outputs and logical ids (tests/cli checks them against the template).
TABLE_OUTPUT = "BuildsTableName"
TABLE_RESOURCE = "BuildsTable"
IMAGE_REPOSITORY_OUTPUT = "ImageRepositoryUri"
BUILD_PROJECT_OUTPUT = "BuildProjectName"
FAILURE_QUEUE_OUTPUTS = ("TriggerFailureQueueUrl", "BuildRequestFailureQueueUrl")
PRUNER_LOG_GROUP_RESOURCE = "ImagePrunerLogGroup"


def _is_missing(error: ClientError) -> bool:
    """CloudFormation answers a missing stack or resource with a ValidationError."""
    details = error.response.get("Error", {})
    return details.get("Code") == "ValidationError" and "does not exist" in str(
        details.get("Message", "")
    )


class DeployedStack:
    """One stack's outputs (read once) and, on demand, its resources' physical ids."""

    def __init__(self, name: str, cloudformation: CloudFormationClient) -> None:
        self.name = name
        self.cloudformation = cloudformation
        try:
            stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if _is_missing(error):
                region = cloudformation.meta.region_name
                raise CommandError(f"no CloudFormation stack named {name!r} in {region}") from None
            raise
        self.outputs = {
            output["OutputKey"]: output["OutputValue"]
            for output in stacks[0].get("Outputs", [])
            if "OutputKey" in output and "OutputValue" in output
        }

    def physical_id(self, logical_id: str) -> str | None:
        try:
            resource = self.cloudformation.describe_stack_resource(
                StackName=self.name, LogicalResourceId=logical_id
            )["StackResourceDetail"]
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return resource.get("PhysicalResourceId") or None

    def table_name(self) -> str:
        name = self.outputs.get(TABLE_OUTPUT) or self.physical_id(TABLE_RESOURCE)
        if not name:
            raise CommandError(
                f"stack {self.name!r} has no {TABLE_OUTPUT} output and no {TABLE_RESOURCE} "
                "resource: is it a layercache stack? (or give --table NAME)"
            )
        return name

    def image_repository_name(self) -> str | None:
        """The image the stack builds: its ECR repository's name, from the repository URI."""
        uri = self.outputs.get(IMAGE_REPOSITORY_OUTPUT, "")
        return uri.split("/", 1)[1] if "/" in uri else None
