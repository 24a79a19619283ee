"""The sample monorepo: several images declared in one Bake file (issue 14).

A base image, two images built on it (`FROM base`, with `contexts = { base = "target:base" }`)
and one independent image. Each image has a step that writes a layer of its own
(`LAYER_BYTES`) and one that copies its source (`<image>/src/main.txt`): a change of the
source rebuilds the copy and what follows it. The docker tier builds it
(tests/docker/test_bake_monorepo.py) and the demo plays a scene with it.

    files = monorepo_files()                       # path -> text, `{base}` unresolved
    root = write_monorepo(rig, tmp / "monorepo")   # the same files, written for the rig
    write_tree(rig, root, {source_path("tool"): "tool v2\\n"})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from layercache_dev.kit.rig import Rig

BAKE_FILE_NAME = "docker-bake.hcl"
BAKE_FILE = """\
group "default" {
  targets = ["base", "api", "worker", "tool"]
}
target "base" {
  context = "base"
}
target "api" {
  context = "api"
  contexts = { base = "target:base" }
}
target "worker" {
  context = "worker"
  contexts = { base = "target:base" }
  tags = ["example.com/team/worker:dev"]
}
target "tool" {
  context = "tool"
}
"""
# `{base}` is the rig's busybox image; `FROM base` is the Bake file's `target:base`.
DOCKERFILES = {
    "base": "FROM {base}\nRUN head -c 524288 /dev/urandom > /base.bin\nCOPY src/ /base-src/\n",
    "api": "FROM base\nRUN head -c 524288 /dev/urandom > /api.bin\nCOPY src/ /api-src/\n",
    "worker": "FROM base\nRUN head -c 524288 /dev/urandom > /worker.bin\nCOPY src/ /worker-src/\n",
    "tool": "FROM {base}\nRUN head -c 524288 /dev/urandom > /tool.bin\nCOPY src/ /tool-src/\n",
}
IMAGES = tuple(DOCKERFILES)  # base, api, worker, tool
BUILT_ON_BASE = ("api", "worker")
LAYER_BYTES = 524288  # each image's own RUN layer
STEPS_PER_IMAGE = 2  # its RUN and its COPY (its base's steps are the base's)


def source_path(image: str) -> str:
    """The one source file of `image`, relative to the monorepo's root."""
    return f"{image}/src/main.txt"


def monorepo_files(version: int = 1) -> dict[str, str]:
    """Every file of the sample at `version` of each image's source: path -> text."""
    files = {BAKE_FILE_NAME: BAKE_FILE}
    for image, dockerfile in DOCKERFILES.items():
        files[f"{image}/Dockerfile"] = dockerfile
        files[source_path(image)] = f"{image} v{version}\n"
    return files


def write_tree(rig: Rig, root: Path, files: Mapping[str, str]) -> Path:
    """Write `files` under `root`; in each Dockerfile `{base}` becomes the rig's base image."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "Dockerfile":
            text = text.replace("{base}", rig.base_image)
        path.write_text(text)
    return root


def write_monorepo(rig: Rig, root: Path) -> Path:
    """The sample, written under `root` for the rig's builder."""
    root.mkdir(parents=True, exist_ok=True)
    return write_tree(rig, root, monorepo_files())
