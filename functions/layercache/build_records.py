"""BuildsTable: the one module that knows its items, their keys and how they are written.

One table holds four kinds of item, told apart by the prefix of `pk`:

- ``BUILD#<codebuild build id>``: one item per build (`BuildStart` is what the starter
  writes; the build recorder extends the same item as CodeBuild reports progress). With
  FanOut, one item per batch build (`kind = batch`, keyed by the batch's id), holding
  each of its builds' part until the batch is recorded (recording/batch.py).
  Queried through the indexes:
    ByBranch  (branch_key = "<image>#<branch>", requested_at) - latest builds of a branch
    ByCommit  (commit, requested_at)                          - the builds of a commit
    ByDay     (day = "YYYY-MM-DD", requested_at)              - builds of the last N days
- ``CLAIM#<image>#<branch>#<occasion>``: `Claim`, the exactly-once claim of one build
  request, where <occasion> is the commit (pushes) or ``nightly@<scheduled time>``.
- ``HEAD#<image>#<branch>``: `BranchHead`, the newest commit the branch is known to be
  at, the commits known to be older, and what its moving tags were last published to
  (one digest; with a Bake file, one digest per image repository, `published_images`,
  and what each image is built on, `bake_plan`: the plan of the next fan-out batch).
- ``REPOSITORIES#<image>``: the ECR repositories a Bake file's builds have published
  to (`<image>/<target>`, one per target), so the pruner covers each of them.
- ``DELIVERY#<id>``: kept only by older versions (expires); nothing writes it any more.

`BuildsTable` is the adapter every writer and reader uses: typed records in, conditional
writes that answer False instead of raising when their condition does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class BuildMode(StrEnum):
    """How the build step treats the cache (honoured by the build driver)."""

    NORMAL = "normal"
    REFRESH = "refresh"  # pull base images and rebuild from the OS-package step on
    CLEAN = "clean"  # no cache at all, still exports a fresh cache


class Trigger(StrEnum):
    GITHUB = "github"
    CODECOMMIT = "codecommit"
    NIGHTLY = "nightly"
    MANUAL = "manual"


class BuildStatus(StrEnum):
    """CodeBuild's build statuses, plus the trigger's own first state."""

    REQUESTED = "REQUESTED"  # claimed, StartBuild not yet answered
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAULT = "FAULT"
    STOPPED = "STOPPED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_final(self) -> bool:
        return self not in (BuildStatus.REQUESTED, BuildStatus.IN_PROGRESS)

    @property
    def blocks_rebuild(self) -> bool:
        """A commit with a build in this state needs no second build."""
        return self in (BuildStatus.REQUESTED, BuildStatus.IN_PROGRESS, BuildStatus.SUCCEEDED)


# Environment overrides every StartBuild passes; the buildspec and the recorder read them.
ENV_BRANCH = "LAYERCACHE_BRANCH"
ENV_COMMIT = "LAYERCACHE_COMMIT"
ENV_TRIGGER = "LAYERCACHE_TRIGGER"
ENV_MODE = "LAYERCACHE_MODE"
ENV_REQUESTED_AT = "LAYERCACHE_REQUESTED_AT"
# The request's place in its branch's order (see BranchHead) and its attempt's identity.
ENV_SEQUENCE = "LAYERCACHE_SEQUENCE"
ENV_REQUEST_ID = "LAYERCACHE_REQUEST_ID"
# With FanOut, each build of a batch (one per image, see starting/fan_out.py): the images
# it builds, every image the batch was planned with, and "true" on the one build that
# also builds the images the Bake file declares beyond the plan (buildspecs/bake_build.py).
ENV_FANOUT_IMAGES = "LAYERCACHE_FANOUT_IMAGES"
ENV_FANOUT_PLANNED = "LAYERCACHE_FANOUT_PLANNED"
ENV_FANOUT_NEWCOMERS = "LAYERCACHE_FANOUT_NEWCOMERS"
# With several platforms (starting/platforms.py): the platform one build of the batch
# builds, and the platforms the join build joins into one index.
ENV_PLATFORM = "LAYERCACHE_PLATFORM"
ENV_JOIN_PLATFORMS = "LAYERCACHE_JOIN_PLATFORMS"

INDEX_BY_BRANCH = "ByBranch"
INDEX_BY_COMMIT = "ByCommit"
INDEX_BY_DAY = "ByDay"

# The build item's `kind` of a batch build (FanOut); a single build's item has none.
BATCH_KIND = "batch"

# How many commits a branch head remembers as older than itself.
HEAD_MEMORY = 64
CLAIM_RETENTION = timedelta(days=90)


def build_pk(build_id: str) -> str:
    return f"BUILD#{build_id}"


def claim_pk(image: str, branch: str, what: str) -> str:
    return f"CLAIM#{image}#{branch}#{what}"


def head_pk(image: str, branch: str) -> str:
    return f"HEAD#{image}#{branch}"


def branch_key(image: str, branch: str) -> str:
    return f"{image}#{branch}"


def repositories_pk(image: str) -> str:
    return f"REPOSITORIES#{image}"


# ECR's repository name pattern (CreateRepository's `repositoryName`), 2 to 256 characters.
ECR_REPOSITORY_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
ECR_REPOSITORY_NAME_MAX = 256


def all_steps_cached(cached_steps: Any, total_steps: Any) -> bool:
    """An image every step of which came from the cache: its inputs did not change.

    Counts as the build item's `images` entries hold them (int or Decimal); anything
    else, and an image with no steps, is not."""
    counts = (cached_steps, total_steps)
    if any(isinstance(count, bool) or not isinstance(count, int | Decimal) for count in counts):
        return False
    return bool(0 < total_steps == cached_steps)


def images_text(count: int, cached: int) -> str:
    """How a Bake file's build did, in a few words: `3 images, 2 cached`."""
    return f"{count} image{'' if count == 1 else 's'}, {cached} cached"


def is_image_repository(image: str, name: str) -> bool:
    """Whether `name` is a Bake target's repository of the stack whose image repository
    is `image`: a valid ECR name strictly below `<image>/` (never `image` itself,
    `<image>-x/y`, `other/<image>/y` or `<image>/../y`)."""
    prefix = f"{image}/"
    return (
        name.startswith(prefix)
        and len(prefix) < len(name) <= ECR_REPOSITORY_NAME_MAX
        and ECR_REPOSITORY_NAME.fullmatch(name) is not None
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds: sorts as text in the same order as in time."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value if isinstance(value, str) and value else None


def _int(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value) if value is not None else default


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class PlannedImage:
    """An image of a Bake file as its last published build built it: the plan of the
    branch's next fan-out batch (one build per image, after the images it is built on)."""

    image: str
    built_on: tuple[str, ...] = ()

    def to_item(self) -> dict[str, Any]:
        return {"image": self.image, "built_on": list(self.built_on)}

    @classmethod
    def from_item(cls, item: Any) -> PlannedImage | None:
        """The planned image an item holds, or None for anything malformed."""
        if not isinstance(item, Mapping) or not isinstance(item.get("image"), str):
            return None
        built_on = item.get("built_on") or ()
        if not isinstance(built_on, list | tuple) or not all(isinstance(b, str) for b in built_on):
            return None
        return cls(image=item["image"], built_on=tuple(built_on))


@dataclass(frozen=True)
class BranchHead:
    """Where one image's branch is, as far as the requests seen so far tell.

    `sequence` counts the branch's forward moves; a request is placed in that order when
    it is accepted (`ENV_SEQUENCE`). `older` holds commits known to precede `commit`.
    The `published_*` fields say which build the moving tags point at: they only move to
    a build whose (sequence, requested_at) is greater, so an older build never wins.
    """

    image: str
    branch: str
    commit: str | None = None
    sequence: int = 0
    pushed_at: str | None = None
    older: tuple[str, ...] = ()
    version: int = 0
    published_sequence: int | None = None
    published_requested_at: str | None = None
    published_commit: str | None = None
    published_digest: str | None = None
    published_tags: tuple[str, ...] = ()
    # With a Bake file: each image repository's name -> the digest its moving tags name.
    published_images: Mapping[str, str] = field(default_factory=dict)
    # With a Bake file: the images of the published build and what each is built on.
    bake_plan: tuple[PlannedImage, ...] = ()

    @property
    def pk(self) -> str:
        return head_pk(self.image, self.branch)

    def knows_older(self, commit: str) -> bool:
        return commit in self.older

    def advanced_to(self, commit: str, before: str | None, pushed_at: str | None) -> BranchHead:
        """This head moved forward to `commit` (the previous head and `before` are older)."""
        remembered = [c for c in (self.commit, before) if c and c != commit and set(c) != {"0"}]
        known = [c for c in (*remembered, *self.older) if c != commit]
        older = tuple(dict.fromkeys(known))[:HEAD_MEMORY]
        return replace(
            self,
            commit=commit,
            sequence=self.sequence + 1,
            pushed_at=pushed_at or self.pushed_at,
            older=older,
        )

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": self.pk,
            "image": self.image,
            "branch": self.branch,
            "sequence": self.sequence,
            "older": list(self.older),
            "version": self.version,
        }
        if self.commit:
            item["head_commit"] = self.commit
        if self.pushed_at:
            item["pushed_at"] = self.pushed_at
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> BranchHead:
        published = item.get("published_sequence")
        return cls(
            image=str(item["image"]),
            branch=str(item["branch"]),
            commit=_text(item, "head_commit"),
            sequence=_int(item, "sequence"),
            pushed_at=_text(item, "pushed_at"),
            older=tuple(item.get("older") or ()),
            version=_int(item, "version"),
            published_sequence=int(published) if published is not None else None,
            published_requested_at=_text(item, "published_requested_at"),
            published_commit=_text(item, "published_commit"),
            published_digest=_text(item, "published_digest"),
            published_tags=tuple(item.get("published_tags") or ()),
            published_images={
                str(name): str(digest)
                for name, digest in (item.get("published_images") or {}).items()
            },
            bake_plan=tuple(
                planned
                for planned in map(PlannedImage.from_item, item.get("bake_plan") or ())
                if planned is not None
            ),
        )


@dataclass(frozen=True)
class Claim:
    """The claim on one build request: who may start its build, and what it started.

    `attempt` counts builds of the request (a failed build's Redeliver is attempt 2) and
    names the StartBuild idempotency token, so a retry of one attempt is the same call.
    `lease_until` bounds how long an invocation that died after claiming blocks a retry.
    """

    pk: str
    request_id: str
    attempt: int
    sequence: int
    lease_until: datetime
    version: int = 1
    build_id: str | None = None
    superseded_by: str | None = None
    delivery_ids: tuple[str, ...] = ()

    def leased(self, now: datetime) -> bool:
        return self.build_id is None and now < self.lease_until

    def to_item(self, now: datetime) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": self.pk,
            "request_id": self.request_id,
            "attempt": self.attempt,
            "claim_sequence": self.sequence,
            "lease_until": timestamp(self.lease_until),
            "version": self.version,
            "expires_at": _epoch(now + CLAIM_RETENTION),
        }
        if self.build_id:
            item["build_id"] = self.build_id
        if self.superseded_by:
            item["superseded_by"] = self.superseded_by
        if self.delivery_ids:
            item["delivery_ids"] = list(self.delivery_ids)
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Claim:
        return cls(
            pk=str(item["pk"]),
            request_id=str(item.get("request_id", "")),
            attempt=_int(item, "attempt", 1),
            sequence=_int(item, "claim_sequence"),
            lease_until=parse_timestamp(str(item.get("lease_until", "1970-01-01T00:00:00Z"))),
            version=_int(item, "version", 1),
            build_id=_text(item, "build_id"),
            superseded_by=_text(item, "superseded_by"),
            delivery_ids=tuple(item.get("delivery_ids") or ()),
        )


@dataclass(frozen=True)
class BuildStart:
    """What the starter knows of a build it started: the item's identity attributes."""

    build_id: str
    build_arn: str
    build_number: int
    image: str
    branch: str
    commit: str | None
    trigger: Trigger
    mode: BuildMode
    requested_at: datetime
    source_version: str
    claim_pk: str
    sequence: int
    status: str = BuildStatus.IN_PROGRESS.value
    batch: bool = False  # a batch build (FanOut): `build_id` is the batch's id

    def identity(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "build_id": self.build_id,
            "build_arn": self.build_arn,
            "build_number": self.build_number,
            "image": self.image,
            "branch": self.branch,
            "branch_key": branch_key(self.image, self.branch),
            "trigger": self.trigger.value,
            "mode": self.mode.value,
            "requested_at": timestamp(self.requested_at),
            "day": day_of(self.requested_at),
            "claim_pk": self.claim_pk,
            "sequence": self.sequence,
        }
        if self.commit:  # absent, not empty: `commit` is the ByCommit index key
            fields["commit"] = self.commit
        if self.batch:
            fields["kind"] = BATCH_KIND
        return fields


@dataclass(frozen=True)
class BuildSummary:
    """A build item as the starter reads it back to decide what to supersede."""

    build_id: str
    commit: str | None
    sequence: int | None
    status: BuildStatus
    claim_pk: str | None
    batch: bool = False

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> BuildSummary:
        sequence = item.get("sequence")
        status = _text(item, "status") or BuildStatus.IN_PROGRESS.value
        return cls(
            build_id=str(item.get("build_id", "")),
            commit=_text(item, "commit"),
            sequence=int(sequence) if sequence is not None else None,
            status=BuildStatus(status) if status in set(BuildStatus) else BuildStatus.IN_PROGRESS,
            claim_pk=_text(item, "claim_pk"),
            batch=item.get("kind") == BATCH_KIND,
        )


# ---------------------------------------------------------------- the adapter
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_attribute_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def from_attribute_values(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class WriteResult:
    """`applied` is False when the condition refused the write; `item` is then the old one."""

    applied: bool
    item: dict[str, Any] = field(default_factory=dict)


class BuildsTable:
    """Typed, conditional access to BuildsTable; every caller goes through this."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    # ------------------------------------------------------------ primitives
    def get(self, pk: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table_name, Key={"pk": {"S": pk}}, ConsistentRead=True
        ).get("Item")
        return from_attribute_values(item) if item is not None else None

    def put_if(
        self,
        item: Mapping[str, Any],
        condition: str,
        values: Mapping[str, Any] | None = None,
    ) -> bool:
        """Put `item` if `condition` holds; False (not an error) when it does not."""
        arguments: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": to_attribute_values(item),
            "ConditionExpression": condition,
        }
        if values:
            arguments["ExpressionAttributeValues"] = to_attribute_values(values)
        try:
            self.client.put_item(**arguments)
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def update(
        self,
        pk: str,
        expression: str,
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        condition: str | None = None,
    ) -> WriteResult:
        """One UpdateItem; the new item when applied, the old one when refused."""
        arguments: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if names:
            arguments["ExpressionAttributeNames"] = dict(names)
        if values:
            arguments["ExpressionAttributeValues"] = to_attribute_values(values)
        if condition:
            arguments["ConditionExpression"] = condition
            arguments["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            response = self.client.update_item(**arguments)
        except ClientError as error:
            if is_conditional_failure(error):
                old: Mapping[str, Any] = error.response.get("Item") or {}  # type: ignore[assignment]
                return WriteResult(False, from_attribute_values(old))
            raise
        return WriteResult(True, from_attribute_values(response.get("Attributes", {})))

    def set_fields(
        self,
        pk: str,
        fields: Mapping[str, Any],
        *,
        if_not_exists: Sequence[str] = (),
        condition: str | None = None,
        condition_values: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """SET each of `fields` (those named in `if_not_exists` only where still absent)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = dict(condition_values or {})
        clauses = []
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            values[f":f{index}"] = value
            if name in if_not_exists:
                clauses.append(f"#f{index} = if_not_exists(#f{index}, :f{index})")
            else:
                clauses.append(f"#f{index} = :f{index}")
        return self.update(
            pk, "SET " + ", ".join(clauses), names=names, values=values, condition=condition
        )

    def query_index(
        self,
        index: str,
        key_name: str,
        key_value: str,
        *,
        limit: int | None,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        """Items of one index key, newest first; at most `limit`, or every page (None)."""
        arguments: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": "#key = :key",
            "ExpressionAttributeNames": {"#key": key_name},
            "ExpressionAttributeValues": {":key": {"S": key_value}},
            "ScanIndexForward": not newest_first,
        }
        if limit is not None:
            arguments["Limit"] = limit
        items: list[dict[str, Any]] = []
        while True:
            response = self.client.query(**arguments)
            items.extend(from_attribute_values(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if limit is not None or not last:
                return items
            arguments["ExclusiveStartKey"] = last

    # ------------------------------------------------------------ branch heads
    def branch_head(self, image: str, branch: str) -> BranchHead | None:
        item = self.get(head_pk(image, branch))
        if item is None or "image" not in item:
            return None
        return BranchHead.from_item(item)

    def save_branch_head(self, head: BranchHead) -> bool:
        """Write `head` if nobody moved the branch since it was read (its `version`)."""
        fields = head.to_item()
        fields.pop("pk")
        fields["version"] = head.version + 1
        condition = (
            "attribute_not_exists(version)" if head.version == 0 else "version = :read_version"
        )
        result = self.set_fields(
            head.pk,
            fields,
            condition=condition,
            condition_values={":read_version": head.version} if head.version else None,
        )
        return result.applied

    def publish(
        self,
        image: str,
        branch: str,
        *,
        sequence: int,
        requested_at: str,
        commit: str,
        digest: str,
        tags: Sequence[str],
        images: Mapping[str, str] | None = None,
        plan: Sequence[PlannedImage] = (),
    ) -> WriteResult:
        """Point the branch's moving tags at this build, only if no newer build holds them.

        Newer means a greater (sequence, requested_at); a commit the head knows to be
        older never publishes. The same build again is allowed (a retried publication).
        `images`: a Bake file's build names one digest per image repository (and
        `digest` is empty); all of them move in this one write, and `plan` (what each
        image is built on) becomes the branch's plan for its next fan-out batch.
        """
        return self.update(
            head_pk(image, branch),
            "SET image = if_not_exists(image, :image), branch = if_not_exists(branch, :branch),"
            " published_sequence = :sequence, published_requested_at = :requested_at,"
            " published_commit = :commit, published_digest = :digest, published_tags = :tags,"
            " published_images = :images, bake_plan = :plan",
            values={
                ":image": image,
                ":branch": branch,
                ":sequence": sequence,
                ":requested_at": requested_at,
                ":commit": commit,
                ":digest": digest,
                ":tags": list(tags),
                ":images": dict(images or {}),
                ":plan": [planned.to_item() for planned in plan],
            },
            condition=(
                "(attribute_not_exists(older) OR NOT contains(older, :commit)) AND"
                " (attribute_not_exists(published_sequence) OR published_sequence < :sequence"
                " OR (published_sequence = :sequence"
                " AND published_requested_at <= :requested_at))"
            ),
        )

    # ------------------------------------------------------------ image repositories
    def add_image_repositories(self, image: str, repositories: Sequence[str]) -> None:
        """Remember the repositories a Bake file's build published to (a set: idempotent)."""
        if not repositories:
            return
        self.update(
            repositories_pk(image),
            "SET image = if_not_exists(image, :image) ADD repositories :names",
            values={":image": image, ":names": set(repositories)},
        )

    def image_repositories(self, image: str) -> list[str]:
        """The repositories `add_image_repositories` remembered for `image`, sorted."""
        item = self.get(repositories_pk(image)) or {}
        return sorted(str(name) for name in item.get("repositories") or ())

    # ------------------------------------------------------------ claims
    def claim(self, pk: str) -> Claim | None:
        item = self.get(pk)
        return Claim.from_item(item) if item is not None else None

    def create_claim(self, claim: Claim, now: datetime) -> bool:
        return self.put_if(claim.to_item(now), "attribute_not_exists(pk)")

    def replace_claim(self, previous: Claim, claim: Claim, now: datetime) -> bool:
        """Write `claim` over `previous` if nobody changed it since it was read."""
        return self.put_if(claim.to_item(now), "version = :version", {":version": previous.version})

    def mark_claim_superseded(self, pk: str, by_build: str) -> None:
        self.update(
            pk,
            "SET superseded_by = :by",
            values={":by": by_build},
            condition="attribute_exists(pk)",
        )

    # ------------------------------------------------------------ builds
    def record_build_start(self, start: BuildStart) -> None:
        """Write the build's identity. Upsert: the recorder may have written the item first.

        The recorder's status and the commit CodeBuild resolved win over the starter's.
        """
        fields = start.identity()
        fields["source_version"] = start.source_version
        fields["status"] = start.status
        self.set_fields(
            build_pk(start.build_id), fields, if_not_exists=("source_version", "status")
        )

    def recent_builds_of_branch(self, image: str, branch: str, limit: int) -> list[BuildSummary]:
        """The branch's newest build items, newest first (eventually consistent)."""
        items = self.query_index(
            INDEX_BY_BRANCH, "branch_key", branch_key(image, branch), limit=limit
        )
        return [BuildSummary.from_item(item) for item in items if "build_id" in item]
