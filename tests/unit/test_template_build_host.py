"""BuildHost in the template: the project and the fleet as each value resolves them, and
the parameter combinations the stack refuses (its Rules, evaluated here)."""

from __future__ import annotations

from typing import Any

import pytest

from layercache_dev.kit.template import load_template, parameter_defaults, resolve

FLEET_ARN = "arn:aws:codebuild:eu-west-1:123456789012:fleet/stack-image-build:1"


def refs(**parameters: str) -> dict[str, Any]:
    """Parameter values (defaults, overridden) and the attributes the project refers to."""
    values: dict[str, Any] = {**parameter_defaults(), **parameters}
    values |= {
        "SourceRepository": "team/app",
        "ImageRepositoryName": "app",
        "AWS::StackName": "stack",
        "AWS::Region": "eu-west-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "BuildFleet.Arn": FLEET_ARN,
        "BuildProjectRole.Arn": "arn:aws:iam::123456789012:role/build",
        "BuildBatchServiceRole.Arn": "arn:aws:iam::123456789012:role/batch",
        "ImageRepository.RepositoryUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
        "CacheRepository.RepositoryUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app-cache",
        "BuildKitMirrorRepository.RepositoryUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/bk",
        "BuildDriverBundle": "arn:aws:lambda:eu-west-1:123456789012:layer:driver:1",
        "BuildLogGroup": "builds",
    }
    return values


def project(**parameters: str) -> dict[str, Any]:
    properties = load_template()["Resources"]["ImageBuildProject"]["Properties"]
    resolved: dict[str, Any] = resolve(properties, refs(**parameters))
    return resolved


def variables(**parameters: str) -> dict[str, str]:
    return {
        v["Name"]: v["Value"] for v in project(**parameters)["Environment"]["EnvironmentVariables"]
    }


def exists(logical_id: str, **parameters: str) -> bool:
    condition = load_template()["Resources"][logical_id].get("Condition")
    if condition is None:
        return True
    return bool(resolve({"Fn::If": [condition, True, False]}, refs(**parameters)))


def _holds(expression: Any, values: dict[str, Any]) -> Any:
    """Rules' functions: Equals, Not, And, Or, Contains (a value among a list)."""
    if isinstance(expression, dict) and len(expression) == 1:
        ((name, argument),) = expression.items()
        if name == "Fn::Equals":
            return _holds(argument[0], values) == _holds(argument[1], values)
        if name == "Fn::Not":
            return not _holds(argument[0], values)
        if name == "Fn::And":
            return all(_holds(part, values) for part in argument)
        if name == "Fn::Or":
            return any(_holds(part, values) for part in argument)
        if name == "Fn::Contains":
            return _holds(argument[1], values) in [_holds(item, values) for item in argument[0]]
    return resolve(expression, values)


def refused(**parameters: str) -> list[str]:
    """The rules a deploy with these parameters would fail (their AssertDescription)."""
    values = refs(**parameters)
    failed = []
    for rule in load_template()["Rules"].values():
        if "RuleCondition" in rule and not _holds(rule["RuleCondition"], values):
            continue
        failed += [
            a["AssertDescription"] for a in rule["Assertions"] if not _holds(a["Assert"], values)
        ]
    return failed


def test_on_demand_is_the_default_and_todays_project() -> None:
    assert load_template()["Parameters"]["BuildHost"]["Default"] == "on-demand"
    environment = project()["Environment"]
    assert "Fleet" not in environment
    assert "DockerServer" not in environment
    assert "Cache" not in project()
    assert not exists("BuildFleet")
    assert variables()["LAYERCACHE_BUILD_HOST"] == "on-demand"
    assert variables()["LAYERCACHE_BUILDER"] == "docker-container"


def test_a_fleet_build_runs_on_the_stacks_fleet_and_keeps_dockers_state() -> None:
    built = project(BuildHost="fleet", FleetCapacity="2")

    assert built["Environment"]["Fleet"] == {"FleetArn": FLEET_ARN}
    assert "DockerServer" not in built["Environment"]
    assert built["Cache"] == {"Type": "LOCAL", "Modes": ["LOCAL_DOCKER_LAYER_CACHE"]}
    assert variables(BuildHost="fleet")["LAYERCACHE_BUILD_HOST"] == "fleet"
    assert exists("BuildFleet", BuildHost="fleet")


@pytest.mark.parametrize(
    ("platforms", "environment_type"),
    [("linux/amd64", "LINUX_CONTAINER"), ("linux/arm64", "ARM_CONTAINER")],
)
def test_the_fleet_matches_the_projects_host(platforms: str, environment_type: str) -> None:
    fleet = load_template()["Resources"]["BuildFleet"]
    properties = resolve(
        fleet["Properties"],
        refs(
            BuildHost="fleet",
            FleetCapacity="3",
            Platforms=platforms,
            ComputeType="BUILD_GENERAL1_LARGE",
        ),
    )
    assert properties == {
        "Name": "stack-image-build",
        "BaseCapacity": "3",
        "ComputeType": "BUILD_GENERAL1_LARGE",
        "EnvironmentType": environment_type,
        "OverflowBehavior": "QUEUE",  # a build waits for a warm host, never starts a cold one
    }
    built = project(BuildHost="fleet", Platforms=platforms)["Environment"]
    assert built["Type"] == environment_type


def test_the_fleet_needs_no_role_of_its_own() -> None:
    # CodeBuild's fleet service role is for fleets in a VPC (or with a proxy): this one is
    # in neither, so the stack grants nothing new.
    assert "FleetServiceRole" not in load_template()["Resources"]["BuildFleet"]["Properties"]


def test_a_docker_server_build_gets_the_projects_docker_server() -> None:
    built = project(BuildHost="docker-server", ComputeType="BUILD_GENERAL1_LARGE")

    assert built["Environment"]["DockerServer"] == {"ComputeType": "BUILD_GENERAL1_LARGE"}
    assert "Fleet" not in built["Environment"]
    assert "Cache" not in built
    assert built["Environment"]["PrivilegedMode"] is True
    assert not exists("BuildFleet", BuildHost="docker-server")
    assert variables(BuildHost="docker-server")["LAYERCACHE_BUILD_HOST"] == "docker-server"


@pytest.mark.parametrize("host", ["on-demand", "fleet", "docker-server"])
def test_every_host_still_reads_and_writes_the_registry_cache(host: str) -> None:
    found = variables(BuildHost=host)
    assert found["LAYERCACHE_CACHE_REPOSITORY_URI"].endswith("/app-cache")
    assert "LAYERCACHE_BUILDKIT_DRIVER_OPTS" not in found  # a test-rig knob only


@pytest.mark.parametrize(
    ("parameters", "refusals"),
    [
        ({}, []),
        ({"Platforms": "linux/amd64,linux/arm64"}, []),
        ({"BuildHost": "fleet"}, []),
        ({"BuildHost": "fleet", "Platforms": "linux/arm64"}, []),
        ({"BuildHost": "fleet", "Platforms": "linux/amd64,linux/arm64"}, ["one platform"]),
        ({"BuildHost": "docker-server"}, []),
        ({"BuildHost": "docker-server", "Platforms": "linux/arm64"}, ["linux/amd64 only"]),
        (
            {"BuildHost": "docker-server", "Platforms": "linux/amd64,linux/arm64"},
            ["one platform", "linux/amd64 only"],
        ),
    ],
)
def test_combinations_that_cannot_work_are_refused(
    parameters: dict[str, str], refusals: list[str]
) -> None:
    failed = refused(**parameters)
    assert len(failed) == len(refusals), failed
    for description, expected in zip(failed, refusals, strict=True):
        assert expected in description
