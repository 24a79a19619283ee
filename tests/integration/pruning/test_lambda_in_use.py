"""The Lambda in-use check on moto: the digest comes from ListFunctions alone.

With MOTO_LAMBDA_STUB_ECR=false, moto resolves an image function's ImageUri in its ECR
and sets CodeSha256 to the image's digest, as AWS does (by default moto hashes the URI).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from layercache.pruning.in_use import LambdaFunctions

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "1" * 64,
            "size": 10,
        },
        "layers": [],
    }
)


def _image_function(lam: Any, role: str, name: str, image_uri: str) -> str:
    lam.create_function(
        FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": image_uri}
    )
    return str(
        lam.update_function_code(FunctionName=name, ImageUri=image_uri, Publish=True)["Version"]
    )


def test_every_published_version_of_an_image_function_is_found_without_get_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "false")
    with mock_aws():
        ecr = boto3.client("ecr", region_name="us-east-1")
        uri = ecr.create_repository(repositoryName="app")["repository"]["repositoryUri"]
        digest = ecr.put_image(repositoryName="app", imageManifest=MANIFEST, imageTag="main")[
            "image"
        ]["imageId"]["imageDigest"]
        role = boto3.client("iam", region_name="us-east-1").create_role(
            RoleName="fn", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        lam = boto3.client("lambda", region_name="us-east-1")
        version = _image_function(lam, role, "api", f"{uri}:main")
        lam.create_alias(FunctionName="api", Name="live", FunctionVersion=version)

        calls: list[str] = []
        lam.meta.events.register("before-call.lambda", lambda model, **_: calls.append(model.name))
        found = LambdaFunctions(lam).digests()

    assert digest in found
    assert found[digest].startswith(
        "Lambda function arn:aws:lambda:us-east-1:123456789012:function:api"
    )
    assert set(calls) == {"ListFunctions"}
