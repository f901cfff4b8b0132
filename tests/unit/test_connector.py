"""Pure parts of fleetkit.connector: result types, input checks, quoting, host-key pins."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.connector import CommandResult, ExitStatus, argv_or_line, check_env
from fleetkit.connector._hostkeys import HostKeyStore, normalise_key
from fleetkit.connector._quote import command_line, env_header, remote_script
from fleetkit.errors import ConfigError
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import ClientKey

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2"


def test_command_result_reports_ok_text_and_hides_output_in_repr() -> None:
    """CommandResult says whether it succeeded, decodes text, and its repr shows sizes only."""
    result = CommandResult(0, b"secret-out\xff", b"")
    assert result.ok
    assert result.stdout_text == "secret-out\ufffd"
    assert "secret" not in repr(result)
    assert not CommandResult(None, b"", b"", "KILL").ok
    assert ExitStatus(0).ok
    assert not ExitStatus(None, "TERM").ok


def test_check_env_names_every_bad_variable_without_its_value() -> None:
    """Bad names and NUL values are all reported with their path, never with the value."""
    with pytest.raises(ConfigError) as caught:
        check_env({"1X": "a", "OK": "fine", "NUL": "top\0secret"}, where="instance i-1")
    paths = [p.path for p in caught.value.problems]
    assert paths == ["instance i-1.env.1X", "instance i-1.env.NUL"]
    assert "secret" not in str(caught.value)
    assert check_env(None, where="x") == {}


def test_argv_or_line_refuses_empty_commands() -> None:
    """Empty lines and argument lists are configuration errors naming the instance."""
    assert argv_or_line("ls", where="i") == "ls"
    assert argv_or_line(("ls", "-l"), where="i") == ["ls", "-l"]
    for bad in ("  ", [], ["a\0b"]):
        with pytest.raises(ConfigError, match=r"^i\.command"):
            argv_or_line(bad, where="i")


@given(args=st.lists(_text, min_size=1, max_size=5))
def test_argv_is_quoted_to_split_back_unchanged(args: list[str]) -> None:
    """An argument vector joined for the shell splits back into the same arguments."""
    assert shlex.split(command_line(args)) == args


@given(values=st.lists(_text, max_size=4))
def test_env_header_is_one_line_per_value_with_escapes_only(values: list[str]) -> None:
    """Each value becomes one line; its backslashes and newlines become 3-digit octal escapes."""
    env = {f"V{i}": value for i, value in enumerate(values)}
    lines = env_header(env).decode().split("\n")
    assert len(lines) == len(values) + 1
    for line, value in zip(lines, values, strict=False):
        assert re.sub(r"\\0([0-7]{3})", lambda m: chr(int(m[1], 8)), line) == value


def test_remote_script_keeps_env_values_out_of_the_command_line() -> None:
    """The script carries the command and env names, never env values, and traps TERM first."""
    script = remote_script(["echo", "a b"], {"TOKEN": "s3cret"})
    assert script.startswith("trap 'trap - TERM; kill -TERM -$$ ")
    assert "s3cret" not in script
    assert script.index("export TOKEN\n") < script.index("echo 'a b'")
    assert env_header({"TOKEN": "s3cret"}) == b"s3cret\n"


def test_host_key_store_pins_first_use_and_prefers_supplied_keys(tmp_path: Path) -> None:
    """A pin is remembered per instance id and persisted; a supplied key takes precedence."""
    store = HostKeyStore(tmp_path / "pins")
    info = ConnectInfo(id="i-1")
    assert store.expected(info) is None
    store.pin("i-1", KEY_A + " root@host")
    assert store.expected(info) == KEY_A
    assert store.expected(ConnectInfo(id="i-1", host_key=KEY_B)) == KEY_B
    assert store.expected(ConnectInfo(id="i-2")) is None
    assert HostKeyStore(tmp_path / "pins").pinned("i-1") == KEY_A
    store.forget("i-1")
    assert store.pinned("i-1") is None
    assert HostKeyStore(tmp_path / "pins").pinned("i-1") is None


def test_normalise_key_rejects_a_non_key() -> None:
    """A host key line without type and data is refused."""
    assert normalise_key(KEY_A + " comment") == KEY_A
    with pytest.raises(ValueError, match="OpenSSH public key"):
        normalise_key("garbage")


def test_client_key_repr_masks_the_private_key(tmp_path: Path) -> None:
    """A test client key never shows its private key in repr."""
    key = ClientKey(path=tmp_path / "k", public_key=KEY_A, private_key=b"PRIVATE")
    assert "PRIVATE" not in repr(key)
