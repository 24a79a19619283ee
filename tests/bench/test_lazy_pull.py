"""The lazy-pulling experiment's pure parts: its ratio, its table, its build flags.

The experiment itself is a measurement (`python -m layercache_dev.bench.lazy_pull`);
what is checked here is what turns runs into the table, and that its fresh-host builds
use the driver's own cache flags, eStargz added only where the lazy variant needs it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from layercache_dev.bench.builds import CACHE_TAG
from layercache_dev.bench.lazy_pull import (
    TARGET_RATIO,
    LazyCell,
    LazyRun,
    Variant,
    build_command,
    megabytes,
    ratio_to_warm,
    render_table,
    stargz_config,
    unmount_below,
)
from layercache_dev.bench.workload import Scenario
from layercache_dev.kit.driver import build_driver

REPOSITORY = "127.0.0.1:5000/lazy/gzip/change-halfway-1"


def run(seconds: float, downloaded: int = 0) -> LazyRun:
    return LazyRun(
        seconds=seconds,
        downloaded_bytes=downloaded,
        uploaded_bytes=75_000_000,
        blob_downloads=3,
        link_bytes_down=downloaded,
        cached_steps=6,
        total_steps=12,
    )


def cells(gzip: list[float], lazy: list[float], warm: list[float]) -> list[LazyCell]:
    scenario = Scenario.HALFWAY
    return [
        LazyCell(Variant.GZIP, scenario, [run(s, 95_000_000) for s in gzip]),
        LazyCell(Variant.LAZY, scenario, [run(s, 12_000_000) for s in lazy]),
        LazyCell(Variant.WARM, scenario, [run(s) for s in warm]),
    ]


def test_the_ratio_is_of_medians_to_the_warm_builders_median() -> None:
    measured = cells(gzip=[13.0, 12.0, 30.0], lazy=[11.0, 10.5, 11.5], warm=[10.0, 9.0, 10.0])
    assert ratio_to_warm(measured, Variant.GZIP, Scenario.HALFWAY) == pytest.approx(1.3)
    assert ratio_to_warm(measured, Variant.LAZY, Scenario.HALFWAY) == pytest.approx(1.1)


def test_the_ratio_refuses_a_warm_median_of_zero() -> None:
    with pytest.raises(ValueError, match="warm builder"):
        ratio_to_warm(cells([1.0], [1.0], [0.0]), Variant.LAZY, Scenario.HALFWAY)


def test_the_table_marks_each_fresh_host_variant_against_the_target() -> None:
    table = render_table(cells(gzip=[13.0], lazy=[11.0], warm=[10.0]))
    lines = table.splitlines()
    assert lines[0].startswith("| scenario | variant |")
    assert f"within {TARGET_RATIO:g}x" in lines[0]
    gzip_row, lazy_row, warm_row = lines[2:]
    assert "| 1.30 | **no** |" in gzip_row
    assert "95.0 MB" in gzip_row
    assert "| 1.10 | yes |" in lazy_row
    assert "12.0 MB" in lazy_row
    assert "(bound)" in warm_row
    assert "11.0 (11.0)" in lazy_row


def test_megabytes_shows_small_transfers_in_kilobytes() -> None:
    assert megabytes(4_400) == "4.4 KB"
    assert megabytes(286_000_000) == "286.0 MB"


def test_the_gzip_variant_caches_with_the_drivers_own_flags() -> None:
    request = build_driver.BuildRequest(
        repository=REPOSITORY, branch="main", commit="a" * 40, default_branch="main"
    )
    driver_args = build_driver.buildx_command(
        request,
        builder="b",
        cache_from=[f"{REPOSITORY}:{CACHE_TAG}"],
        cache_to=f"{REPOSITORY}:{CACHE_TAG}",
        no_cache=False,
        metadata_file=Path("/dev/null"),
    )
    ours = build_command("docker", "b", Variant.GZIP, REPOSITORY)

    def options(args: list[str], flag: str) -> set[str]:
        """The flag's options, leaving out the layer compression (the experiment's subject)."""
        value = args[args.index(flag) + 1].split(",")
        return {option for option in value if "compression" not in option}

    assert options(ours, "--cache-to") == options(driver_args, "--cache-to")
    assert options(ours, "--cache-from") == options(driver_args, "--cache-from")
    assert "estargz" not in " ".join(ours)


def test_the_lazy_variant_writes_estargz_to_the_image_and_to_the_cache() -> None:
    command = build_command("docker", "b", Variant.LAZY, REPOSITORY)
    output = command[command.index("--output") + 1].split(",")
    cache_to = command[command.index("--cache-to") + 1].split(",")
    for options in (output, cache_to):
        assert "compression=estargz" in options
        assert "force-compression=true" in options
        assert "oci-mediatypes=true" in options
    assert "push=true" in output
    assert "mode=max" in cache_to
    assert "image-manifest=true" in cache_to


def test_without_force_compression_only_new_layers_are_written_as_estargz() -> None:
    command = build_command("docker", "b", Variant.LAZY, REPOSITORY, force_compression=False)
    for flag in ("--output", "--cache-to"):
        options = command[command.index(flag) + 1].split(",")
        assert "compression=estargz" in options
        assert not any(option.startswith("force-compression") for option in options)


def test_the_warm_builder_uses_no_remote_cache() -> None:
    command = build_command("docker", "b", Variant.WARM, REPOSITORY)
    assert "--cache-from" not in command
    assert "--cache-to" not in command
    assert "--push" in command
    assert command[command.index("--tag") + 1] == f"{REPOSITORY}:main"


def test_the_stargz_config_turns_background_fetch_off_where_buildkitd_reads_it() -> None:
    parsed = tomllib.loads(stargz_config(background_fetch=False))
    assert parsed["worker"]["oci"]["stargzSnapshotter"] == {"no_background_fetch": True}
    assert stargz_config(background_fetch=True) == ""


def test_unmounting_below_a_directory_with_nothing_mounted_is_harmless(tmp_path: Path) -> None:
    (tmp_path / "root" / "snapshots").mkdir(parents=True)
    unmount_below(tmp_path / "root")
    assert (tmp_path / "root" / "snapshots").is_dir()
