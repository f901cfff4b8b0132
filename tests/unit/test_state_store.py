"""State storage: one holder at a time, and corrupt files refused cleanly (issue 10, 12 and 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.errors import FleetError, StateStoreError
from fleetkit.fleet._state_store import StateStore, StoredInstance

HOLD = """
import sys
from pathlib import Path
from fleetkit.fleet._state_store import StateStore
store = StateStore(Path(sys.argv[1]))
store.load()
print("held", flush=True)
sys.stdin.read()
"""
ENTRY = StoredInstance(id="i-1", owner="me", use_count=3, acquisitions={0: "job-7"})


def _write(tmp_path: Path, data: bytes) -> StateStore:
    store = StateStore(tmp_path)
    store.save({"i-1": ENTRY})
    store.path.write_bytes(data)
    return store


def test_a_second_store_on_the_same_table_is_refused_naming_path_and_holder(
    tmp_path: Path,
) -> None:
    """Two stores of one directory cannot both be open: the second names the file and the first's pid."""
    first = StateStore(tmp_path)
    assert first.load() == {}
    second = StateStore(tmp_path)
    with pytest.raises(StateStoreError) as caught:
        second.load()
    message = str(caught.value)
    assert str(tmp_path / "state.json") in message
    assert f"pid {os.getpid()}" in message
    assert "in use by another fleet" in message
    with pytest.raises(StateStoreError):
        second.save({"i-1": ENTRY})  # no write behind the holder's back either
    first.close()
    second.save({"i-1": ENTRY})
    assert second.load() == {"i-1": ENTRY}
    second.close()


def test_a_store_held_by_another_process_is_refused_and_freed_when_it_dies(
    tmp_path: Path,
) -> None:
    """The holder may be another process; the lock goes with it when it is killed."""
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD,
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(
                StateStoreError, match=rf"in use by another fleet \(pid {holder.pid} "
            ):
                StateStore(tmp_path).load()
        finally:
            holder.kill()
    store = StateStore(tmp_path)
    assert store.load() == {}
    store.close()


def test_a_symlinked_lock_file_is_not_followed(tmp_path: Path) -> None:
    """A link planted as state.lock is refused; its target is neither created nor changed."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "victim"
    (state / "state.lock").symlink_to(target)
    with pytest.raises(StateStoreError, match=r"cannot open state\.lock"):
        StateStore(state).load()
    assert not target.exists()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """A state directory writable by group or others could be changed by another user."""
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(StateStoreError, match="writable by others"):
        StateStore(state).load()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfe{}", r"not UTF-8 text \(byte 0\)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"format":1,"instances":{"a":{"owner":null,"use_count":1e999,"acquisitions":{}}}}',
            "use_count: expected an integer >= 0",
        ),
        (
            b'{"format":1,"instances":{"a":{"owner":null,"use_count":NaN,"acquisitions":{}}}}',
            "NaN is not a value",
        ),
        (
            b'{"format":1,"instances":{"a":{"owner":null,"use_count":-4,"acquisitions":{}}}}',
            "use_count: expected an integer >= 0",
        ),
        (
            b'{"format":1,"instances":{"a":{"owner":null,"use_count":1.5,"acquisitions":{}}}}',
            "use_count: expected an integer >= 0",
        ),
        (
            b'{"format":1,"instances":{"a":{"owner":7,"use_count":1,"acquisitions":{}}}}',
            "owner: expected a string or null",
        ),
        (
            b'{"format":1,"instances":{"a":{"owner":null,"use_count":1,"acquisitions":{"x":"y"}}}}',
            "acquisitions: expected slot numbers",
        ),
        (b"[]", "expected a JSON object, got an array"),
        (b'{"format": "1"}', "format: expected 1, got a string"),
        (b"{not json", "not JSON"),
    ],
)
def test_corrupt_state_files_are_refused_with_a_state_store_error(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    """Each corrupt table is a StateStoreError (a FleetError, not a ConfigError) naming the file."""
    store = _write(tmp_path, data)
    with pytest.raises(StateStoreError, match=expected) as caught:
        store.load()
    assert isinstance(caught.value, FleetError)
    assert str(store.path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_link_planted_as_state_file_is_not_followed(tmp_path: Path) -> None:
    """A state.json that is a link (to /dev/zero, or to another fleet's table) is refused."""
    store = StateStore(tmp_path)
    store.path.symlink_to("/dev/zero")
    with pytest.raises(StateStoreError, match=r"state\.json: cannot read: Too many levels"):
        store.load()
    store.close()


def test_a_symlinked_state_directory_is_refused(tmp_path: Path) -> None:
    """The state directory itself may not be a link (it could point anywhere)."""
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StateStoreError, match="its directory is a symbolic link"):
        StateStore(tmp_path / "link").load()


def test_a_huge_state_file_is_refused_by_size(tmp_path: Path) -> None:
    """A state.json over 64 MiB is refused unread rather than parsed."""
    store = StateStore(tmp_path)
    with store.path.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(StateStoreError, match="cannot read: larger than 64 MiB"):
        store.load()
    store.close()


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_table_or_a_state_store_error(data: bytes) -> None:
    """Fuzz: any content of state.json loads or raises StateStoreError, nothing else."""
    _fuzz_one(data)


def _nest(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    _nest,
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {"format": st.one_of(st.just(1), _JSONISH)},
        optional={
            "instances": st.dictionaries(
                st.text(max_size=8),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "owner": _JSONISH,
                        "use_count": _JSONISH,
                        "acquisitions": st.dictionaries(st.text(max_size=4), _JSONISH, max_size=3)
                        | _JSONISH,
                    },
                )
                | _JSONISH,
                max_size=3,
            )
        },
    )
)
def test_arbitrary_tables_are_a_table_or_a_state_store_error(document: dict[str, object]) -> None:
    """Fuzz: JSON of roughly the right shape with wrong values loads or raises StateStoreError."""
    _fuzz_one(json.dumps(document).encode())


def _fuzz_one(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        store = StateStore(Path(directory))
        store.path.write_bytes(data)
        try:
            table = store.load()
        except StateStoreError as exc:
            message = str(exc)
        else:
            message = ""
            for key, entry in table.items():
                assert entry.id == key
                assert entry.use_count >= 0
        finally:
            store.close()
        assert "\n" not in message
