"""The Bake file's plan (buildspecs/bake_build.py): which images, where, in what order,
and which steps each image counts. The builds themselves: tests/docker/test_bake_monorepo.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layercache_dev.kit.driver import build_driver

bake = build_driver.bake_module()

PREFIX = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"
COMMIT = "a" * 40


def base_request(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "repository": PREFIX,
        "branch": "feature/x",
        "commit": COMMIT,
        "default_branch": "main",
    }
    values.update(changes)
    return build_driver.BuildRequest(**values)


def definition(targets: dict[str, list[str]], group: list[str] | None = None) -> dict[str, Any]:
    """What `bake --print` answers: each target with its `target:` contexts."""
    return {
        "group": {"default": {"targets": group if group is not None else list(targets)}},
        "target": {
            name: {
                "context": name,
                "dockerfile": "Dockerfile",
                **({"contexts": {dep: f"target:{dep}" for dep in deps}} if deps else {}),
            }
            for name, deps in targets.items()
        },
    }


MONOREPO = {"base": [], "api": ["base"], "worker": ["base"], "tool": []}


def test_each_image_gets_its_own_repository_tags_and_cache_refs() -> None:
    images = {
        image.target: image for image in bake.plan_images(definition(MONOREPO), base_request())
    }
    api = images["api"].request
    assert api.repository == f"{PREFIX}/api"
    assert api.cache_from_refs() == [
        f"{PREFIX}/api:{build_driver.cache_tag('feature/x')}",
        f"{PREFIX}/api:cache-main",
    ]
    assert api.tags() == [COMMIT, f"{build_driver.branch_slug('feature/x')}-aaaaaaa"]
    assert images["api"].built_on == ("base",)
    assert images["tool"].built_on == ()


def test_images_build_after_the_images_they_are_built_on_else_in_file_order() -> None:
    order = [image.target for image in bake.plan_images(definition(MONOREPO), base_request())]
    assert order == ["base", "tool", "api", "worker"]


def test_only_the_requested_targets_are_published_their_unrequested_bases_are_built_inside() -> (
    None
):
    chain = {"os": [], "runtime": ["os"], "api": ["runtime"], "worker": ["runtime"]}
    images = bake.plan_images(definition(chain, group=["os", "api", "worker"]), base_request())
    assert [image.target for image in images] == ["os", "api", "worker"]
    # `runtime` is not published: api and worker are built on `os` through it.
    assert {image.target: image.built_on for image in images}["api"] == ("os",)


def test_a_separate_cache_repository_gets_one_cache_repository_per_image() -> None:
    cache = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app-cache"
    (image,) = bake.plan_images(definition({"api": []}), base_request(cache_repository=cache))
    assert image.request.cache_ref("main") == f"{cache}/api:cache-main"


@pytest.mark.parametrize("name", ["Api_", "a..b", "-x", "api--"])
def test_a_target_ecr_cannot_name_stops_the_build_before_it_starts(name: str) -> None:
    with pytest.raises(bake.BakeDefinitionError, match="cannot name an ECR repository"):
        bake.plan_images(definition({name: []}), base_request())


def test_two_targets_that_would_share_a_repository_stop_the_build() -> None:
    with pytest.raises(bake.BakeDefinitionError, match="would share the repository"):
        bake.plan_images(definition({"API": [], "api": []}), base_request())


def test_target_names_become_lower_case_repository_names() -> None:
    (image,) = bake.plan_images(definition({"Api_V2": []}), base_request())
    assert image.request.repository == f"{PREFIX}/api_v2"
    assert image.target == "Api_V2"  # bake still knows it by its own name


def test_the_override_replaces_where_the_image_goes_and_its_caches() -> None:
    (image,) = bake.plan_images(
        definition({"api": []}),
        base_request(mode="refresh", refresh_date="2026-12-03", build_args=("A=1",)),
    )
    override = bake.target_override(image, use_cache=True, export_cache=True, no_cache=False)
    assert override["tags"] == [f"{PREFIX}/api:{tag}" for tag in image.request.tags()]
    assert override["output"] == ["type=image,push=true"]
    assert override["cache-from"] == [
        f"type=registry,ref={ref}" for ref in image.request.cache_from_refs()
    ]
    assert override["cache-to"] == [
        f"type=registry,ref={image.request.cache_ref('feature/x')},{bake.CACHE_EXPORT_MODE}"
    ]
    assert override["args"] == {"A": "1", build_driver.REFRESH_ARG: "2026-12-03"}
    assert override["pull"] is True
    assert "no-cache" not in override
    json.dumps(override)  # bake reads it as JSON


def test_an_image_whose_build_tags_exist_is_pushed_by_digest_without_cache_on_a_clean_build() -> (
    None
):
    (image,) = bake.plan_images(definition({"api": []}), base_request(mode="clean"))
    image = bake.BakeImage(image.target, build_driver.replace(image.request, write_tags=()))
    override = bake.target_override(image, use_cache=False, export_cache=True, no_cache=True)
    assert override["tags"] == []
    assert override["output"] == [f"type=image,name={PREFIX}/api,push-by-digest=true,push=true"]
    assert override["cache-from"] == []
    assert override["no-cache"] is True


def test_a_cycle_is_refused() -> None:
    with pytest.raises(bake.BakeDefinitionError, match="depend on each other"):
        bake.plan_images(definition({"a": ["b"], "b": ["a"]}), base_request())


# ---------------------------------------------------------------- steps per image


def vertex(digest: str, name: str, *, inputs: tuple[str, ...] = (), cached: bool = False) -> Any:
    return build_driver.Vertex(digest=digest, name=name, inputs=inputs, cached=cached)


def test_a_dependent_does_not_count_again_the_steps_of_its_base() -> None:
    known = ["base", "api"]
    built: set[str] = set()
    base_run = [
        vertex("f1", "[1/2] FROM busybox"),
        vertex("b2", "[2/2] RUN make base", inputs=("f1",)),
        vertex("e1", "exporting to image"),
    ]
    base_steps = bake.own_vertices(base_run, known, built)
    assert [v.name for v in base_steps if v.is_step] == ["[2/2] RUN make base"]
    # The dependent solves the base again under other digests, named after whichever
    # target bake liked, and adds its own step.
    api_run = [
        vertex("f9", "[api 1/2] FROM busybox"),
        vertex("b9", "[base 2/2] RUN make base", inputs=("f9",), cached=True),
        vertex("a1", "[api 1/2] RUN make api", inputs=("b9",)),
        vertex("e2", "[api] exporting to image"),
    ]
    api_steps = bake.own_vertices(api_run, known, built)
    assert [v.name for v in api_steps if v.is_step] == ["[1/2] RUN make api"]
    assert "exporting to image" in [v.name for v in api_steps]  # not a step: always kept


def test_a_step_that_only_reads_the_same_is_not_mistaken_for_the_bases() -> None:
    known = ["base", "api"]
    built: set[str] = set()
    bake.own_vertices(
        [vertex("f1", "[1/2] FROM busybox"), vertex("c1", "[2/2] COPY . .", inputs=("f1",))],
        known,
        built,
    )
    api_run = [
        vertex("f9", "[1/2] FROM busybox"),
        vertex("c9", "[2/2] COPY . .", inputs=("f9",), cached=True),  # the base's, again
        vertex("c2", "[2/2] COPY . .", inputs=("c9",)),  # api's own, read the same
    ]
    steps = [v.digest for v in bake.own_vertices(api_run, known, built) if v.is_step]
    assert steps == ["c2"]


# ---------------------------------------------------------------- the order, for any file


@st.composite
def bake_files(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    """A dependency DAG over a few targets (edges only to earlier names), and a request."""
    names = [f"t{index}" for index in range(draw(st.integers(1, 7)))]
    targets = {
        name: draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        for index, name in enumerate(names)
    }
    group = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    return targets, group


@given(bake_files())
def test_every_image_builds_after_every_published_image_it_reaches(
    case: tuple[dict[str, list[str]], list[str]],
) -> None:
    targets, group = case
    images = bake.plan_images(definition(targets, group), base_request())
    assert sorted(image.target for image in images) == sorted(group)  # exactly what was asked
    position = {image.target: index for index, image in enumerate(images)}

    def reaches(start: str) -> set[str]:
        found: set[str] = set()
        pending = list(targets[start])
        while pending:
            name = pending.pop()
            if name not in found:
                found.add(name)
                pending.extend(targets[name])
        return found

    for image in images:
        published_below = reaches(image.target) & set(group)
        assert set(image.built_on) <= published_below
        for name in published_below:
            assert position[name] < position[image.target], (image.target, name)
