"""Several images from one repository: the targets of a Bake file, each with its own cache.

The build driver (build_driver.py) hands over to this module when LAYERCACHE_BAKE_FILE
names a Bake file (``docker-bake.hcl``, ``docker-bake.json`` or a compose file; several,
comma-separated, are merged as ``docker buildx bake -f`` merges them). Standard library
only, like the driver.

What one run does:

1. ``docker buildx bake --print <targets>`` resolves the file: the images to publish are
   the targets the request names (LAYERCACHE_BAKE_TARGETS, groups expanded; the file's
   ``default`` group when empty), each with the targets it is built on
   (``contexts = { base = "target:base" }``);
2. every image gets its own repository, ``<LAYERCACHE_IMAGE_REPOSITORY_URI>/<target>``,
   its own build tags written once, its own moving tags (for the recorder) and its own
   cache refs ``cache-<branch>`` with the default branch's as fallback, all in that
   repository: images never share or overwrite each other's cache;
3. the images build one after the other on one BuildKit, each image after the images
   it is built on (`build_order`). An image is published only after the images it is
   built on were; a dependent rebuilds on the new base in the same build, reading it
   from the builder's local cache. The driver's failure policy
   (build_driver.build_with_policy) applies to each image; an image that fails fails
   the build, and no later image starts;
4. the report: one result per image (digest, tags, cache hit ratio, cached and total
   steps, seconds), exported as the JSON list LAYERCACHE_IMAGES, and the build's
   totals in the driver's usual variables.

No path-to-image mapping is kept: every push builds every image, and an image whose
inputs did not change is a cache hit that moves no layer.

Why one image at a time, when bake could build them side by side: BuildKit loses cache
hits when concurrent builds share steps (a base image, or identical first steps) and
each reads its own registry cache; one of them rebuilds steps its cache holds
(moby/buildkit#4674, docker/buildx#414 and #3878, open; seen here on every rebuild
of the sample monorepo). Built one at a time, every image finds all its steps. Builds
that outgrow one host spread over several (FanOut), not over one BuildKit.

An image counts its own steps: a dependent solves its base again (from the builder's
local cache), so the steps of the images it is built on are left out of its count.
They come back under other vertex digests (the base's context is named differently
there), so they are recognised by their shape (`vertex_shapes`: the name without the
target, and the shapes of the inputs), or by their digest where it is the same (a step
that reads no build context). Only a base's steps are left out: two images that happen
to have a step of the same shape (the same instruction on the same base image, each
from its own context) both count it. A dependent's own step of the very shape of one
of its base's steps (the same instruction over the same steps, from its own context)
would be counted as the base's; the vertex names BuildKit reports tell no more.

An image reads its own cache refs first, then those of the images it is built on
(`BakeImage.cache_from_refs`): where a base was built on another host (a fan-out), its
new steps are in its own repository's cache, not in the dependent's nor in the
builder. On one host this costs a manifest read per base and finds nothing the builder
does not hold.

Fan-out (a CodeBuild batch build, one build per image group, `depend-on` following the
Bake file's dependencies): a build of the batch builds only its share (`FanOut`, read
from LAYERCACHE_FANOUT_IMAGES, LAYERCACHE_FANOUT_PLANNED, LAYERCACHE_FANOUT_NEWCOMERS;
`fanout_share`), in build order; the build marked for newcomers also builds every image
the file declares beyond the plan (every image, when nothing was planned); an image of
the share the file no longer declares is skipped with a log line, and a build left with
no image succeeds with LAYERCACHE_IMAGES ``[]``. Its bases were built, and their caches
exported, by the builds it depends on, so its cache refs find their steps. To count
its images' steps as one host counts them, it then solves each base it does not build
itself from the base's cache with no output (`learn_steps`: `type=cacheonly`, no step
runs and no layer moves, a fraction of a second here; after its images, never before),
and leaves those steps out.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import build_driver as driver

# An ECR repository name component: what a target name must become to name a repository.
REPOSITORY_COMPONENT = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# A vertex as bake names it: "[api] exporting to image", "[api stage-1 2/4] RUN ...",
# "[api internal] load build context".
TARGET_VERTEX = re.compile(
    r"^\[(?P<target>[^\]\s]+)(?: (?P<rest>[^\]]*))?\] (?P<text>.*)$", re.DOTALL
)
# The bracket a vertex's name starts with: "[api stage-1 2/4] ", "[internal] ".
BRACKETS = re.compile(r"^\[[^\]]*\] ")
CACHE_EXPORT_MODE = driver.CACHE_EXPORT_OPTIONS
#: How many registries lookups (write-once tag checks) run at once.
TAG_CHECK_THREADS = 4  # images at once; each looks its build tags up side by side


class BakeDefinitionError(driver.BuildFailed):
    """The Bake file cannot be built as layercache builds it (read it, or name its images)."""


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class BakeImage:
    """One image the build publishes: a target of the Bake file."""

    target: str
    request: driver.BuildRequest  # its repository, cache refs, tags; the build's branch
    built_on: tuple[str, ...] = ()  # the published images it is built on
    depth: int = 0  # 0: built on no published image; else 1 + the deepest of built_on
    base_cache_refs: tuple[str, ...] = ()  # the cache refs of the images it is built on

    def cache_from_refs(self) -> list[str]:
        """The cache refs it reads: its branch's and its default branch's, then each base's
        branch and default-branch refs, in the order of `built_on`, each ref once.

        On a host of its own (a fan-out) a dependent's builder holds nothing, and its
        base's new steps were exported to the base's repository only; its own cache holds
        at most the base's older steps (mode=max keeps every step of a build, the base's
        included, so the nearest published base's cache holds the steps below it too)."""
        return merged_refs(self.request.cache_from_refs(), self.base_cache_refs)


def merged_refs(*groups: Iterable[str]) -> list[str]:
    """The refs of every group, in order, each once."""
    refs: list[str] = []
    for group in groups:
        refs += [ref for ref in group if ref not in refs]
    return refs


def repository_component(target: str) -> str:
    """The target's name as an ECR repository name component: `API_v2` -> `api_v2`."""
    name = target.lower()
    if not REPOSITORY_COMPONENT.fullmatch(name):
        raise BakeDefinitionError(
            f"the Bake target {target!r} cannot name an ECR repository (lowercase letters, "
            "digits and single . _ - between them): rename the target"
        )
    return name


def requested_targets(definition: Mapping[str, Any]) -> list[str]:
    """The targets `bake --print <names>` resolved the request to, groups expanded, in order."""
    names: list[str] = []
    for group in (definition.get("group") or {}).values():
        for name in group.get("targets") or ():
            if name not in names:
                names.append(str(name))
    if not names:
        names = [str(name) for name in definition.get("target") or {}]
    return names


def target_dependencies(definition: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each target of the printed definition -> the targets its `target:` contexts name."""
    targets: Mapping[str, Any] = definition.get("target") or {}
    return {
        name: [
            str(value).removeprefix("target:")
            for value in (spec.get("contexts") or {}).values()
            if str(value).startswith("target:")
        ]
        for name, spec in targets.items()
    }


def check_acyclic(dependencies: Mapping[str, Sequence[str]]) -> None:
    """Refuse targets that are built on each other (bake refuses them too, less clearly)."""
    done: set[str] = set()

    def visit(target: str, path: tuple[str, ...]) -> None:
        if target in done:
            return
        for dependency in dependencies.get(target, ()):
            if dependency in path:
                cycle = " -> ".join((*path[path.index(dependency) :], dependency))
                raise BakeDefinitionError(f"the Bake targets {cycle} depend on each other")
            visit(dependency, (*path, dependency))
        done.add(target)

    for target in dependencies:
        visit(target, (target,))


def plan_images(definition: Mapping[str, Any], base: driver.BuildRequest) -> list[BakeImage]:
    """The images to publish, each in its own repository under `base.repository`, in the
    order they build (`build_order`).

    An image's `built_on` are the published images it reaches through `target:` contexts,
    directly or through targets that are not published themselves (those are built
    inside each image that needs them).
    """
    published = requested_targets(definition)
    dependencies = target_dependencies(definition)
    components: dict[str, str] = {}
    for target in published:
        component = repository_component(target)
        if component in components:
            raise BakeDefinitionError(
                f"the Bake targets {components[component]!r} and {target!r} would share the "
                f"repository {base.repository}/{component}: rename one"
            )
        components[component] = target

    check_acyclic(dependencies)

    def published_bases(target: str) -> set[str]:
        found: set[str] = set()
        for dependency in dependencies.get(target, []):
            found |= {dependency} if dependency in published else published_bases(dependency)
        return found

    bases = {target: published_bases(target) for target in published}
    depths: dict[str, int] = {}

    def depth_of(target: str) -> int:
        if target not in depths:
            depths[target] = 1 + max((depth_of(name) for name in bases[target]), default=-1)
        return depths[target]

    cache_prefix = base.cache_repository.rstrip("/")
    requests = {
        target: replace(
            base,
            repository=f"{base.repository}/{repository_component(target)}",
            cache_repository=(
                f"{cache_prefix}/{repository_component(target)}" if cache_prefix else ""
            ),
        )
        for target in published
    }
    images = []
    for target in published:
        built_on = tuple(name for name in published if name in bases[target])
        images.append(
            BakeImage(
                target=target,
                request=requests[target],
                built_on=built_on,
                depth=depth_of(target),
                base_cache_refs=tuple(
                    merged_refs(*(requests[name].cache_from_refs() for name in built_on))
                ),
            )
        )
    return build_order(images)


def build_order(images: Iterable[BakeImage]) -> list[BakeImage]:
    """Every image after the images it is built on; else in the order the file gives."""
    return sorted(images, key=lambda image: image.depth)


# ---------------------------------------------------------------- fan-out: one build of a batch


@dataclass(frozen=True)
class FanOut:
    """What one build of a fan-out batch builds (the starter sets LAYERCACHE_FANOUT_*)."""

    share: tuple[str, ...]  # the Bake targets this build builds (LAYERCACHE_FANOUT_IMAGES)
    planned: tuple[str, ...]  # every image the batch was planned with (..._PLANNED)
    newcomers: bool  # also every image the file declares beyond the plan (..._NEWCOMERS)

    @classmethod
    def from_values(cls, share: str, planned: str, newcomers: str) -> FanOut | None:
        """The variables' values read; None when this is no build of a batch (no share
        and not the newcomers' build): it builds every image, as a single build does."""
        flag = newcomers.strip().lower()
        if flag not in ("", "true", "false"):
            raise driver.BuildFailed(
                f"LAYERCACHE_FANOUT_NEWCOMERS is {newcomers!r}: it is true, false or unset"
            )
        names = tuple(csv_names(share))
        if not names and flag != "true":
            return None
        return cls(names, tuple(csv_names(planned)), flag == "true")


def fanout_share(
    images: Sequence[BakeImage], share: Collection[str], planned: Collection[str], newcomers: bool
) -> list[BakeImage]:
    """The images one build of a batch builds, in build order: those of its `share` that
    the file still declares and, on the newcomers' build, every image the file declares
    that is not `planned` (every image when nothing was planned: the first batch).

    Over the builds of a batch whose shares split `planned` and one newcomers' build,
    every image the file declares is built exactly once."""
    return [
        image
        for image in images
        if image.target in share or (newcomers and image.target not in planned)
    ]


def fanout_skipped(images: Sequence[BakeImage], share: Iterable[str]) -> list[str]:
    """The images of a share that the file no longer declares (or the request no longer
    names): skipped with a log line, not an error."""
    declared = {image.target for image in images}
    return [name for name in share if name not in declared]


def bases_built_elsewhere(
    images: Sequence[BakeImage], built: Sequence[BakeImage]
) -> list[BakeImage]:
    """The images that those `built` here are built on and that are not built here (another
    build of the batch built them), in build order."""
    here = {image.target for image in built}
    needed = {name for image in built for name in image.built_on} - here
    return [image for image in images if image.target in needed]


# ---------------------------------------------------------------- bake's command line


def csv_names(text: str) -> list[str]:
    """The names of a comma-separated list, blanks left out."""
    return [name.strip() for name in text.split(",") if name.strip()]


def bake_files(text: str) -> list[str]:
    return csv_names(text)


def read_definition(
    docker: str, files: Sequence[str], targets: Sequence[str], *, cwd: Path | None = None
) -> dict[str, Any]:
    """`docker buildx bake --print`: the Bake file resolved for these targets."""
    args = [docker, "buildx", "bake", "--print"]
    for name in files:
        args += ["--file", name]
    printed = subprocess.run(
        [*args, *targets], capture_output=True, text=True, check=False, cwd=cwd
    )
    if printed.returncode != 0:
        driver.check_buildx(docker)  # a missing or too old buildx, said as such
        detail = (printed.stderr or printed.stdout).strip()[-800:]
        raise BakeDefinitionError(f"docker buildx bake could not read {', '.join(files)}: {detail}")
    try:
        definition: dict[str, Any] = json.loads(printed.stdout)
    except json.JSONDecodeError as error:
        raise BakeDefinitionError(f"docker buildx bake --print wrote no JSON: {error}") from None
    if not definition.get("target"):
        raise BakeDefinitionError(
            f"{', '.join(files)} declares no target for {' '.join(targets) or 'default'}"
        )
    return definition


def target_override(
    image: BakeImage, *, use_cache: bool, export_cache: bool, no_cache: bool
) -> dict[str, Any]:
    """What layercache sets on one target, over whatever the Bake file says: where the
    image goes (its build tags, or by digest), its cache refs, and the build mode."""
    request = image.request
    pushed = request.pushed_tags()
    override: dict[str, Any] = {
        "tags": [f"{request.repository}:{tag}" for tag in pushed],
        "output": [
            "type=image,push=true"
            if pushed
            else f"type=image,name={request.repository},push-by-digest=true,push=true"
        ],
        "cache-from": (
            [f"type=registry,ref={ref}" for ref in image.cache_from_refs()] if use_cache else []
        ),
        "cache-to": (
            [f"type=registry,ref={request.cache_ref(request.branch)},{CACHE_EXPORT_MODE}"]
            if export_cache
            else []
        ),
    }
    args = dict(arg.split("=", 1) for arg in request.build_args if "=" in arg)
    if request.mode == "refresh":
        args[driver.REFRESH_ARG] = request.refresh_value()
        override["pull"] = True
    if args:
        override["args"] = args
    if no_cache:
        override["no-cache"] = True
    if request.secrets:
        override["secret"] = [secret.argument() for secret in request.secrets]
    if request.platform:
        # Bake's attribute is `platforms`; buildx ignores a key it does not know.
        override["platforms"] = [request.platform]
    return override


def bake_command(
    files: Sequence[str],
    override_file: Path,
    targets: Sequence[str],
    *,
    builder: str,
    metadata_file: Path,
) -> list[str]:
    """The `docker buildx bake` arguments (without the docker binary) for one attempt."""
    args = ["buildx", "bake", "--progress=rawjson", "--metadata-file", str(metadata_file)]
    if builder:
        args += ["--builder", builder]
    for name in files:
        args += ["--file", name]
    args += ["--file", str(override_file)]
    return [*args, *targets]


# ---------------------------------------------------------------- one stream, many images


def target_of(vertex: driver.Vertex, targets: Collection[str]) -> tuple[str, str]:
    """(the target bake named the vertex after or "", its name without the target)."""
    match = TARGET_VERTEX.match(vertex.name)
    if not match or match.group("target") not in targets:
        return "", vertex.name
    rest, text = match.group("rest"), match.group("text")
    return match.group("target"), f"[{rest}] {text}" if rest else text


def vertex_shapes(vertices: Sequence[driver.Vertex], targets: Collection[str]) -> dict[str, str]:
    """Each vertex's shape: a digest of its name without the target and of its inputs'
    shapes. The same step built again from another solve (another vertex digest) has the
    same shape; a step of another Dockerfile that merely reads the same has other inputs.

    A source (a vertex without inputs: `FROM <image>@<digest>`, `load build context`) is
    shaped by its text alone: when a base and an image built on it start from the same
    image, that is one vertex of the solve, reported under either's name and stage."""
    by_digest = {vertex.digest: vertex for vertex in vertices}
    shapes: dict[str, str] = {}

    def shape(digest: str, path: frozenset[str]) -> str:
        if digest in shapes:
            return shapes[digest]
        vertex = by_digest.get(digest)
        if vertex is None or digest in path:  # not reported (or a cycle): its own digest
            return digest
        name = target_of(vertex, targets)[1]
        parts = [name if vertex.inputs else BRACKETS.sub("", name)]
        parts += sorted(shape(name, path | {digest}) for name in vertex.inputs)
        shapes[digest] = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        return shapes[digest]

    for vertex in vertices:
        shape(vertex.digest, frozenset())
    return shapes


def own_vertices(
    vertices: Sequence[driver.Vertex], targets: Collection[str], bases: set[str]
) -> list[driver.Vertex]:
    """One image's vertices, named as `docker buildx build` names them, without the steps
    of the images it is built on; adds this image's steps to `bases`.

    `bases`: the steps (shapes and vertex digests) of the images it is built on, as their
    own solves reported them; `targets`: every target of the Bake file. A step is its
    base's if its shape is one of theirs, or its digest (an op that reads no build
    context has the same digest in every solve: a step a base and its image share)."""
    shapes = vertex_shapes(vertices, targets)
    named = [replace(vertex, name=target_of(vertex, targets)[1]) for vertex in vertices]
    own = [
        vertex
        for vertex in named
        if not (
            vertex.is_step
            and (shapes.get(vertex.digest, vertex.digest) in bases or vertex.digest in bases)
        )
    ]
    for vertex in named:
        if vertex.is_step:
            bases.update((shapes.get(vertex.digest, vertex.digest), vertex.digest))
    return own


# ---------------------------------------------------------------- the build


@dataclass(frozen=True)
class ImageResult:
    """What one image's build did, as the recorder reads it from LAYERCACHE_IMAGES."""

    image: BakeImage
    digest: str
    summary: driver.ProgressSummary
    cache_status: str
    seconds: float = 0.0  # its whole build as the driver timed it (every attempt)

    def as_json(self) -> dict[str, Any]:
        request, summary = self.image.request, self.summary
        return {
            "image": self.image.target,
            "repository": request.repository,
            "digest": self.digest,
            "tags": request.pushed_tags(),
            "moving_tags": request.moving_tags(),
            "built_on": list(self.image.built_on),
            "cache_hit_ratio": round(summary.hit_ratio, 3),
            "cached_steps": summary.cached_steps,
            "total_steps": len(summary.steps),
            "cache_ref_hit": summary.cache_ref_hit,
            "build_seconds": round(summary.build_seconds, 1),
            "push_seconds": round(summary.push_seconds, 1),
            "cache_export_seconds": round(summary.cache_export_seconds, 1),
            "cache_status": self.cache_status,
        }


@dataclass
class BakeReport:
    """Every image's result, and the build's totals in the driver's variables."""

    results: list[ImageResult]
    seconds: float
    warnings: list[str]
    moving_tags: list[str]
    fanout: FanOut | None = None  # a build of a batch: its share
    skipped: list[str] = field(default_factory=list)  # of the share, no longer declared
    platform: str = ""  # one platform of several (a batch's platform build), or empty

    def variables(self) -> dict[str, str]:
        cached = sum(result.summary.cached_steps for result in self.results)
        total = sum(len(result.summary.steps) for result in self.results)
        statuses = {result.cache_status for result in self.results}
        status = next(
            (name for name in ("fallback", "export-failed", "clean") if name in statuses),
            "warm" if cached else "cold",
        )
        hits = [result.summary.cache_ref_hit for result in self.results]
        values = {
            "LAYERCACHE_IMAGE_DIGEST": "",
            "LAYERCACHE_IMAGE_TAGS": "",
            "LAYERCACHE_MOVING_TAGS": ",".join(self.moving_tags),
            "LAYERCACHE_CACHE_HIT_RATIO": f"{cached / total if total else 0.0:.3f}",
            "LAYERCACHE_CACHE_REF_HIT": next((hit for hit in hits if hit != "none"), "none"),
            "LAYERCACHE_BUILD_SECONDS": f"{self.seconds:.1f}",
            "LAYERCACHE_PUSH_SECONDS": f"{sum(r.summary.push_seconds for r in self.results):.1f}",
            "LAYERCACHE_CACHE_EXPORT_SECONDS": (
                f"{sum(r.summary.cache_export_seconds for r in self.results):.1f}"
            ),
            "LAYERCACHE_CACHED_STEPS": str(cached),
            "LAYERCACHE_TOTAL_STEPS": str(total),
            "LAYERCACHE_CACHE_STATUS": status,
            "LAYERCACHE_IMAGES": json.dumps(
                [result.as_json() for result in self.results], separators=(",", ":")
            ),
            "LAYERCACHE_PLATFORMS": self.platform,
        }
        assert tuple(values) == driver.EXPORTED_VARIABLES
        return values

    def as_json(self) -> dict[str, Any]:
        """The detailed report (every image's steps) for tests and the benchmark."""
        return {
            "variables": self.variables(),
            "warnings": self.warnings,
            "fanout": None
            if self.fanout is None
            else {
                "images": list(self.fanout.share),
                "planned": list(self.fanout.planned),
                "newcomers": self.fanout.newcomers,
                "built": [result.image.target for result in self.results],
                "skipped": self.skipped,
            },
            "images": {
                result.image.target: {
                    **result.as_json(),
                    "wall_seconds": round(result.seconds, 3),
                    "imported_refs": result.summary.imported_refs,
                    "steps": [
                        {"name": step.name, "cached": step.cached} for step in result.summary.steps
                    ],
                }
                for result in self.results
            },
        }


def with_write_once_tags(docker: str, images: Sequence[BakeImage]) -> list[BakeImage]:
    """Each image with the build tags no earlier build of the commit wrote (side by side)."""
    with ThreadPoolExecutor(max_workers=TAG_CHECK_THREADS) as pool:
        requests = list(pool.map(lambda image: driver.tags_to_write(docker, image.request), images))
    return [
        replace(image, request=request) for image, request in zip(images, requests, strict=True)
    ]


@dataclass(frozen=True)
class BuiltImage:
    """One image built and pushed, before its steps are counted (`counted`)."""

    image: BakeImage
    digest: str
    policy: driver.PolicyResult  # the attempt that named it, the one whose steps built it
    seconds: float  # its whole build as the driver timed it (every attempt)


def build_image(
    image: BakeImage,
    run: Callable[[BakeImage, bool, bool, bool], driver.Attempt],
    *,
    known: Collection[str],
    warnings: list[str],
) -> BuiltImage:
    """Build one image with bake, under the driver's failure policy.

    `known`: every target of the Bake file."""
    started = time.monotonic()
    request = image.request

    def attempt(use_cache: bool, export_cache: bool, no_cache: bool) -> driver.Attempt:
        raw = run(image, use_cache, export_cache, no_cache)
        named = [replace(vertex, name=target_of(vertex, known)[1]) for vertex in raw.vertices]
        return replace(raw, summary=driver.summarize(named, raw.summary.error_lines))

    result = driver.build_with_policy(
        driver.with_start_retry(attempt, warnings),
        cache_used=request.mode != "clean",
        no_cache=request.mode == "clean",
        cache_names=request.cache_ref(request.branch),
        warnings=warnings,
    )
    metadata = result.attempt.metadata.get(image.target) or {}
    digest = str(metadata.get("containerimage.digest", ""))
    if not digest:
        raise driver.BuildFailed(f"bake reported no image digest for the target {image.target}")
    return BuiltImage(image, digest, result, time.monotonic() - started)


def counted(built: BuiltImage, known: Collection[str], steps: set[str]) -> ImageResult:
    """The image's result, its own steps counted: `steps` are those of the images it is
    built on (`own_vertices`); its own are added to them here."""
    image, policy = built.image, built.policy
    summary = driver.summarize(own_vertices(policy.built.vertices, known, steps))
    summary = summary.in_asked_order(image.cache_from_refs())
    status = policy.cache_status or driver.cold_or_warm(image.request, summary)
    return ImageResult(image, built.digest, summary, status, built.seconds)


def learning_override(image: BakeImage) -> dict[str, Any]:
    """The override that solves `image` from its cache refs and outputs nothing: no image,
    no cache export (`type=cacheonly`); as its own build would, refresh date included."""
    override = target_override(image, use_cache=True, export_cache=False, no_cache=False)
    return {**override, "tags": [], "output": ["type=cacheonly"]}


def learn_steps(
    image: BakeImage,
    run: Callable[[str, Mapping[str, Any]], driver.Attempt],
    *,
    known: Collection[str],
    warnings: list[str],
) -> set[str]:
    """The steps (`own_vertices`) of `image`, a base another build of the batch built,
    learnt by solving it from its cache with no output, so that the images built on it
    here count their own steps only, as on one host.

    Its steps come from the cache its build exported: no step runs and no layer moves.
    It runs after the images built on it, so it cannot change what their builds read or
    export: solved before them on the same builder, it made their mode=max cache exports
    leave out their compile stage's layers every time on the rig's BuildKit (0.13), which
    BuildKit otherwise does only now and then (moby/buildkit#6893). If it cannot be
    solved, the images built on it count its steps as theirs (a warning says so, and no
    step is returned); the build goes on."""
    driver.info(f"learning the steps of {image.target} (built by another build) from its cache")
    attempt = run(image.target, learning_override(image))
    if not attempt.ok:
        warnings.append(
            f"could not solve {image.target} from its cache "
            f"({driver.failure_reason(attempt.summary, attempt.returncode)}): the images "
            f"built on it count its steps as their own"
        )
        driver.warn(warnings[-1])
        return set()
    solved = [vertex for vertex in attempt.vertices if vertex.is_step]
    driver.info(
        f"{image.target}: {len(solved)} step(s), "
        f"{sum(1 for step in solved if step.cached)} from its cache"
    )
    steps: set[str] = set()
    own_vertices(list(attempt.vertices), known, steps)
    return steps


def build(
    base: driver.BuildRequest,
    files: Sequence[str],
    targets: Sequence[str],
    *,
    docker: str = "docker",
    workdir: Path,
    fanout: FanOut | None = None,
) -> BakeReport:
    """Build and push every image of the Bake file, or of `fanout`'s share; raise
    BuildFailed if any fails."""
    started = time.monotonic()
    driver.check_moving_tags(base)
    definition = read_definition(docker, files, targets)
    declared = plan_images(definition, base)
    known = list(definition.get("target") or {})
    driver.info(
        "images: "
        + ", ".join(
            image.target + (f" (on {', '.join(image.built_on)})" if image.built_on else "")
            for image in declared
        )
    )
    images, skipped = declared, []
    if fanout is not None:
        images = fanout_share(declared, fanout.share, fanout.planned, fanout.newcomers)
        skipped = fanout_skipped(declared, fanout.share)
        log_share(images, fanout, skipped)
    if not images:
        return BakeReport(
            [], time.monotonic() - started, [], base.moving_tags(), fanout, skipped, base.platform
        )
    with ThreadPoolExecutor(max_workers=1) as pool:  # the builder and the tags side by side
        builder_ready = pool.submit(
            driver.ensure_builder, docker, base.builder, base.buildkit_image, base.buildkit_mirror
        )
        images = with_write_once_tags(docker, images)
    builder = builder_ready.result()
    metadata_file = workdir / "bake-metadata.json"
    override_file = workdir / "layercache-override.json"

    def run_target(target: str, override: Mapping[str, Any]) -> driver.Attempt:
        override_file.write_text(json.dumps({"target": {target: override}}, indent=2))
        args = bake_command(
            files, override_file, [target], builder=builder, metadata_file=metadata_file
        )
        return driver.run_attempt(docker, args, metadata_file)

    def run(
        image: BakeImage, use_cache: bool, export_cache: bool, no_cache: bool
    ) -> driver.Attempt:
        override = target_override(
            image, use_cache=use_cache, export_cache=export_cache, no_cache=no_cache
        )
        return run_target(image.target, override)

    warnings: list[str] = []
    built: list[BuiltImage] = []
    for number, image in enumerate(images, start=1):
        driver.info(f"image {number}/{len(images)}: {image.target} -> {image.request.repository}")
        built.append(build_image(image, run, known=known, warnings=warnings))
    # Only now, once every image and its cache are out: see learn_steps.
    steps_of = {  # each image's steps, its bases' included
        elsewhere.target: learn_steps(elsewhere, run_target, known=known, warnings=warnings)
        for elsewhere in bases_built_elsewhere(declared, images)
    }
    results: list[ImageResult] = []
    for done in built:
        steps = set().union(*(steps_of.get(name, set()) for name in done.image.built_on))
        results.append(counted(done, known, steps))
        steps_of[done.image.target] = steps
        steps_of[image.target] = steps
    return BakeReport(
        results,
        time.monotonic() - started,
        warnings,
        base.moving_tags(),
        fanout,
        skipped,
        base.platform,
    )


def log_share(images: Sequence[BakeImage], fanout: FanOut, skipped: Sequence[str]) -> None:
    """What this build of the batch builds, and what of its share it skips."""
    newcomers = [image.target for image in images if image.target not in fanout.share]
    driver.info(
        "fan-out: this build of the batch builds "
        + (", ".join(image.target for image in images) or "no image")
        + (f" (not in the plan, so built here: {', '.join(newcomers)})" if newcomers else "")
    )
    for name in skipped:
        driver.info(f"fan-out: {name} is in this build's share but not in the Bake file: skipped")
