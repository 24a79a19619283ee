"""The ECS service check: images a service may start tasks from, running or not.

moto models clusters, services and task definitions, but not a deployment in progress
(its update_service leaves one PRIMARY deployment), nor ListServices paging, nor
DescribeServices failures: those run against a botocore Stubber.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from layercache.pruning.in_use import (
    DESCRIBE_SERVICES_BATCH,
    EcsServices,
    EcsTasks,
    TagRef,
    UnreadableService,
    collect,
    protected_tags_for,
    tag_ref,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ECR_URI = f"{REGISTRY}/team/service"
CLUSTER = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def task_definition_arn(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"


def service_arn(name: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/{name}"


@pytest.fixture
def ecs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("ecs", region_name=REGION)
        client.create_cluster(clusterName="prod")
        yield client


def register(client: Any, family: str, *images: str) -> str:
    containers = [
        {"name": f"c{n}", "image": image, "memory": 128} for n, image in enumerate(images)
    ]
    response = client.register_task_definition(family=family, containerDefinitions=containers)
    return str(response["taskDefinition"]["taskDefinitionArn"])


def record_calls(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Each call's operation and parameters, as the caller passed them (a Stubber too)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    client.meta.events.register(
        "before-parameter-build.ecs",
        lambda model, params, **_: calls.append((model.name, dict(params))),
    )
    return calls


def test_a_service_scaled_to_zero_protects_its_image_by_digest(ecs: Any) -> None:
    pinned = register(ecs, "api", f"{ECR_URI}@{digest(1)}", f"{ECR_URI}:main@{digest(2)}")
    ecs.create_service(cluster="prod", serviceName="api", taskDefinition=pinned, desiredCount=0)

    assert EcsTasks(ecs).digests() == {}, "no task runs: the task check alone sees nothing"
    found = collect([EcsServices(ecs)])

    where = f"ECS service {service_arn('api')} (task definition {pinned})"
    assert found == {digest(1): where, digest(2): where}


def test_services_of_one_task_definition_describe_it_once(ecs: Any) -> None:
    shared = register(ecs, "worker", f"{ECR_URI}@{digest(3)}")
    for name in ("worker-a", "worker-b", "worker-c"):
        ecs.create_service(cluster="prod", serviceName=name, taskDefinition=shared, desiredCount=0)
    calls = record_calls(ecs)

    images = EcsServices(ecs).images()

    described = [params for name, params in calls if name == "DescribeTaskDefinition"]
    assert described == [{"taskDefinition": shared}]
    assert list(images.digests) == [digest(3)]
    assert images.tags == {}


def test_tags_are_protected_in_the_repository_they_name_only(ecs: Any) -> None:
    named_by_tag = register(
        ecs,
        "web",
        f"{ECR_URI}:main",
        ECR_URI,  # no tag: latest
        f"{ACCOUNT}.dkr-ecr.{REGION}.on.aws/team/service:blue",  # dual-stack: same repository
        f"{REGISTRY}/team/other:release",  # another repository in the same registry
        "team/service:docker-hub",  # no registry host: Docker Hub, not ECR
        "nginx:1.27",
        f"210987654321.dkr.ecr.{REGION}.amazonaws.com/team/service:other-account",
        f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/service:other-region",
        f"{ECR_URI}-old:legacy",  # a repository whose name merely starts the same
    )
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition=named_by_tag)

    images = EcsServices(ecs).images()

    where = f"ECS service {service_arn('web')} (task definition {named_by_tag})"
    assert images.digests == {}
    assert protected_tags_for(ECR_URI, images.tags) == {
        "main": where,
        "latest": where,
        "blue": where,
    }
    assert protected_tags_for(f"{REGISTRY}/team/other", images.tags) == {"release": where}
    assert TagRef("docker.io/team/service", "docker-hub") in images.tags
    assert TagRef("docker.io/library/nginx", "1.27") in images.tags


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"{ECR_URI}:main", TagRef(ECR_URI, "main")),
        (ECR_URI, TagRef(ECR_URI, "latest")),
        ("localhost:5000/team/service", TagRef("localhost:5000/team/service", "latest")),
        ("localhost:5000/team/service:dev", TagRef("localhost:5000/team/service", "dev")),
        ("team/service:v1", TagRef("docker.io/team/service", "v1")),
        ("nginx", TagRef("docker.io/library/nginx", "latest")),
    ],
)
def test_an_image_reference_is_read_as_docker_reads_it(image: str, expected: TagRef) -> None:
    assert tag_ref(image) == expected


def test_a_deployment_in_progress_protects_the_new_and_the_old_task_definition() -> None:
    client = boto3.client("ecs", region_name=REGION)
    new, old = task_definition_arn("api", 8), task_definition_arn("api", 7)
    api = service_arn("api")
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [CLUSTER]}, {})
        stubber.add_response("list_services", {"serviceArns": [api]}, {"cluster": CLUSTER})
        service = {
            "serviceArn": api,
            "taskDefinition": new,
            "desiredCount": 2,
            "deployments": [
                {"id": "ecs-svc/2", "status": "PRIMARY", "taskDefinition": new},
                {"id": "ecs-svc/1", "status": "ACTIVE", "taskDefinition": old},
            ],
        }
        stubber.add_response(
            "describe_services",
            {"services": [service], "failures": []},
            {"cluster": CLUSTER, "services": [api]},
        )
        for arn, image in ((new, f"{ECR_URI}@{digest(8)}"), (old, f"{ECR_URI}:v7")):
            stubber.add_response(
                "describe_task_definition",
                {"taskDefinition": {"containerDefinitions": [{"name": "app", "image": image}]}},
                {"taskDefinition": arn},
            )
        images = EcsServices(client).images()
        stubber.assert_no_pending_responses()

    assert images.digests == {digest(8): f"ECS service {api} (task definition {new})"}
    assert protected_tags_for(ECR_URI, images.tags) == {
        "v7": f"ECS service {api} (task definition {old})"
    }


def test_services_are_paged_and_described_ten_at_a_time() -> None:
    client = boto3.client("ecs", region_name=REGION)
    names = [f"svc-{n:02}" for n in range(23)]
    arns = [service_arn(name) for name in names]
    shared = task_definition_arn("shared", 1)
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [CLUSTER]}, {})
        stubber.add_response(
            "list_services",
            {"serviceArns": arns[:15], "nextToken": "page-2"},
            {"cluster": CLUSTER},
        )
        stubber.add_response(
            "list_services",
            {"serviceArns": arns[15:]},
            {"cluster": CLUSTER, "nextToken": "page-2"},
        )
        for start in range(0, len(arns), DESCRIBE_SERVICES_BATCH):
            batch = arns[start : start + DESCRIBE_SERVICES_BATCH]
            stubber.add_response(
                "describe_services",
                {"services": [{"serviceArn": a, "taskDefinition": shared} for a in batch]},
                {"cluster": CLUSTER, "services": batch},
            )
        stubber.add_response(
            "describe_task_definition",
            {"taskDefinition": {"containerDefinitions": [{"image": f"{ECR_URI}:main"}]}},
            {"taskDefinition": shared},
        )
        calls = record_calls(client)
        images = EcsServices(client).images()
        stubber.assert_no_pending_responses()

    batch_sizes = [len(params["services"]) for name, params in calls if name == "DescribeServices"]
    assert batch_sizes == [10, 10, 3]
    assert protected_tags_for(ECR_URI, images.tags) == {
        "main": f"ECS service {arns[0]} (task definition {shared})"
    }


def test_a_service_deleted_meanwhile_is_skipped_but_any_other_failure_stops_the_run() -> None:
    client = boto3.client("ecs", region_name=REGION)
    gone, hidden = service_arn("gone"), service_arn("hidden")
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [CLUSTER]}, {})
        stubber.add_response("list_services", {"serviceArns": [gone, hidden]}, {"cluster": CLUSTER})
        stubber.add_response(
            "describe_services",
            {
                "services": [],
                "failures": [
                    {"arn": gone, "reason": "MISSING"},
                    {"arn": hidden, "reason": "ACCESS_DENIED", "detail": "not allowed"},
                ],
            },
            {"cluster": CLUSTER, "services": [gone, hidden]},
        )
        with pytest.raises(UnreadableService, match="service/prod/hidden: ACCESS_DENIED"):
            EcsServices(client).images()


def test_access_denied_on_a_task_definition_stops_the_run() -> None:
    client = boto3.client("ecs", region_name=REGION)
    api, arn = service_arn("api"), task_definition_arn("api", 1)
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [CLUSTER]}, {})
        stubber.add_response("list_services", {"serviceArns": [api]}, {"cluster": CLUSTER})
        stubber.add_response(
            "describe_services",
            {"services": [{"serviceArn": api, "taskDefinition": arn}]},
            {"cluster": CLUSTER, "services": [api]},
        )
        stubber.add_client_error(
            "describe_task_definition", "AccessDeniedException", "not authorized", 400
        )
        with pytest.raises(ClientError, match="AccessDenied"):
            collect([EcsServices(client)])


def test_a_tag_moved_on_keeps_the_digest_the_service_scales_up_with() -> None:
    """ECS resolved `main` to a digest at deployment and scales up with it after `main`
    moved: the service revision names that digest."""
    client = boto3.client("ecs", region_name=REGION)
    api = service_arn("api")
    definition = task_definition_arn("api", 3)
    revision = f"arn:aws:ecs:{REGION}:123456789012:service-revision/prod/api/4512"
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [CLUSTER]}, {})
        stubber.add_response("list_services", {"serviceArns": [api]}, {"cluster": CLUSTER})
        service = {
            "serviceArn": api,
            "taskDefinition": definition,
            "desiredCount": 0,
            "currentServiceRevisions": [{"arn": revision, "requestedTaskCount": 0}],
        }
        stubber.add_response(
            "describe_services",
            {"services": [service], "failures": []},
            {"cluster": CLUSTER, "services": [api]},
        )
        stubber.add_response(
            "describe_service_revisions",
            {
                "serviceRevisions": [
                    {
                        "serviceRevisionArn": revision,
                        "containerImages": [
                            {"containerName": "app", "image": f"{ECR_URI}:main",
                             "imageDigest": digest(41)},
                        ],
                    }
                ],
                "failures": [],
            },
            {"serviceRevisionArns": [revision]},
        )  # fmt: skip
        stubber.add_response(
            "describe_task_definition",
            {"taskDefinition": {"containerDefinitions": [{"image": f"{ECR_URI}:main"}]}},
            {"taskDefinition": definition},
        )
        images = EcsServices(client).images()
        stubber.assert_no_pending_responses()

    assert images.digests == {digest(41): f"ECS service revision {revision}"}
    assert set(protected_tags_for(ECR_URI, images.tags)) == {"main"}
