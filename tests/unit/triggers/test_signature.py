from __future__ import annotations

import hashlib
import hmac

import pytest

from layercache.triggers.signature import is_valid_signature, sign

SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
# The example from GitHub's "Validating webhook deliveries" documentation.
GITHUB_EXAMPLE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_documented_example() -> None:
    assert sign(SECRET, BODY) == GITHUB_EXAMPLE


def test_valid_signature_is_accepted() -> None:
    assert is_valid_signature(SECRET, BODY, GITHUB_EXAMPLE)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        GITHUB_EXAMPLE.replace("sha256=", "sha1="),
        GITHUB_EXAMPLE[:-1] + "0",
        "sha256=" + hmac.new(b"other secret", BODY, hashlib.sha256).hexdigest(),
        GITHUB_EXAMPLE.upper(),
    ],
)
def test_missing_or_wrong_signature_is_refused(header: str | None) -> None:
    assert not is_valid_signature(SECRET, BODY, header)


def test_a_changed_body_is_refused() -> None:
    assert not is_valid_signature(SECRET, BODY + b" ", GITHUB_EXAMPLE)


def test_an_empty_secret_never_validates() -> None:
    assert not is_valid_signature(b"", BODY, sign(b"", BODY))
