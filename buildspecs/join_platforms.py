"""The join of a multi-platform batch: each image's platform builds, one image index.

With several platforms (`Platforms`), a request is one CodeBuild batch: one build per
platform, each on a host of its architecture, and this join, which CodeBuild starts
only after every platform succeeded (starting/platforms.py). Each platform's build
pushed its image under `<commit>-<arch>[-<part>]` (build_driver.BuildRequest.platform_tag,
`<part>` naming the attempt); the join puts them together with `docker buildx imagetools
create`, which writes only a small index manifest (it copies no layer), under the
build's tags written once (`<commit>`, `<branch>-<sha7>`; a rebuild of a commit whose
tags name an earlier index gets `<commit>-index[-<part>]`), and exports what a
single-platform build exports: the recorder then moves the moving tags to the index.

With a Bake file, every image gets its index in its own repository. Standard library
only, like the driver.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import build_driver as driver


@dataclass(frozen=True)
class JoinedImage:
    """One image's index: what the recorder reads (as LAYERCACHE_IMAGES, with a Bake file)."""

    image: str  # the Bake target, or "" for the stack's one image
    repository: str
    digest: str
    tags: list[str]
    moving_tags: list[str]
    platforms: list[str]
    built_on: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "repository": self.repository,
            "digest": self.digest,
            "tags": self.tags,
            "moving_tags": self.moving_tags,
            "built_on": self.built_on,
            "platforms": self.platforms,
        }


@dataclass
class JoinReport:
    """The join's exported variables: the index and its tags; no step of its own."""

    images: list[JoinedImage]
    platforms: list[str]
    seconds: float
    bake: bool

    def variables(self) -> dict[str, str]:
        single = self.images[0] if not self.bake and self.images else None
        moving = self.images[0].moving_tags if self.images else []
        values = {
            "LAYERCACHE_IMAGE_DIGEST": single.digest if single else "",
            "LAYERCACHE_IMAGE_TAGS": ",".join(single.tags) if single else "",
            "LAYERCACHE_MOVING_TAGS": ",".join(moving),
            "LAYERCACHE_CACHE_HIT_RATIO": "",
            "LAYERCACHE_CACHE_REF_HIT": "none",
            "LAYERCACHE_BUILD_SECONDS": f"{self.seconds:.1f}",
            "LAYERCACHE_PUSH_SECONDS": "0.0",
            "LAYERCACHE_CACHE_EXPORT_SECONDS": "0.0",
            "LAYERCACHE_CACHED_STEPS": "0",
            "LAYERCACHE_TOTAL_STEPS": "0",
            "LAYERCACHE_CACHE_STATUS": "",
            "LAYERCACHE_IMAGES": (
                json.dumps([image.as_json() for image in self.images], separators=(",", ":"))
                if self.bake
                else ""
            ),
            "LAYERCACHE_PLATFORMS": ",".join(self.platforms),
        }
        assert tuple(values) == driver.EXPORTED_VARIABLES
        return values

    def as_json(self) -> dict[str, Any]:
        return {"variables": self.variables(), "images": [i.as_json() for i in self.images]}


def platforms_of(text: str) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def index_tags(request: driver.BuildRequest) -> list[str]:
    """The tags the index is written under: the build tags still free, else one of its own."""
    if request.pushed_tags():
        return request.pushed_tags()
    return [f"{request.commit}-index" + (f"-{request.part}" if request.part else "")]


def index_platforms(raw: bytes) -> list[str]:
    """The platforms an index lists (`os/architecture[/variant]`), attestations left out."""
    try:
        manifests = json.loads(raw).get("manifests") or []
    except (ValueError, AttributeError):
        return []
    found = []
    for entry in manifests:
        platform = entry.get("platform") or {}
        name = "/".join(
            part
            for part in (platform.get("os"), platform.get("architecture"), platform.get("variant"))
            if part
        )
        if name and name != "unknown/unknown":
            found.append(name)
    return found


def create_index(
    docker: str, request: driver.BuildRequest, platforms: Sequence[str]
) -> tuple[str, list[str]]:
    """Write the index of `request`'s platform images; its digest and tags."""
    tags = index_tags(request)
    sources = [f"{request.repository}:{request.platform_tag(platform)}" for platform in platforms]
    args = [docker, "buildx", "imagetools", "create"]
    for tag in tags:
        args += ["--tag", f"{request.repository}:{tag}"]
    created = subprocess.run([*args, *sources], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        detail = (created.stderr or created.stdout).strip()[-800:]
        raise driver.BuildFailed(f"could not join {', '.join(sources)}: {detail}")
    raw = subprocess.run(
        [docker, "buildx", "imagetools", "inspect", "--raw", f"{request.repository}:{tags[0]}"],
        capture_output=True,
        check=False,
    )
    if raw.returncode != 0:
        detail = raw.stderr.decode(errors="replace").strip()[-800:]
        raise driver.BuildFailed(
            f"the index {request.repository}:{tags[0]} is not readable: {detail}"
        )
    joined = index_platforms(raw.stdout)
    if sorted(joined) != sorted(platforms):
        raise driver.BuildFailed(
            f"the index {request.repository}:{tags[0]} lists {', '.join(joined) or 'no platform'}"
            f", not {', '.join(platforms)}: a platform's build pushed another platform's image"
        )
    digest = "sha256:" + hashlib.sha256(raw.stdout).hexdigest()
    driver.info(
        f"joined {', '.join(platforms)} into {request.repository}@{digest} ({', '.join(tags)})"
    )
    return digest, tags


def join(
    base: driver.BuildRequest,
    platforms: Sequence[str],
    *,
    docker: str = "docker",
    bake: tuple[Sequence[str], Sequence[str]] | None = None,
) -> JoinReport:
    """Join every image's platform builds; `bake`: (files, targets) of a Bake file."""
    started = time.monotonic()
    if len(platforms) < 2:
        raise driver.BuildFailed(f"nothing to join: {', '.join(platforms) or 'no platform'}")
    joined_base = replace(base, platform="")
    driver.check_moving_tags(joined_base)
    images: list[tuple[str, driver.BuildRequest, list[str]]] = []
    if bake is None:
        images.append(("", joined_base, []))
    else:
        bake_build = driver.bake_module()
        files, targets = bake
        definition = bake_build.read_definition(docker, files, targets)
        for image in bake_build.plan_images(definition, joined_base):
            images.append((image.target, image.request, list(image.built_on)))
    results = []
    for name, request, built_on in images:
        request = driver.tags_to_write(docker, request)
        digest, tags = create_index(docker, request, platforms)
        results.append(
            JoinedImage(
                image=name,
                repository=request.repository,
                digest=digest,
                tags=tags,
                moving_tags=request.moving_tags(),
                platforms=list(platforms),
                built_on=built_on,
            )
        )
    return JoinReport(results, list(platforms), time.monotonic() - started, bake is not None)
