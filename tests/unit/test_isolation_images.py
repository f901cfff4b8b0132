"""Image choice for isolated jobs: GitLab's variable expansion and doublestar allowed_images."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fleetkit.errors import ImageRejected
from fleetkit.isolation import choose_image, expand_variables, image_allowed

# Image-name characters without glob meaning, and path segments made of them.
_PLAIN = st.text(st.sampled_from("abcxyz019.-_:@"), min_size=1, max_size=8)
_SEGMENT = _PLAIN.filter(lambda s: s not in {".", ".."})
_PATH = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)


# --- doublestar rules, each against fnmatch where fnmatch would differ ------


@given(prefix=_PATH, middle=st.lists(_SEGMENT, min_size=1, max_size=3))
def test_star_never_crosses_a_slash(prefix: str, middle: list[str]) -> None:
    """``*`` matches one segment: one segment passes, two or more never do
    (fnmatch's ``*`` would let them through)."""
    name = prefix + "/" + "/".join(middle)
    assert image_allowed(name, [prefix + "/*"]) is (len(middle) == 1)
    if len(middle) > 1:
        assert fnmatch.fnmatchcase(name, prefix + "/*")  # the hole fnmatch would open


@given(prefix=_PATH, middle=st.lists(_SEGMENT, max_size=3), last=_SEGMENT)
def test_double_star_crosses_any_number_of_segments(
    prefix: str, middle: list[str], last: str
) -> None:
    """``/**/`` matches zero or more whole segments; ``/**`` at the end any depth."""
    name = "/".join([prefix, *middle, last])
    assert image_allowed(name, [prefix + "/**/" + last])
    assert image_allowed(name, [prefix + "/**"])


@given(prefix=_PATH, char=st.sampled_from("abc/"), suffix=_PLAIN)
def test_question_mark_is_one_character_but_not_a_slash(
    prefix: str, char: str, suffix: str
) -> None:
    """``?`` matches exactly one character, never ``/``; never zero or two."""
    assert image_allowed(prefix + char + suffix, [prefix + "?" + suffix]) is (char != "/")
    assert not image_allowed(prefix + suffix, [prefix + "?" + suffix])
    assert not image_allowed(prefix + "ab" + suffix, [prefix + "?" + suffix])


@given(char=st.sampled_from("abcdxyz"))
def test_character_classes_and_their_negation(char: str) -> None:
    """``[abc]`` is one of the set; ``[!abc]`` and ``[^abc]`` one outside it."""
    inside = char in "abc"
    assert image_allowed(f"img-{char}", ["img-[abc]"]) is inside
    assert image_allowed(f"img-{char}", ["img-[!abc]"]) is not inside
    assert image_allowed(f"img-{char}", ["img-[^abc]"]) is not inside


@given(tag=st.sampled_from(["22.04", "24.04", "20.04", "22.04/evil"]))
def test_braces_are_alternatives(tag: str) -> None:
    """``{a,b}`` matches either alternative and nothing else (fnmatch reads
    the braces literally and would refuse both)."""
    pattern = "ubuntu:{22.04,24.04}"
    assert image_allowed(f"ubuntu:{tag}", [pattern]) is (tag in {"22.04", "24.04"})
    assert not fnmatch.fnmatchcase("ubuntu:22.04", pattern)


@given(name=_PATH)
def test_literal_patterns_and_case(name: str) -> None:
    """A pattern without metacharacters matches only itself, case-sensitively;
    leading dots are ordinary characters."""
    assert image_allowed(name, [name])
    assert image_allowed("." + name, ["*" + name])
    other = name.upper()
    assume(other != name)
    assert not image_allowed(other, [name])


@given(name=_PATH)
def test_empty_pattern_list_allows_every_image(name: str) -> None:
    """No allowed_images means every image is allowed, as in GitLab."""
    assert image_allowed(name, [])


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("a/../b", "a/*/b"), ("a//b", "a/*/b"), ("a", "a/**")],
)
def test_where_go_is_looser_the_image_is_refused(name: str, pattern: str) -> None:
    """The documented strict cases: a refused image, never one let through."""
    assert not image_allowed(name, [pattern])


# --- GitLab's expansion ----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("img-$TAG", "img-v1"),
        ("img-${TAG}", "img-v1"),
        ("img-${TAG}x", "img-v1x"),
        ("img-$TAGx", "img-"),  # the longest name: TAGx, unset
        ("$$TAG", "$TAG"),  # "$$" is a literal dollar; no second expansion
        ("img-$1-$*-$#", "img---"),
        ("img-$-", "img-"),
        ("img-${}", "img-"),  # bad syntax eaten
        ("img-${TAG", "img-TAG"),  # "${" eaten, the rest kept
        ("img-$", "img-$"),  # a trailing dollar stays
        ("img-$/x", "img-$/x"),  # "$" before a non-name stays
        ("$NESTED", "$TAG"),  # a value is not expanded again
        ("${UNSET}", ""),
    ],
)
def test_expansion_follows_go_os_expand_with_gitlab_lookup(written: str, expected: str) -> None:
    """Expansion is Go's os.Expand with GitLab's JobVariables.Get."""
    assert expand_variables(written, {"TAG": "v1", "NESTED": "$TAG"}) == expected


@given(text=st.text(st.characters(exclude_characters="$"), max_size=30))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    """Nothing but ``$`` starts an expansion."""
    assert expand_variables(text, {"A": "x"}) == text


@given(name=_NAMES, value=st.text(st.characters(exclude_characters="$"), max_size=12))
def test_braced_and_bare_references_agree(name: str, value: str) -> None:
    """``${NAME}`` and ``$NAME`` (at the end) read the same variable."""
    variables = {name: value}
    assert expand_variables("x${" + name + "}", variables) == "x" + value
    assert expand_variables("x$" + name, variables) == "x" + value


# --- the choice --------------------------------------------------------------


def test_job_image_wins_over_the_default() -> None:
    """The job's image is used when set; vm_isolation.image otherwise."""
    chosen = choose_image("ubuntu:24.04", "debian:12", {}, [], where="job 1")
    assert (chosen.image, chosen.source) == ("ubuntu:24.04", "job")
    chosen = choose_image(None, "debian:12", {}, [], where="job 1")
    assert (chosen.image, chosen.source) == ("debian:12", "vm_isolation.image")


def test_no_image_at_all_names_both_settings() -> None:
    """Neither the job nor the config names an image: a job error naming both."""
    with pytest.raises(ImageRejected, match=r"job 3: no image.*vm_isolation\] image"):
        choose_image(None, "", {}, ["*"], where="job 3")


def test_a_variable_cannot_smuggle_a_refused_image_past_the_check() -> None:
    """GitLab's bug: ``allowed-$X`` passes ``allowed-*`` before expansion and
    becomes anything. The expanded name is what is checked, and the message
    names it, what was written, and the patterns."""
    with pytest.raises(ImageRejected) as caught:
        choose_image(
            "allowed-$X", "", {"X": "x/../../evil"}, ["allowed-*"], where="job 4 ('build')"
        )
    message = str(caught.value)
    assert "'allowed-x/../../evil' (written 'allowed-$X')" in message
    assert "allowed_images ['allowed-*']" in message
    assert message.startswith("job 4 ('build'): image")
    # Unexpanded, the pattern would have let it pass: the order matters.
    assert image_allowed("allowed-$X", ["allowed-*"])


def test_an_expansion_that_stays_allowed_is_used() -> None:
    """A variable expanding to an allowed name yields the expanded image."""
    chosen = choose_image("$IMG", "", {"IMG": "ubuntu:24.04"}, ["ubuntu:*"], where="job 5")
    assert (chosen.image, chosen.written) == ("ubuntu:24.04", "$IMG")


def test_an_image_that_expands_to_nothing_is_refused() -> None:
    """``$UNSET`` expands to an empty name: refused, not sent to the daemon."""
    with pytest.raises(ImageRejected, match="empty after expanding"):
        choose_image("$UNSET", "", {}, [], where="job 6")


def test_masked_values_never_reach_the_message() -> None:
    """A secret a variable brought into the image name shows as [MASKED]."""
    with pytest.raises(ImageRejected) as caught:
        choose_image(
            "img-$TOKEN", "", {"TOKEN": "s3cr3t"}, ["ok/*"], where="job 7", masked=["s3cr3t"]
        )
    assert "s3cr3t" not in str(caught.value)
    assert "img-[MASKED]" in str(caught.value)
