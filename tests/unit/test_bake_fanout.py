"""A build of a fan-out batch (buildspecs/bake_build.py): which images it builds, the cache
refs that let a dependent on a host of its own find its base's steps, and its step counts.
The builds themselves, one fresh builder per build of the batch: tests/docker/test_bake_fanout.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layercache_dev.kit.driver import build_driver

bake = build_driver.bake_module()

PREFIX = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"
COMMIT = "a" * 40
MONOREPO = {"base": [], "api": ["base"], "worker": ["base"], "tool": []}


def base_request(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "repository": PREFIX,
        "branch": "feature/x",
        "commit": COMMIT,
        "default_branch": "main",
    }
    values.update(changes)
    return build_driver.BuildRequest(**values)


def definition(targets: Mapping[str, Sequence[str]], group: Sequence[str] | None = None) -> Any:
    """What `bake --print` answers: each target with its `target:` contexts."""
    return {
        "group": {"default": {"targets": list(group if group is not None else targets)}},
        "target": {
            name: {
                "context": name,
                **({"contexts": {dep: f"target:{dep}" for dep in deps}} if deps else {}),
            }
            for name, deps in targets.items()
        },
    }


def plan(targets: Mapping[str, Sequence[str]], group: Sequence[str] | None = None) -> Any:
    return bake.plan_images(definition(targets, group), base_request())


def names(images: Sequence[Any]) -> list[str]:
    return [image.target for image in images]


def ref(image: str, branch: str) -> str:
    return f"{PREFIX}/{image}:{build_driver.cache_tag(branch)}"


# ---------------------------------------------------------------- the cache refs of a dependent


def test_a_dependent_reads_its_own_refs_then_its_bases() -> None:
    images = {image.target: image for image in plan(MONOREPO)}
    assert images["api"].cache_from_refs() == [
        ref("api", "feature/x"),
        ref("api", "main"),
        ref("base", "feature/x"),
        ref("base", "main"),
    ]
    assert images["base"].cache_from_refs() == images["base"].request.cache_from_refs()
    assert images["tool"].cache_from_refs() == [ref("tool", "feature/x"), ref("tool", "main")]


def test_on_the_default_branch_each_repository_is_read_once() -> None:
    images = {
        image.target: image
        for image in bake.plan_images(definition(MONOREPO), base_request(branch="main"))
    }
    assert images["worker"].cache_from_refs() == [ref("worker", "main"), ref("base", "main")]


def test_the_bases_are_the_nearest_published_images_in_file_order() -> None:
    chain = {"os": [], "runtime": ["os"], "tools": [], "api": ["runtime", "tools"]}
    images = {image.target: image for image in plan(chain, group=["tools", "os", "api"])}
    # `runtime` is not published (built inside api): api reads os's cache through it.
    assert images["api"].built_on == ("tools", "os")
    assert images["api"].cache_from_refs()[2:] == [
        ref("tools", "feature/x"),
        ref("tools", "main"),
        ref("os", "feature/x"),
        ref("os", "main"),
    ]


def test_the_override_asks_for_every_ref_in_that_order() -> None:
    (_, _, api, _) = plan(MONOREPO)  # base, tool, api, worker
    override = bake.target_override(api, use_cache=True, export_cache=True, no_cache=False)
    assert override["cache-from"] == [f"type=registry,ref={r}" for r in api.cache_from_refs()]
    # It exports to its own repository only, never to its base's.
    assert override["cache-to"] == [
        f"type=registry,ref={ref('api', 'feature/x')},{bake.CACHE_EXPORT_MODE}"
    ]


def test_the_ref_hit_is_the_images_own_whichever_import_finishes_first() -> None:
    (_, _, api, _) = plan(MONOREPO)
    step = build_driver.Vertex("s1", "[1/2] RUN make api", cached=True)
    summary = build_driver.summarize([step])
    summary = build_driver.replace(
        summary, imported_refs=[ref("base", "main"), ref("api", "main"), ref("base", "feature/x")]
    )
    ordered = summary.in_asked_order(api.cache_from_refs())
    assert ordered.imported_refs == [
        ref("api", "main"),
        ref("base", "feature/x"),
        ref("base", "main"),
    ]
    assert ordered.cache_ref_hit == ref("api", "main")
    # A dependent whose own cache is not there yet (a new image) names its base's.
    only_base = build_driver.replace(summary, imported_refs=[ref("base", "main")])
    assert only_base.in_asked_order(api.cache_from_refs()).cache_ref_hit == ref("base", "main")


@st.composite
def bake_files(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    """A dependency DAG over a few targets (edges only to earlier names), and a request."""
    targets_names = [f"t{index}" for index in range(draw(st.integers(1, 8)))]
    targets = {
        name: draw(st.lists(st.sampled_from(targets_names[:index]), unique=True)) if index else []
        for index, name in enumerate(targets_names)
    }
    group = draw(st.lists(st.sampled_from(targets_names), min_size=1, unique=True))
    return targets, group


@given(bake_files(), st.sampled_from(["main", "feature/x"]))
def test_every_image_reads_its_own_refs_first_then_each_bases_once(
    case: tuple[dict[str, list[str]], list[str]], branch: str
) -> None:
    targets, group = case
    images = bake.plan_images(definition(targets, group), base_request(branch=branch))
    by_name = {image.target: image for image in images}
    for image in images:
        refs = image.cache_from_refs()
        own = image.request.cache_from_refs()
        assert len(refs) == len(set(refs))
        assert refs[: len(own)] == own
        expected = list(own)
        for name in image.built_on:
            expected += [r for r in by_name[name].request.cache_from_refs() if r not in expected]
        assert refs == expected


# ---------------------------------------------------------------- the share of a build


def test_the_variables_say_whether_this_is_a_build_of_a_batch() -> None:
    assert bake.FanOut.from_values("", "", "") is None  # a single build: every image
    assert bake.FanOut.from_values(" , ", "api", "false") is None
    assert bake.FanOut.from_values("api, worker", "base,api,worker", "") == bake.FanOut(
        ("api", "worker"), ("base", "api", "worker"), newcomers=False
    )
    # The newcomers' build of a first batch: no share, no plan.
    assert bake.FanOut.from_values("", "", "TRUE") == bake.FanOut((), (), newcomers=True)
    with pytest.raises(build_driver.BuildFailed, match="true, false or unset"):
        bake.FanOut.from_values("api", "api", "yes")


def test_a_build_builds_its_share_in_build_order() -> None:
    images = plan(MONOREPO)
    share = bake.fanout_share(images, ["worker", "base"], ["base", "api", "worker", "tool"], False)
    assert names(share) == ["base", "worker"]


def test_the_first_batch_builds_everything_in_its_newcomers_build() -> None:
    images = plan(MONOREPO)
    assert names(bake.fanout_share(images, [], [], True)) == ["base", "tool", "api", "worker"]
    assert bake.fanout_share(images, [], [], False) == []


def test_images_added_to_the_file_go_to_the_newcomers_build_removed_ones_are_skipped() -> None:
    images = plan({**MONOREPO, "cron": ["base"]})
    planned = ["base", "api", "worker", "tool", "gone"]
    assert names(bake.fanout_share(images, ["tool", "gone"], planned, True)) == ["tool", "cron"]
    assert names(bake.fanout_share(images, ["tool", "gone"], planned, False)) == ["tool"]
    assert bake.fanout_skipped(images, ["tool", "gone"]) == ["gone"]
    # A share the file no longer declares at all: nothing to build.
    assert bake.fanout_share(images, ["gone"], planned, False) == []


def test_a_build_learns_the_bases_it_does_not_build() -> None:
    chain = {"os": [], "runtime": ["os"], "api": ["runtime"], "tool": []}
    images = plan(chain)
    by_name = {image.target: image for image in images}
    api, runtime = by_name["api"], by_name["runtime"]
    assert names(bake.bases_built_elsewhere(images, [api])) == ["runtime"]
    assert names(bake.bases_built_elsewhere(images, [runtime, api])) == ["os"]
    assert bake.bases_built_elsewhere(images, images) == []


@st.composite
def batches(
    draw: st.DrawFn,
) -> tuple[dict[str, list[str]], list[str], list[list[str]], list[str], int]:
    """A Bake file, the plan the batch was made from (any names), the plan split into
    shares, one per build, and which build gets the newcomers."""
    targets, group = draw(bake_files())
    planned = draw(
        st.lists(st.sampled_from([*targets, "gone1", "gone2"]), unique=True)
        | st.just(list(group))  # the plan matches the file
    )
    builds = draw(st.integers(1, max(1, len(planned))))
    owner = draw(st.lists(st.integers(0, builds - 1), min_size=len(planned), max_size=len(planned)))
    shares = [
        [name for name, o in zip(planned, owner, strict=True) if o == b] for b in range(builds)
    ]
    return targets, group, shares, planned, draw(st.integers(0, builds - 1))


@given(batches())
def test_over_a_batch_every_image_of_the_file_is_built_exactly_once(
    batch: tuple[dict[str, list[str]], list[str], list[list[str]], list[str], int],
) -> None:
    targets, group, shares, planned, newcomers = batch
    images = plan(targets, group)
    built = [
        bake.fanout_share(images, share, planned, number == newcomers)
        for number, share in enumerate(shares)
    ]
    everything = [image.target for share in built for image in share]
    assert sorted(everything) == sorted(group)  # each declared image, once
    order = names(images)
    for share in built:  # each build in build order
        assert names(share) == sorted(names(share), key=order.index)
    skipped = [name for share in shares for name in bake.fanout_skipped(images, share)]
    assert sorted(skipped) == sorted(set(planned) - set(group))
    # What a build needs of other builds are images some other build of the batch builds.
    for share in built:
        elsewhere = names(bake.bases_built_elsewhere(images, share))
        assert not set(elsewhere) & set(names(share))
        assert set(elsewhere) <= set(everything)
        for image in share:
            assert set(image.built_on) <= set(elsewhere) | set(names(share))


# ---------------------------------------------------------------- step counts on a build of a batch

Step = tuple[str, str, tuple[str, ...], bool]  # digest, name, inputs, cached


def vertices(steps: Sequence[Step]) -> list[Any]:
    return [
        build_driver.Vertex(digest=d, name=n, inputs=i, cached=c, started=None)
        for d, n, i, c in steps
    ]


# As BuildKit named them on the rig (tests/docker): the base's own build, then api on one
# host (the base's steps again, under other digests and either target's name) and api
# on a host of its own (the base's steps from the base's cache, named after api).
BASE_BUILD: list[Step] = [
    ("f1", "[1/3] FROM 127.0.0.1:5000/layercache/base:busybox", (), False),
    ("c1", "[internal] load build context", (), False),
    ("b2", "[2/3] RUN head -c 524288 /dev/urandom > /base.bin", ("f1",), False),
    ("b3", "[3/3] COPY src/ /base-src/", ("b2", "c1"), False),
    ("e1", "exporting to image", (), False),
]
API_ON_ONE_HOST: list[Step] = [
    ("f2", "[base 1/3] FROM 127.0.0.1:5000/layercache/base:busybox", (), False),
    ("c2", "[base internal] load build context", (), False),
    ("x2", "[base 2/3] RUN head -c 524288 /dev/urandom > /base.bin", ("f2",), True),
    ("x3", "[base 3/3] COPY src/ /base-src/", ("x2", "c2"), True),
    ("c3", "[api internal] load build context", (), False),
    ("a1", "[api 1/3] RUN head -c 524288 /dev/urandom > /api.bin", ("x3",), False),
    ("a2", "[api 2/3] COPY src/ /api-src/", ("a1", "c3"), False),
    ("e2", "[api] exporting to image", (), False),
]
API_ON_ITS_OWN_HOST: list[Step] = [
    ("f3", "[api 1/3] FROM 127.0.0.1:5000/layercache/base:busybox", (), False),
    ("c4", "[api internal] load build context", (), False),
    ("y2", "[api 2/3] RUN head -c 524288 /dev/urandom > /base.bin", ("f3",), True),
    ("y3", "[api 3/3] COPY src/ /base-src/", ("y2", "c4"), True),
    ("c5", "[api internal] load build context", (), False),
    ("a3", "[api 1/3] RUN head -c 524288 /dev/urandom > /api.bin", ("y3",), True),
    ("a4", "[api 2/3] COPY src/ /api-src/", ("a3", "c5"), True),
    ("e3", "[api] exporting to image", (), False),
]
# The base solved from its cache with no output, on api's host.
BASE_LEARNT: list[Step] = [
    (d + "'", n, tuple(i + "'" for i in inputs), True) for d, n, inputs, _ in BASE_BUILD[:4]
]


def own_step_names(runs: Sequence[Sequence[Step]]) -> list[list[str]]:
    known = ["base", "api"]
    built_before: set[str] = set()
    counted = [bake.own_vertices(vertices(run), known, built_before) for run in runs]
    return [[v.name for v in own if v.is_step] for own in counted]


def test_a_dependent_on_a_host_of_its_own_counts_the_steps_it_counts_on_one_host() -> None:
    _, on_one_host = own_step_names([BASE_BUILD, API_ON_ONE_HOST])
    assert on_one_host == [
        "[1/3] RUN head -c 524288 /dev/urandom > /api.bin",
        "[2/3] COPY src/ /api-src/",
    ]
    _, on_its_own = own_step_names([BASE_LEARNT, API_ON_ITS_OWN_HOST])
    assert on_its_own == on_one_host
    # Without learning the base first, the base's steps would count as api's.
    (unlearnt,) = own_step_names([API_ON_ITS_OWN_HOST])
    assert len(unlearnt) == 4


class Learning:
    """A scripted `run` for learn_steps: answers with the attempt given, records overrides."""

    def __init__(self, attempt: Any) -> None:
        self.attempt = attempt
        self.overrides: list[tuple[str, Mapping[str, Any]]] = []

    def __call__(self, target: str, override: Mapping[str, Any]) -> Any:
        self.overrides.append((target, override))
        return self.attempt


def attempt_of(steps: Sequence[Step], returncode: int = 0) -> Any:
    found = vertices(steps)
    summary = build_driver.summarize(found, ["ERROR: failed to solve: cache gone"])
    return build_driver.Attempt(returncode, summary, {}, tuple(found))


def test_learning_a_base_solves_it_from_its_cache_with_no_output() -> None:
    base = plan(MONOREPO)[0]
    run = Learning(attempt_of(BASE_LEARNT))
    warnings: list[str] = []
    steps = bake.learn_steps(base, run, known=["base", "api"], warnings=warnings)

    ((target, override),) = run.overrides
    assert target == "base"
    assert override["output"] == ["type=cacheonly"]
    assert override["tags"] == []
    assert override["cache-to"] == []  # never writes the base's cache from another build
    assert override["cache-from"] == [f"type=registry,ref={r}" for r in base.cache_from_refs()]
    assert len(steps) == 4  # its two steps, each by shape and by digest
    assert not warnings


def test_a_base_that_cannot_be_learnt_is_a_warning_not_a_failure() -> None:
    base = plan(MONOREPO)[0]
    warnings: list[str] = []
    run = Learning(attempt_of(BASE_LEARNT, returncode=1))
    assert bake.learn_steps(base, run, known=["base"], warnings=warnings) == set()
    (warning,) = warnings
    assert "could not solve base from its cache" in warning
    assert "count its steps as their own" in warning


# Two images built on base that build their source in a stage of their own, from the same
# image as the base: the FROM is one vertex of each solve, named after either stage.
BASE_OWN_STAGE: list[Step] = [
    ("fb", "[1/3] FROM 127.0.0.1:5000/layercache/base:busybox@sha256:64fa", (), False),
    ("cb", "[internal] load build context", (), False),
    ("b2", "[2/3] COPY src/ /base-src/", ("fb", "cb"), False),
    ("b3", "[3/3] RUN make base", ("b2",), False),
]


def stage_image(image: str, from_name: str, tag: str) -> list[Step]:
    """`image`'s solve: the base again (from the cache), its own stage, the copy."""
    return [
        ("fb", from_name, (), True),
        ("c1" + tag, f"[{image} internal] load build context", (), False),
        ("x2" + tag, f"[{image} 2/3] COPY src/ /base-src/", ("fb", "c1" + tag), True),
        ("x3" + tag, f"[{image} 3/3] RUN make base", ("x2" + tag,), True),
        ("c2" + tag, f"[{image} internal] load build context", (), False),
        ("s2" + tag, f"[{image} build 2/3] COPY src/ /src/", ("fb", "c2" + tag), False),
        ("s3" + tag, f"[{image} build 3/3] RUN make", ("s2" + tag,), False),
        ("s4" + tag, f"[{image} stage-1 1/2] COPY --from=build /app /app",
         ("x3" + tag, "s3" + tag), False),
    ]  # fmt: skip


@pytest.mark.parametrize("stage", ["", "build "])
def test_an_image_counts_its_own_steps_whichever_stage_names_the_shared_from(stage: str) -> None:
    known = ["base", "api", "worker"]
    from_base = "[1/3] FROM 127.0.0.1:5000/layercache/base:busybox@sha256:64fa"
    base_steps: set[str] = set()
    bake.own_vertices(vertices(BASE_OWN_STAGE), known, base_steps)
    counted = {}
    for image in ("api", "worker"):  # siblings: each leaves out the base's steps only
        steps = set(base_steps)
        name = f"[{image} {stage}{from_base[1:]}"
        own = bake.own_vertices(vertices(stage_image(image, name, image)), known, steps)
        counted[image] = [vertex.name for vertex in own if vertex.is_step]
    assert (
        counted["api"]
        == counted["worker"]
        == [
            "[build 2/3] COPY src/ /src/",
            "[build 3/3] RUN make",
            "[stage-1 1/2] COPY --from=build /app /app",
        ]
    )


def test_a_step_a_base_and_its_image_share_is_the_bases_whatever_its_name() -> None:
    """An op that reads no build context has one digest in every solve."""
    known = ["base", "api"]
    base_steps: set[str] = set()
    bake.own_vertices(
        vertices([("f", "[1/2] FROM busybox", (), False), ("r", "[2/2] RUN make", ("f",), False)]),
        known,
        base_steps,
    )
    api = [
        ("f", "[api build 1/3] FROM busybox", (), True),
        ("r", "[api build 2/3] RUN make", ("f",), True),  # the base's, named after api's stage
        ("a", "[api build 3/3] RUN make api", ("r",), False),
    ]
    own = bake.own_vertices(vertices(api), known, base_steps)
    assert [vertex.name for vertex in own if vertex.is_step] == ["[build 3/3] RUN make api"]
