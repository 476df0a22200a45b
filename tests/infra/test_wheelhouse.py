"""The wheelhouse is a per-platform cache (infra/build/wheelhouse.py): filling it for one requirement
set keeps the wheels of the others, and a set it was filled for is not downloaded again."""

from __future__ import annotations

import pytest

from infra.errors import WheelhouseError
from infra.build.wheelhouse import prepare_wheelhouse

# Small pure-Python wheels from the package index (the only network this host has).
FIRST = ["six==1.16.0"]
SECOND = ["idna==3.7"]


def _wheels(folder) -> set[str]:
    return {w.name.split("-")[0].lower() for w in folder.glob("*.whl")}


def test_filling_for_another_set_keeps_the_first_sets_wheels(tmp_path):
    folder = prepare_wheelhouse(FIRST, architecture="x86_64", python_version="3.11", root=tmp_path)
    assert _wheels(folder) == {"six"}
    six = next(folder.glob("six-*.whl"))
    first_inode = six.stat().st_ino

    assert prepare_wheelhouse(SECOND, architecture="x86_64", python_version="3.11", root=tmp_path) == folder
    assert _wheels(folder) == {"six", "idna"}
    assert six.stat().st_ino == first_inode  # kept, not downloaded again

    # Both sets are recorded: asking for the first again touches nothing, even with its wheel's file
    # replaced by a marker that a download would overwrite.
    six.write_bytes(b"kept")
    assert prepare_wheelhouse(list(reversed(FIRST)), architecture="x86_64", python_version="3.11",
                              root=tmp_path) == folder
    assert six.read_bytes() == b"kept"
    assert len((folder / ".requirements.sha256").read_text().split()) == 2


def test_a_pin_without_a_wheel_is_one_clear_error_and_records_nothing(tmp_path):
    with pytest.raises(WheelhouseError, match="cannot download wheels for x86_64 / Python 3.11") as caught:
        prepare_wheelhouse(["six==0.0.0.404"], architecture="x86_64", python_version="3.11", root=tmp_path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "x86_64-py3.11" / ".requirements.sha256").exists()
