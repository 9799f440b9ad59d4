"""When an uploaded file expires, from its form's ``expires_after`` or its purpose."""

from __future__ import annotations

import pytest

from schemas.batch import FILE_EXPIRY_MAX, FILE_EXPIRY_MIN, ExpiryError, file_expiry


def test_expires_after_counts_from_created_at() -> None:
    assert file_expiry("user_data", 1000, "created_at", "3600") == 4600
    assert file_expiry("batch", 1000, " created_at ", " 0003600 ") == 4600


def test_batch_files_default_to_30_days_and_other_purposes_never_expire() -> None:
    assert file_expiry("batch", 1000, None, None) == 1000 + FILE_EXPIRY_MAX
    assert file_expiry("batch_output", 1000, None, None) == 1000 + FILE_EXPIRY_MAX
    assert file_expiry("user_data", 1000, None, None) is None


def test_the_bounds_are_an_hour_and_30_days_inclusive() -> None:
    assert file_expiry("batch", 0, "created_at", str(FILE_EXPIRY_MIN)) == FILE_EXPIRY_MIN
    assert file_expiry("batch", 0, "created_at", str(FILE_EXPIRY_MAX)) == FILE_EXPIRY_MAX


@pytest.mark.parametrize(("anchor", "seconds", "param"), [
    ("last_active_at", "3600", "expires_after[anchor]"),
    (None, "3600", "expires_after[anchor]"),
    ("", "3600", "expires_after[anchor]"),
    ("created_at", None, "expires_after[seconds]"),
    ("created_at", "", "expires_after[seconds]"),
    ("created_at", "-3600", "expires_after[seconds]"),
    ("created_at", "+3600", "expires_after[seconds]"),
    ("created_at", "3600.0", "expires_after[seconds]"),
    ("created_at", "1e5", "expires_after[seconds]"),
    ("created_at", "\u0663\u0666\u0660\u0660", "expires_after[seconds]"),  # Arabic-Indic 3600
    ("created_at", str(FILE_EXPIRY_MIN - 1), "expires_after[seconds]"),
    ("created_at", str(FILE_EXPIRY_MAX + 1), "expires_after[seconds]"),
    # Past 4,300 digits int() itself raises ValueError: this must stay an ExpiryError.
    ("created_at", "9" * 5000, "expires_after[seconds]"),
    ("created_at", "0" * 5000, "expires_after[seconds]"),
])
def test_a_bad_expires_after_names_its_field(anchor: str | None, seconds: str | None,
                                             param: str) -> None:
    with pytest.raises(ExpiryError) as caught:
        file_expiry("batch", 0, anchor, seconds)
    assert caught.value.param == param


def test_many_leading_zeros_do_not_hide_a_valid_expiry() -> None:
    assert file_expiry("batch", 0, "created_at", "0" * 5000 + "7200") == 7200
