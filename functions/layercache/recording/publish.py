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

With a Bake file, a build publishes several images, each in its own repository
(`<image repository>/<target>`). The same two steps cover them all: one conditional
write names every image's digest (`published_images`, the branch head's `published_digest`
left empty), so the build either takes the moving tags in every repository or in none
and an older build never moves a tag back in any of them; the convergence puts each
image's manifest under the tags in its own repository. Before that, the repositories are
remembered (`BuildsTable.add_image_repositories`), so the pruner covers them even if the
publication fails. Only repositories under the stack's image repository's prefix are
published to or remembered: nothing else is the stack's (or within its IAM scope).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from layercache.build_records import (
    ENV_SEQUENCE,
    BranchHead,
    BuildsTable,
    PlannedImage,
    is_image_repository,
)
from layercache.recording.build import BuildFacts, BuildOutputs, ImageOutput

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
    repositories: tuple[str, ...] = ()  # where the tags were put: one, or each image's


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
        if outputs.images:
            images = self._image_digests(outputs.images)
            self.table.add_image_repositories(
                image if isinstance(image, str) else self.repository_name, list(images)
            )
            digest, tags = "", _common_moving_tags(outputs)
            if not images:
                return Publication(False, "no image of the build is in the stack's repositories")
        else:
            images, digest, tags = {}, outputs.image_digest or "", outputs.moving_tags
        if not tags or not (digest or images):
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
            digest=digest,
            tags=tags,
            images=images or None,
            plan=[
                PlannedImage(output.image, output.built_on)
                for output in outputs.images
                if output.repository in images
            ],
        )
        if not result.applied:
            holder = result.item.get("published_commit") or "a newer commit"
            logger.info("A newer build holds the moving tags", extra={"holder": holder})
            return Publication(False, f"a newer build ({holder}) holds the moving tags")
        self._converge(image, branch)
        return Publication(True, "published", tags, tuple(images) or (self.repository_name,))

    def _image_digests(self, images: Sequence[ImageOutput]) -> dict[str, str]:
        """Each image's repository name -> its digest, for the stack's repositories only."""
        digests: dict[str, str] = {}
        for image in images:
            if is_image_repository(self.repository_name, image.repository):
                digests[image.repository] = image.digest
            else:
                logger.warning(
                    "Image outside the stack's repositories: not published",
                    extra={"image": image.image, "repository": image.repository},
                )
        return digests

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
            if head is None or not self._targets(head):
                return
            for repository, digest in self._targets(head).items():
                self._put_tags(repository, digest, head.published_tags)
            again = self.table.branch_head(image, branch)
            if again is not None and self._published(again) == self._published(head):
                return
        raise RuntimeError(f"moving tags of {branch} kept changing; the retry will settle them")

    def _targets(self, head: BranchHead) -> dict[str, str]:
        """Where the head's moving tags go: repository name -> the digest they name."""
        targets = {self.repository_name: head.published_digest} if head.published_digest else {}
        return {**targets, **head.published_images}

    def _published(self, head: BranchHead) -> tuple[dict[str, str], tuple[str, ...]]:
        return self._targets(head), head.published_tags

    def _put_tags(self, repository: str, digest: str, tags: Sequence[str]) -> None:
        images = self.ecr.batch_get_image(
            repositoryName=repository,
            imageIds=[{"imageDigest": digest}],
            acceptedMediaTypes=MANIFEST_MEDIA_TYPES,
        ).get("images", [])
        if not images:
            raise RuntimeError(f"{digest} is not in {repository}")
        manifest = images[0]["imageManifest"]
        media_type = images[0].get("imageManifestMediaType")
        for tag in tags:
            arguments: dict[str, Any] = {
                "repositoryName": repository,
                "imageManifest": manifest,
                "imageTag": tag,
                "imageDigest": digest,
            }
            if media_type:
                arguments["imageManifestMediaType"] = media_type
            try:
                self.ecr.put_image(**arguments)
            except ClientError as error:
                # The tag is there already; anything else (a throttle the SDK's retries
                # did not outlast, a denial) fails the invocation, and Lambda retries.
                if error.response.get("Error", {}).get("Code") != "ImageAlreadyExistsException":
                    raise
            logger.info(
                "Moving tag published",
                extra={"repository": repository, "tag": tag, "digest": digest},
            )


def _common_moving_tags(outputs: BuildOutputs) -> tuple[str, ...]:
    """A Bake build's moving tags: the build's (common to all images), else the tags
    every image names."""
    if outputs.moving_tags:
        return outputs.moving_tags
    first, *others = [image.moving_tags for image in outputs.images]
    return tuple(tag for tag in first if all(tag in tags for tags in others))
