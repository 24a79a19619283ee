"""template.yaml's promises: names others rely on, least privilege, logs, failure handling."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from layercache import aws
from layercache.settings import EnvSettings
from layercache.starting.settings import StarterSettings
from layercache.triggers.settings import (
    CodeCommitTriggerSettings,
    GitHubWebhookSettings,
    NightlyRebuildSettings,
)
from layercache_dev.kit.paths import ROOT
from layercache_dev.kit.template import (
    NO_VALUE,
    condition_holds,
    function_environment,
    load_template,
    parameter_defaults,
    resolve,
    resource,
)

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = sorted(
    name for name, spec in RESOURCES.items() if spec["Type"] == "AWS::Serverless::Function"
)
ASYNC_EVENT_TYPES = {"EventBridgeRule", "ScheduleV2", "Schedule", "CloudWatchEvent"}
# Actions IAM offers no resource-level permissions for, so "*" is the narrowest scope.
UNSCOPABLE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "ecr:DescribeRepositories",
    "ecs:ListClusters",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ecs:ListServices",
    "ecs:DescribeTaskDefinition",
    "lambda:ListFunctions",
    "cloudwatch:PutMetricData",
}
FUNCTION_SETTINGS: dict[str, type[EnvSettings]] = {
    "GitHubWebhookFunction": GitHubWebhookSettings,
    "CodeCommitTriggerFunction": CodeCommitTriggerSettings,
    "NightlyRebuildFunction": NightlyRebuildSettings,
    "BuildStarterFunction": StarterSettings,
}


@pytest.mark.parametrize(
    "logical_id",
    [
        "GitHubWebhookFunction",
        "CodeCommitTriggerFunction",
        "NightlyRebuildFunction",
        "BuildStarterFunction",
        "BuildRequestQueue",
        "ImageBuildProject",
        "ImageRepository",
        "BuildsTable",
    ],
)
def test_names_other_parts_rely_on_exist(logical_id: str) -> None:
    assert logical_id in RESOURCES


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_handler_is_importable(logical_id: str) -> None:
    module_name, _, attribute = resource(logical_id)["Properties"]["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module_name), attribute))


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_function_logs_to_its_own_group_with_retention(logical_id: str) -> None:
    group_ref = resource(logical_id)["Properties"]["LoggingConfig"]["LogGroup"]
    group = resource(group_ref["Ref"])
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def _is_asynchronous(logical_id: str) -> bool:
    events = resource(logical_id)["Properties"].get("Events", {}).values()
    return any(event["Type"] in ASYNC_EVENT_TYPES for event in events)


ASYNC_FUNCTIONS = [name for name in FUNCTIONS if _is_asynchronous(name)]


def test_triggers_from_eventbridge_are_asynchronous() -> None:
    assert {"CodeCommitTriggerFunction", "NightlyRebuildFunction"} <= set(ASYNC_FUNCTIONS)


@pytest.mark.parametrize("logical_id", ASYNC_FUNCTIONS)
def test_asynchronous_functions_have_an_on_failure_destination(logical_id: str) -> None:
    props = resource(logical_id)["Properties"]
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    for event in props["Events"].values():
        assert "DeadLetterConfig" in event["Properties"], "events that fail to deliver are kept"


def _statements() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in RESOURCES.items():
        props = spec.get("Properties", {})
        for policy in props.get("Policies", []):
            if isinstance(policy, dict) and "Statement" in policy:
                for statement in policy["Statement"]:
                    yield name, statement
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield name, statement


def _plain(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """Unwrap `!If [cond, statement, !Ref AWS::NoValue]`."""
    if "Fn::If" in statement:
        return [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
    return [statement]


def test_no_wildcard_resource_where_a_narrower_one_exists() -> None:
    for owner, wrapped in _statements():
        for statement in _plain(wrapped):
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            actions = statement["Action"]
            actions = set(actions if isinstance(actions, list) else [actions])
            if "*" in resources:
                assert actions <= UNSCOPABLE_ACTIONS, f"{owner}: {sorted(actions)} on '*'"
            assert not any(action.endswith(":*") for action in actions), owner


def test_starting_and_stopping_builds_is_scoped_to_the_project() -> None:
    seen = 0
    for owner, wrapped in _statements():
        for statement in _plain(wrapped):
            actions = statement["Action"]
            actions = actions if isinstance(actions, list) else [actions]
            if {"codebuild:StartBuild", "codebuild:StopBuild"} & set(actions):
                if owner == "BuildBatchServiceRole":  # CodeBuild's own role for a batch
                    continue
                assert statement["Resource"] == {"Fn::GetAtt": ["ImageBuildProject", "Arn"]}, owner
                seen += 1
    assert seen == 1, "only BuildStarterFunction starts and stops builds"


def test_fan_out_is_off_by_default_and_needs_a_bake_file() -> None:
    template = load_template()
    assert template["Parameters"]["FanOut"]["Default"] == "false"
    condition = template["Conditions"]["FansOut"]["Fn::And"]
    assert {"Fn::Condition": "UsesBakeFile"} in condition
    project = template["Resources"]["ImageBuildProject"]["Properties"]
    config = project["BuildBatchConfig"]["Fn::If"]
    assert config[0] == "BuildsInBatches"
    assert config[2] == {"Ref": "AWS::NoValue"}
    assert config[1]["ServiceRole"] == {"Fn::GetAtt": ["BuildBatchServiceRole", "Arn"]}
    assert config[1]["Restrictions"]["MaximumBuildsAllowed"] == {"Ref": "FanOutMaxBuilds"}
    assert template["Resources"]["BuildBatchServiceRole"]["Condition"] == "BuildsInBatches"
    assert template["Conditions"]["BuildsInBatches"] == {
        "Fn::Or": [{"Fn::Condition": "FansOut"}, {"Fn::Condition": "BuildsPlatforms"}]
    }


def test_the_batch_role_runs_only_this_projects_builds() -> None:
    """CodeBuild's batch role (not the build role: a build could then start builds past
    the batch's restrictions) may start, stop and retry builds of the project alone."""
    template = load_template()
    role = template["Resources"]["BuildBatchServiceRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert len(statements) == 1
    assert set(statements[0]["Action"]) == {
        "codebuild:StartBuild",
        "codebuild:StopBuild",
        "codebuild:RetryBuild",
    }
    project_name = template["Resources"]["ImageBuildProject"]["Properties"]["Name"]["Fn::Sub"]
    assert statements[0]["Resource"]["Fn::Sub"].endswith(f":project/{project_name}")
    build_role = template["Resources"]["BuildProjectRole"]["Properties"]["Policies"]
    build_actions = {
        action
        for policy in build_role
        for wrapped in policy["PolicyDocument"]["Statement"]
        for statement in _plain(wrapped)
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert not {a for a in build_actions if a.startswith("codebuild:")}


def test_only_the_starter_starts_batches_and_only_when_it_builds_in_batches() -> None:
    for owner, wrapped in _statements():
        for statement in _plain(wrapped):
            actions = statement["Action"]
            actions = set(actions if isinstance(actions, list) else [actions])
            if "codebuild:StartBuildBatch" in actions:
                assert owner == "BuildStarterFunction"
                assert wrapped["Fn::If"][0] == "BuildsInBatches"
                assert statement["Resource"] == {"Fn::GetAtt": ["ImageBuildProject", "Arn"]}


def test_triggers_only_hand_requests_on() -> None:
    """The triggers answer at once: they may send to the queue, never call CodeBuild."""
    for name in ("GitHubWebhookFunction", "CodeCommitTriggerFunction", "NightlyRebuildFunction"):
        for statement in (s for owner, w in _statements() if owner == name for s in _plain(w)):
            actions = statement["Action"]
            actions = set(actions if isinstance(actions, list) else [actions])
            assert not any(a.startswith(("codebuild:", "dynamodb:")) for a in actions), name
            if "sqs:SendMessage" in actions:
                assert statement["Resource"] == {"Fn::GetAtt": ["BuildRequestQueue", "Arn"]}


def test_build_requests_go_through_a_fifo_queue_with_a_fifo_failure_queue() -> None:
    queue = resource("BuildRequestQueue")["Properties"]
    failed = resource("BuildRequestFailureQueue")["Properties"]
    assert queue["FifoQueue"] is True
    assert failed["FifoQueue"] is True
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["BuildRequestFailureQueue", "Arn"]
    }
    starter = resource("BuildStarterFunction")["Properties"]
    timeout = starter["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout, "Lambda's guide: six times the timeout"
    event = starter["Events"]["BuildRequested"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    lease = int(starter["Environment"]["Variables"]["CLAIM_LEASE_SECONDS"])
    assert timeout < lease < queue["VisibilityTimeout"], "a retry comes after the lease ends"


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_client_budget_fits_inside_the_function(logical_id: str) -> None:
    timeout = resource(logical_id)["Properties"].get(
        "Timeout", TEMPLATE["Globals"]["Function"]["Timeout"]
    )
    assert aws.STANDARD.worst_case_seconds < timeout
    assert aws.INTERACTIVE.worst_case_seconds < 10, "GitHub waits 10 s for a webhook's answer"


def test_the_pruners_ecr_budget_fits_inside_the_pruner() -> None:
    """Its ECR client (the only retries of throttling, layercache.pruning.ecr) waits longer
    than the others, and its worst case still ends inside the function."""
    timeout = resource("ImagePrunerFunction")["Properties"]["Timeout"]
    assert aws.LONG_RUNNING.worst_case_seconds < timeout
    assert aws.LONG_RUNNING.attempts > aws.STANDARD.attempts


def test_the_build_project_is_privileged_and_uses_our_buildspec() -> None:
    props = resource("ImageBuildProject")["Properties"]
    assert props["Environment"]["PrivilegedMode"] is True
    inline = props["Source"]["BuildSpec"]
    buildspec_file = (ROOT / "buildspecs" / "buildspec.yml").read_text()
    assert yaml.safe_load(inline) == yaml.safe_load(buildspec_file)


def test_image_repository_scans_on_push() -> None:
    props = resource("ImageRepository")["Properties"]
    assert props["ImageScanningConfiguration"]["ScanOnPush"] is True


def test_builds_table_is_on_demand() -> None:
    assert resource("BuildsTable")["Properties"]["BillingMode"] == "PAY_PER_REQUEST"


@pytest.mark.parametrize(
    "parameter",
    [
        "SourceType",
        "SourceRepository",
        "WatchedBranches",
        "DefaultBranch",
        "DockerfilePath",
        "BuildContext",
        "ImageRepositoryName",
        "ComputeType",
        "BuildTimeoutMinutes",
        "NightlySchedule",
        "NightlyTimeZone",
        "PathFilters",
        "SupersedeOlderBuilds",
        "BakeFile",
        "BakeTargets",
    ],
)
def test_parameters_exist_and_are_described(parameter: str) -> None:
    assert TEMPLATE["Parameters"][parameter]["Description"]


@pytest.mark.parametrize(
    "output",
    [
        "WebhookUrl",
        "ImageRepositoryUri",
        "BuildProjectName",
        "BuildsTableName",
        "BuildRequestFailureQueueUrl",
    ],
)
def test_outputs_a_user_needs(output: str) -> None:
    assert TEMPLATE["Outputs"][output]["Value"]


@pytest.mark.parametrize(("logical_id", "settings"), sorted(FUNCTION_SETTINGS.items()))
def test_the_template_sets_every_variable_the_settings_require(
    logical_id: str, settings: type[EnvSettings]
) -> None:
    environment = function_environment(logical_id)
    required = {
        name.upper() for name, field in settings.model_fields.items() if field.is_required()
    }
    assert required <= set(environment), required - set(environment)


def test_codecommit_rule_listens_to_branch_updates_of_watched_branches() -> None:
    pattern = resource("CodeCommitTriggerFunction")["Properties"]["Events"]["BranchUpdated"][
        "Properties"
    ]["Pattern"]
    assert pattern["detail"]["event"] == ["referenceCreated", "referenceUpdated"]
    assert pattern["detail"]["referenceName"] == {"Ref": "WatchedBranches"}


def test_nightly_schedule_passes_mode_and_scheduled_time() -> None:
    schedule = resource("NightlyRebuildFunction")["Properties"]["Events"]["Nightly"]["Properties"]
    assert schedule["ScheduleExpression"] == {"Ref": "NightlySchedule"}
    assert schedule["ScheduleExpressionTimezone"] == {"Ref": "NightlyTimeZone"}
    assert "<aws.scheduler.scheduled-time>" in schedule["Input"]
    assert '"mode": "refresh"' in schedule["Input"]


def test_every_parameter_is_grouped_and_documented_in_the_readme() -> None:
    groups = TEMPLATE["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    readme = (ROOT / "README.md").read_text()
    for parameter in TEMPLATE["Parameters"]:
        assert grouped.count(parameter) == 1, f"{parameter} is in {grouped.count(parameter)} groups"
        assert f"| `{parameter}` |" in readme, f"README's configuration table lacks {parameter}"


def test_env_json_only_sets_variables_the_template_declares() -> None:
    """sam local invoke ignores variables the template does not declare for a function."""
    env_json = json.loads((ROOT / "events" / "env.json").read_text())
    for variable in env_json["Parameters"]:
        assert any(variable in function_environment(name) for name in FUNCTIONS), variable
    for logical_id, variables in env_json.items():
        if logical_id == "Parameters":
            continue
        assert logical_id in FUNCTIONS
        for variable in variables:
            assert variable in function_environment(logical_id), f"{logical_id}: {variable}"


@pytest.mark.parametrize(
    "logical_id",
    ["BuildsTable", "WebhookSecret", "TriggerFailureQueue", "BuildRequestFailureQueue"],
)
def test_what_holds_data_or_identity_is_retained(logical_id: str) -> None:
    spec = RESOURCES[logical_id]
    assert spec["DeletionPolicy"] == "Retain"
    assert spec["UpdateReplacePolicy"] == "Retain"


def test_the_build_history_is_protected_from_deletion() -> None:
    assert resource("BuildsTable")["Properties"]["DeletionProtectionEnabled"] is True


@pytest.mark.parametrize(
    "logical_id", sorted(n for n, r in RESOURCES.items() if r["Type"] == "AWS::Logs::LogGroup")
)
def test_log_groups_are_unnamed_and_outlive_the_stack(logical_id: str) -> None:
    spec = RESOURCES[logical_id]
    assert spec["DeletionPolicy"] == "Retain"
    assert "LogGroupName" not in spec["Properties"], "a retained named group blocks re-creating"


def test_a_flood_is_bounded_by_parameters() -> None:
    webhook = resource("GitHubWebhookFunction")["Properties"]
    assert webhook["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasWebhookConcurrency", {"Ref": "WebhookConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    project = resource("ImageBuildProject")["Properties"]
    assert project["ConcurrentBuildLimit"] == {
        "Fn::If": [
            "HasConcurrentBuildLimit",
            {"Ref": "ConcurrentBuildLimit"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert int(TEMPLATE["Parameters"]["WebhookConcurrency"]["Default"]) > 0
    assert int(TEMPLATE["Parameters"]["ConcurrentBuildLimit"]["Default"]) > 0


def test_the_build_role_only_has_the_image_actions_the_build_uses() -> None:
    (statement,) = (
        s
        for owner, s in _statements()
        if owner == "BuildProjectRole" and s.get("Sid") == "PushAndPullImageAndCache"
    )
    assert "ecr:DescribeImages" not in statement["Action"]


def test_the_buildkit_image_is_mirrored_into_the_stacks_own_repository() -> None:
    mirror = resource("BuildKitMirrorRepository")
    assert mirror["Properties"]["ImageTagMutability"] == "IMMUTABLE"  # one tag per pin
    (statement,) = (
        s
        for owner, s in _statements()
        if owner == "BuildProjectRole" and s.get("Sid") == "MirrorBuildKitImage"
    )
    assert statement["Resource"] == {"Fn::GetAtt": ["BuildKitMirrorRepository", "Arn"]}
    assert "ecr:BatchDeleteImage" not in statement["Action"]
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    uri = {"Fn::GetAtt": ["BuildKitMirrorRepository", "RepositoryUri"]}
    assert {"Name": "LAYERCACHE_BUILDKIT_MIRROR", "Value": uri} in variables


def test_release_tags_are_immutable_in_ecr_while_branch_tags_move() -> None:
    props = resource("ImageRepository")["Properties"]
    assert props["ImageTagMutability"] == {
        "Fn::If": ["HasImmutableTagPattern", "MUTABLE_WITH_EXCLUSION", "MUTABLE"]
    }
    condition, filters, otherwise = props["ImageTagMutabilityExclusionFilters"]["Fn::If"]
    assert condition == "HasImmutableTagPattern"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert filters == [
        {
            "ImageTagMutabilityExclusionFilterType": "WILDCARD",
            "ImageTagMutabilityExclusionFilterValue": {"Ref": "ImmutableTagPattern"},
        }
    ]
    assert TEMPLATE["Parameters"]["ImmutableTagPattern"]["Default"] == "v*.*.*"
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    pattern = {"Ref": "ImmutableTagPattern"}
    assert {"Name": "LAYERCACHE_IMMUTABLE_TAG_PATTERN", "Value": pattern} in variables


BAKE_PREFIX_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/"
    "${ImageRepositoryName}/*"
}


def test_a_bake_files_images_get_repositories_created_on_push_with_the_image_settings() -> None:
    spec = RESOURCES["ImageRepositoriesTemplate"]
    assert spec["Condition"] == "UsesBakeFile"
    assert TEMPLATE["Conditions"]["UsesBakeFile"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BakeFile"}, ""]}]
    }
    props = spec["Properties"]
    assert props["Prefix"] == {"Ref": "ImageRepositoryName"}  # ECR adds the `/`
    assert props["AppliedFor"] == ["CREATE_ON_PUSH"]
    image = resource("ImageRepository")["Properties"]
    for setting in ("ImageTagMutability", "ImageTagMutabilityExclusionFilters"):
        assert props[setting] == image[setting]
    assert props["EncryptionConfiguration"] == image["EncryptionConfiguration"]
    assert TEMPLATE["Parameters"]["BakeFile"]["Default"] == ""  # one Dockerfile, as before
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    assert {"Name": "LAYERCACHE_BAKE_FILE", "Value": {"Ref": "BakeFile"}} in variables
    assert {"Name": "LAYERCACHE_BAKE_TARGETS", "Value": {"Ref": "BakeTargets"}} in variables


CACHE_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}"
    ":repository/${ImageRepositoryName}-cache"
}
CACHE_PREFIX_ARN = {"Fn::Sub": CACHE_ARN["Fn::Sub"] + "/*"}
CACHE_PULL = {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"}
CACHE_PUSH = {
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
}


def _denied_except(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each denied action -> the principals (role logical ids) the Deny leaves out."""
    result: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Deny"
        assert statement["Principal"] == "*"
        exempt = statement["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
        exempt = exempt if isinstance(exempt, list) else [exempt]
        roles = {item["Fn::GetAtt"][0] for item in exempt}
        actions = statement["Action"]
        for action in actions if isinstance(actions, list) else [actions]:
            result[action] = roles
    return result


def test_the_cache_lives_apart_and_only_the_build_and_the_pruner_reach_it() -> None:
    """Pulling an image never exposes its builder stages: the cache refs are in their own
    repository, whose policy denies pulls to all but the build and the pruner, pushes to
    all but the build, deletes to all but the pruner (what identity policies grant)."""
    cache = resource("CacheRepository")
    assert cache["Properties"]["RepositoryName"] == {"Fn::Sub": "${ImageRepositoryName}-cache"}
    denied = _denied_except(cache["Properties"]["RepositoryPolicyText"]["Statement"])
    builder, pruner = "BuildProjectRole", "ImagePrunerFunctionRole"
    assert {a: denied[a] for a in CACHE_PULL} == {key: {builder, pruner} for key in CACHE_PULL}
    assert {a: denied[a] for a in CACHE_PUSH} == {key: {builder} for key in CACHE_PUSH}
    assert denied["ecr:BatchDeleteImage"] == {pruner}
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    assert {
        "Name": "LAYERCACHE_CACHE_REPOSITORY_URI",
        "Value": {"Fn::GetAtt": ["CacheRepository", "RepositoryUri"]},
    } in variables


def test_each_bake_images_cache_repository_gets_the_same_policy() -> None:
    spec = resource("CacheRepositoriesTemplate")
    assert spec["Condition"] == "UsesBakeFile"
    props = spec["Properties"]
    assert props["Prefix"] == {"Fn::Sub": "${ImageRepositoryName}-cache"}
    assert props["AppliedFor"] == ["CREATE_ON_PUSH"]
    text, names = props["RepositoryPolicy"]["Fn::Sub"]
    assert names == {
        "Build": {"Fn::GetAtt": ["BuildProjectRole", "Arn"]},
        "Pruner": {"Fn::GetAtt": ["ImagePrunerFunctionRole", "Arn"]},
    }
    statements = json.loads(text.replace("${Build}", "B").replace("${Pruner}", "P"))["Statement"]
    cache_statements = resource("CacheRepository")["Properties"]["RepositoryPolicyText"]
    expected = _denied_except(cache_statements["Statement"])
    as_names = {"BuildProjectRole": "B", "ImagePrunerFunctionRole": "P"}
    for statement in statements:
        exempt = statement["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
        exempt = set(exempt if isinstance(exempt, list) else [exempt])
        actions = statement["Action"]
        for action in actions if isinstance(actions, list) else [actions]:
            assert exempt == {as_names[role] for role in expected[action]}, action
    assert {
        a
        for s in statements
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    } == set(expected)


def test_no_statement_grants_more_than_the_image_prefix_for_a_bake_files_images() -> None:
    """Every ECR statement names the stack's repositories, or the prefix `<name>/*` only
    under UsesBakeFile; repositories are created only by the build, under that prefix."""
    allowed = [
        {"Fn::GetAtt": ["ImageRepository", "Arn"]},
        {"Fn::GetAtt": ["BuildKitMirrorRepository", "Arn"]},
        CACHE_ARN,
    ]
    prefix_statements: dict[str, set[str]] = {}
    for owner, wrapped in _statements():
        conditional = "Fn::If" in wrapped
        for statement in _plain(wrapped):
            actions = statement["Action"]
            actions = set(actions if isinstance(actions, list) else [actions])
            if not any(action.startswith("ecr:") for action in actions):
                continue
            resources = statement["Resource"]
            if resources in (BAKE_PREFIX_ARN, CACHE_PREFIX_ARN):
                assert conditional, owner
                assert wrapped["Fn::If"][0] == "UsesBakeFile", owner
                if resources == BAKE_PREFIX_ARN:
                    prefix_statements[owner] = actions
            elif isinstance(resources, dict) and "Fn::If" in resources:
                condition, with_bake, without = resources["Fn::If"]
                if condition == "UsesBakeFile" and without == CACHE_ARN:
                    assert with_bake == [CACHE_ARN, CACHE_PREFIX_ARN], owner
            elif resources != "*":
                assert resources in allowed, f"{owner}: {resources}"
            if "ecr:CreateRepository" in actions:
                assert resources in (BAKE_PREFIX_ARN, CACHE_PREFIX_ARN), owner
    assert "ecr:CreateRepository" in prefix_statements["BuildProjectRole"]
    assert prefix_statements["BuildRecorderFunction"] == {"ecr:BatchGetImage", "ecr:PutImage"}
    assert "ecr:BatchDeleteImage" in prefix_statements["ImagePrunerFunction"]
    assert "ecr:BatchDeleteImage" not in prefix_statements["BuildProjectRole"]


def test_the_pruner_cannot_download_function_code() -> None:
    actions: list[str] = []
    for _, statement in _statements():
        for plain in _plain(statement):
            action = plain["Action"]
            actions.extend([action] if isinstance(action, str) else action)
    assert "lambda:ListFunctions" in actions
    assert "lambda:GetFunction" not in actions


def test_cfn_lint_informational_checks_are_clean() -> None:
    """`make lint` runs cfn-lint with --include-checks I: DeletionPolicy and the like."""
    import subprocess
    import sys
    from pathlib import Path

    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), str(ROOT / "template.yaml"), "--include-checks", "I"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- build secrets
SECRET_A = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/pip-token-AbCdEf"
SECRET_B = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/npm-Zy12xW"


def _with_parameters(**parameters: str) -> dict[str, Any]:
    refs: dict[str, Any] = {**parameter_defaults(), **parameters}
    refs.update({"AWS::Partition": "aws", "AWS::Region": "eu-west-1"})
    refs.update({"AWS::AccountId": "123456789012", "AWS::StackName": "stack"})
    return refs


def _project_variables(refs: dict[str, Any]) -> dict[str, dict[str, str]]:
    refs = {**refs, "ImageRepository.RepositoryUri": "r", "CacheRepository.RepositoryUri": "c"}
    refs.update({"BuildDriverBundle": "b", "BuildKitMirrorRepository.RepositoryUri": "m"})
    props = resource("ImageBuildProject")["Properties"]["Environment"]
    return {v["Name"]: v for v in resolve(props["EnvironmentVariables"], refs)}


def _secret_resources(refs: dict[str, Any]) -> list[str] | None:
    for policy in resource("BuildProjectRole")["Properties"]["Policies"]:
        for wrapped in policy["PolicyDocument"]["Statement"]:
            if any(s.get("Sid") == "ReadBuildSecrets" for s in _plain(wrapped)):
                statement = resolve(wrapped, refs)
                return None if statement is NO_VALUE else list(statement["Resource"])
    raise AssertionError("no ReadBuildSecrets statement")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        (f"pip={SECRET_A}", {"pip": SECRET_A}),
        (
            f"pip={SECRET_A}:token,npm={SECRET_B}",
            {"pip": f"{SECRET_A}:token", "npm": SECRET_B},
        ),
        (
            ",".join(f"s{n}={SECRET_B}:k{n}" for n in range(5)),
            {f"s{n}": f"{SECRET_B}:k{n}" for n in range(5)},
        ),
    ],
)
def test_each_build_secret_is_a_secrets_manager_variable_and_only_its_arn_is_readable(
    value: str, expected: dict[str, str]
) -> None:
    """The template's intrinsic functions, evaluated: slot n of BuildSecrets becomes
    LAYERCACHE_SECRET_<n> of type SECRETS_MANAGER (resolved by CodeBuild, never a plain
    value), and the build role may read exactly those secrets' ARNs (the json key cut)."""
    refs = _with_parameters(BuildSecrets=value)
    variables = _project_variables(refs)
    secrets = {name: v for name, v in variables.items() if name.startswith("LAYERCACHE_SECRET_")}
    assert variables["LAYERCACHE_BUILD_SECRETS"]["Value"] == value
    assert sorted(secrets) == [f"LAYERCACHE_SECRET_{n + 1}" for n in range(len(expected))]
    for n, reference in enumerate(expected.values()):
        assert secrets[f"LAYERCACHE_SECRET_{n + 1}"]["Type"] == "SECRETS_MANAGER"
        assert secrets[f"LAYERCACHE_SECRET_{n + 1}"]["Value"] == reference
    resources = _secret_resources(refs)
    if not expected:
        assert resources is None
    else:
        arns = [":".join(reference.split(":")[:7]) for reference in expected.values()]
        assert resources == arns
        assert set(resources) <= {SECRET_A, SECRET_B}


@pytest.mark.parametrize(
    "value",
    [
        f"pip={SECRET_A},npm={SECRET_B},a={SECRET_A},b={SECRET_A},c={SECRET_A},d={SECRET_A}",
        "pip=not-an-arn",
        f"={SECRET_A}",
        f"pip {SECRET_A}",
        "pip=arn:aws:s3:::bucket",
    ],
)
def test_build_secrets_beyond_five_or_malformed_are_refused_at_deploy(value: str) -> None:
    pattern = TEMPLATE["Parameters"]["BuildSecrets"]["AllowedPattern"]
    assert re.fullmatch(pattern, value) is None


def test_no_secret_is_ever_a_plain_variable_of_the_build() -> None:
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    for variable in resolve(variables, _project_variables_refs_with_secret()):
        if variable["Name"].startswith("LAYERCACHE_SECRET_"):
            assert variable["Type"] == "SECRETS_MANAGER"


def _project_variables_refs_with_secret() -> dict[str, Any]:
    refs = _with_parameters(BuildSecrets=f"pip={SECRET_A}")
    refs.update({"ImageRepository.RepositoryUri": "r", "CacheRepository.RepositoryUri": "c"})
    refs.update({"BuildDriverBundle": "b", "BuildKitMirrorRepository.RepositoryUri": "m"})
    return refs


# ---------------------------------------------------------------- platforms
@pytest.mark.parametrize(
    ("platforms", "several", "arm_only"),
    [
        ("linux/amd64", False, False),
        ("linux/arm64", False, True),
        ("linux/amd64,linux/arm64", True, False),
        ("linux/arm64,linux/amd64", True, False),
    ],
)
def test_platforms_choose_the_host_and_whether_builds_come_in_batches(
    platforms: str, several: bool, arm_only: bool
) -> None:
    refs = _with_parameters(Platforms=platforms)
    assert condition_holds("BuildsPlatforms", refs) is several
    assert condition_holds("BuildsOnArmOnly", refs) is arm_only
    assert condition_holds("BuildsInBatches", refs) is several  # FanOut is off
    props = resource("ImageBuildProject")["Properties"]["Environment"]
    environment = {name: resolve(props[name], refs) for name in ("Type", "Image")}
    assert environment["Type"] == ("ARM_CONTAINER" if arm_only else "LINUX_CONTAINER")
    assert environment["Image"] == refs["ArmBuildImage" if arm_only else "BuildImage"]


@pytest.mark.parametrize(
    "platforms", ["linux/arm/v7", "linux/amd64,linux/arm64,linux/amd64", "amd64", ""]
)
def test_only_platforms_with_a_native_host_are_accepted(platforms: str) -> None:
    pattern = TEMPLATE["Parameters"]["Platforms"]["AllowedPattern"]
    assert re.fullmatch(pattern, platforms) is None
