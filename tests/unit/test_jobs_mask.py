"""Masking secrets in a streamed log, however the stream is cut."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from fleetkit.jobs import MASK, Masker


def _stream(masker: Masker, chunks: list[bytes]) -> str:
    return "".join(masker.feed(c) for c in chunks) + masker.flush()


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_secret_split_across_chunks_is_masked() -> None:
    """A secret cut in the middle by the transport is still replaced."""
    masker = Masker(["hunter2-secret"])
    out = _stream(masker, [b"token=hunt", b"er2-sec", b"ret done\n"])
    assert out == f"token={MASK} done\n"


def test_secret_cut_one_byte_at_a_time_is_masked() -> None:
    """Feeding one byte at a time still yields every occurrence masked."""
    data = b"a hunter2 b hunter2hunter2 c"
    out = _stream(Masker(["hunter2"]), [data[i : i + 1] for i in range(len(data))])
    assert out == f"a {MASK} b {MASK}{MASK} c"


def test_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    """Where one secret contains another, the longer one is hidden entirely."""
    out = _stream(Masker(["pass", "password123"]), [b"x password123 pass y"])
    assert out == f"x {MASK} {MASK} y"


def test_no_secrets_passes_text_through_unchanged() -> None:
    """Without secrets every chunk is returned as soon as it arrives."""
    masker = Masker([])
    assert masker.feed(b"hello ") == "hello "
    assert masker.feed(b"world") == "world"
    assert masker.flush() == ""


def test_multibyte_character_split_across_chunks_decodes() -> None:
    """A UTF-8 character cut between chunks is decoded whole, not as replacement marks."""
    data = "grüße: geheim€".encode()
    out = _stream(Masker(["geheim€"]), [data[:3], data[3:14], data[14:16], data[16:]])
    assert out == f"grüße: {MASK}"


def test_masker_repr_hides_secrets() -> None:
    """The masker's repr counts secrets and shows none."""
    assert "topsecret" not in repr(Masker(["topsecret"]))


_alphabet = st.sampled_from("abcé€ \n")


@given(
    secrets=st.lists(st.text(_alphabet, min_size=1, max_size=6), min_size=1, max_size=3),
    text=st.text(_alphabet, max_size=60),
    cuts=st.lists(st.integers(0, 200), max_size=12),
)
def test_streaming_equals_masking_the_whole_text(
    secrets: list[str], text: str, cuts: list[int]
) -> None:
    """Masking any chunking of a stream gives what masking the whole text at once gives
    (a text ending in the start of a secret has that end masked too)."""
    ordered = sorted(set(secrets), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, ordered)))
    end = max((m.end() for m in pattern.finditer(text)), default=0)
    head, rest = pattern.sub(MASK, text[:end]), text[end:]
    starts = [s[:k] for s in ordered for k in range(1, len(s)) if rest.endswith(s[:k])]
    if starts:
        rest = rest[: -max(map(len, starts))] + MASK
    assert _stream(Masker(secrets), _cut(text.encode(), cuts)) == head + rest


SECRET = "MASKEDVAL-SECRET-3344"


@given(size=st.integers(1, len(SECRET) - 1), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_a_stream_ending_inside_a_secret_shows_none_of_it(size: int, cuts: list[int]) -> None:
    """Issue 10 item 8: a job cut off (timeout, cancel) while printing a secret leaves no
    prefix of it in the log, however many of its characters came and however cut."""
    data = f"token={SECRET[:size]}".encode()
    out = _stream(Masker([SECRET]), _cut(data, cuts))
    assert out == f"token={MASK}"


def test_the_issue_case_19_of_21_characters() -> None:
    """The case that found it: 19 of 21 characters at the end of the stream."""
    masker = Masker([SECRET])
    out = masker.feed(b"starting\ntoken=" + SECRET[:19].encode()) + masker.flush()
    assert out == f"starting\ntoken={MASK}"
    assert "VAL-SECRET" not in out
