"""Move a branch's moving tags (`<branch>`, `latest`) to a build that succeeded, only forward.

The build pushes only its immutable tags (`<sha>`, `<branch>-<sha7>`). Its moving tags
are published here, in two steps:

1. a conditional write on the branch head (`BuildsTable.publish`): it succeeds only for a
   build whose (sequence, requested_at) is not older than the one the tags hold now,
   and never for a commit the head knows to be older;
2. ECR PutImage of that build's manifest under each tag, then a re-read of the head: if
   a newer build was published meanwhile, its manifest is put again, until the head and
   the tags agree. Whichever publisher puts last has just read the newest head, so the
   tags always end on the newest build, however the publications interleave.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from layercache.build_records import ENV_SEQUENCE, BranchHead, BuildsTable
from layercache.recording.build import BuildFacts

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

logger = Logger(child=True)

MANIFEST_MEDIA_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]
MAX_ROUNDS = 5


@dataclass(frozen=True)
class Publication:
    published: bool
    reason: str
    tags: tuple[str, ...] = ()


def _is_commit(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 40 and all(c in "0123456789abcdef" for c in value)
    )


class TagPublisher:
    def __init__(self, table: BuildsTable, ecr: ECRClient, repository_name: str) -> None:
        self.table = table
        self.ecr = ecr
        self.repository_name = repository_name

    def publish(self, record: Mapping[str, Any], facts: BuildFacts) -> Publication:
        """Publish a SUCCEEDED build's moving tags unless a newer build holds them."""
        outputs = facts.outputs
        image, branch = record.get("image"), record.get("branch")
        commit = record.get("commit") or record.get("source_version")
        if not outputs.moving_tags or not outputs.image_digest:
            return Publication(False, "the build named no moving tags")
        if not isinstance(image, str) or not isinstance(branch, str) or not _is_commit(commit):
            return Publication(False, "the build's branch or commit is unknown")
        sequence = self._sequence(facts, image, branch, str(commit))
        if sequence is None:
            return Publication(False, f"{commit} is older than the branch head")
        result = self.table.publish(
            image,
            branch,
            sequence=sequence,
            requested_at=str(record.get("requested_at", "")),
            commit=str(commit),
            digest=outputs.image_digest,
            tags=outputs.moving_tags,
        )
        if not result.applied:
            holder = result.item.get("published_commit") or "a newer commit"
            logger.info("A newer build holds the moving tags", extra={"holder": holder})
            return Publication(False, f"a newer build ({holder}) holds the moving tags")
        self._converge(image, branch)
        return Publication(True, "published", outputs.moving_tags)

    def _sequence(self, facts: BuildFacts, image: str, branch: str, commit: str) -> int | None:
        """The build's place in its branch's order: the starter's, else the head's now."""
        text = facts.environment.get(ENV_SEQUENCE, "").strip()
        if text.isdigit():
            return int(text)
        # Started by hand or by an older version: it built what the branch was then.
        head = self.table.branch_head(image, branch)
        if head is None:
            return 0
        return None if head.knows_older(commit) else head.sequence

    def _converge(self, image: str, branch: str) -> None:
        for _ in range(MAX_ROUNDS):
            head = self.table.branch_head(image, branch)
            if head is None or head.published_digest is None:
                return
            self._put_tags(head)
            again = self.table.branch_head(image, branch)
            if again is not None and again.published_digest == head.published_digest:
                return
        raise RuntimeError(f"moving tags of {branch} kept changing; the retry will settle them")

    def _put_tags(self, head: BranchHead) -> None:
        digest = head.published_digest
        assert digest is not None
        images = self.ecr.batch_get_image(
            repositoryName=self.repository_name,
            imageIds=[{"imageDigest": digest}],
            acceptedMediaTypes=MANIFEST_MEDIA_TYPES,
        ).get("images", [])
        if not images:
            raise RuntimeError(f"{digest} is not in {self.repository_name}")
        manifest = images[0]["imageManifest"]
        media_type = images[0].get("imageManifestMediaType")
        for tag in head.published_tags:
            arguments: dict[str, Any] = {
                "repositoryName": self.repository_name,
                "imageManifest": manifest,
                "imageTag": tag,
                "imageDigest": digest,
            }
            if media_type:
                arguments["imageManifestMediaType"] = media_type
            try:
                self.ecr.put_image(**arguments)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ImageAlreadyExistsException":
                    raise
            logger.info("Moving tag published", extra={"tag": tag, "digest": digest})
