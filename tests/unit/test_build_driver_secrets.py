"""Build secrets reach BuildKit by the name of the variable holding them, never by value."""

from __future__ import annotations

from pathlib import Path

import pytest

from layercache_dev.kit.driver import build_driver as driver

VALUE = "s3cr3t-token-value"


def request(secrets: tuple[object, ...]) -> object:
    return driver.BuildRequest(
        repository="127.0.0.1:5000/team/app",
        branch="main",
        commit="a" * 40,
        default_branch="main",
        secrets=secrets,
    )


def test_each_entry_is_read_from_its_slots_variable() -> None:
    env = {"LAYERCACHE_SECRET_1": VALUE, "LAYERCACHE_SECRET_2": "other"}
    spec = "pip=arn:aws:secretsmanager:eu-west-1:1:secret:a-1:token,npm=arn:aws:secretsmanager:x"

    secrets = driver.build_secrets(spec, env)

    assert secrets == (
        driver.BuildSecret("pip", "LAYERCACHE_SECRET_1"),
        driver.BuildSecret("npm", "LAYERCACHE_SECRET_2"),
    )


def test_the_command_names_the_variable_and_never_holds_the_value(tmp_path: Path) -> None:
    secrets = driver.build_secrets("pip=arn:x", {"LAYERCACHE_SECRET_1": VALUE})
    args = driver.buildx_command(
        request(secrets=secrets),
        builder="b",
        cache_from=[],
        cache_to=None,
        no_cache=False,
        metadata_file=tmp_path / "m.json",
    )

    assert args[args.index("--secret") + 1] == "id=pip,env=LAYERCACHE_SECRET_1"
    assert not any(VALUE in arg for arg in args)


def test_a_secret_without_its_value_stops_the_build_and_says_which() -> None:
    with pytest.raises(SystemExit, match=r"npm \(LAYERCACHE_SECRET_2\)") as stopped:
        driver.build_secrets("pip=arn:x,npm=arn:y", {"LAYERCACHE_SECRET_1": VALUE})
    assert VALUE not in str(stopped.value)


def test_no_secrets_configured_is_none() -> None:
    assert driver.build_secrets("", {}) == ()
