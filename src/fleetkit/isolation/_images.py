"""Which image a job's VM is made from, and whether ``allowed_images`` permits it.

Pure functions, no I/O. The flow is GitLab Runner's (``spec/nesting.md``, "The
flow for one job", steps 1-2) with one deliberate difference:

* the image is the job's ``image``, else ``[runners.autoscaler.vm_isolation]
  image``; no image at all is a configuration error of the job, not a fault of
  the instance;
* variables are expanded in it as GitLab expands them (Go's ``os.Expand`` with
  GitLab's lookup: ``$$`` is a literal ``$``, ``$1``/``$*``/... are empty, an
  unset variable is empty, ``${`` without ``}`` is dropped);
* the **expanded** name is checked against ``[runners.instance]
  allowed_images``. GitLab checks the name *before* expansion and creates the
  VM from the expanded one, so ``allowed-prefix-$X`` passes
  ``allowed-prefix-*`` and then becomes any image the job likes. Checking what
  will actually be created closes that hole.

Patterns are Go doublestar globs: ``*`` and ``?`` never match ``/``; ``**`` as
a whole path segment matches any number of segments; ``[abc]``, ``[!abc]``,
``[^abc]``, ``{a,b}`` and ``\\`` escapes as usual; no special case for a
leading dot; case-sensitive. The matching is wcmatch's ``globmatch`` (a
maintained glob library) with ``GLOBSTAR | BRACE | DOTGLOB | FORCEUNIX |
CASE``; the tests pin each rule above. Where wcmatch is stricter than Go
(``*`` never matches an empty segment nor a ``.``/``..`` segment, and ``a/**``
does not match ``a`` itself) an image is refused, never let through. An empty
pattern list allows every image, as in GitLab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from wcmatch import glob

from fleetkit.errors import ImageRejected

__all__ = ["ImageChoice", "choose_image", "expand_variables", "image_allowed"]

_MASK = "[MASKED]"
_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.FORCEUNIX | glob.CASE

# Go's os.Expand: what may follow "$" as a one-character name.
_SPECIAL = frozenset("*#$@!?-0123456789")
# GitLab's JobVariables.Get answers these itself: "$" is the dollar sign (so
# "$$" reads "$"), the positional and special parameters are empty.
_EMPTY_SPECIAL = frozenset("*#@!?0123456789")


def _is_name_char(char: str) -> bool:
    return char == "_" or ("0" <= char <= "9") or ("a" <= char <= "z") or ("A" <= char <= "Z")


def _shell_name(text: str) -> tuple[str, int]:
    """Go's getShellName: the name at the start of ``text`` (just past a "$")
    and how many characters it takes; ``("", n > 0)`` is bad syntax to drop."""
    if text[0] == "{":
        if len(text) > 2 and text[1] in _SPECIAL and text[2] == "}":
            return text[1], 3
        end = text.find("}", 1)
        if end == 1:
            return "", 2  # "${}"
        if end < 0:
            return "", 1  # "${" never closed
        return text[1:end], end + 1
    if text[0] in _SPECIAL:
        return text[0], 1
    length = 0
    while length < len(text) and _is_name_char(text[length]):
        length += 1
    return text[:length], length


def _lookup(name: str, variables: Mapping[str, str]) -> str:
    if name == "$":
        return "$"
    if name in _EMPTY_SPECIAL:
        return ""
    return variables.get(name, "")


def expand_variables(value: str, variables: Mapping[str, str]) -> str:
    """Expand ``$NAME`` and ``${NAME}`` in ``value`` exactly as GitLab Runner
    expands a job's image name (``JobVariables.ExpandValue``: Go's
    ``os.Expand`` with GitLab's lookup). Expansion happens once: a value that
    itself holds ``$OTHER`` is not expanded again."""
    out: list[str] = []
    start = 0
    index = 0
    while index < len(value):
        if value[index] == "$" and index + 1 < len(value):
            out.append(value[start:index])
            name, width = _shell_name(value[index + 1 :])
            if name:
                out.append(_lookup(name, variables))
            elif width == 0:
                out.append("$")  # "$" before a non-name: kept as it is
            index += width
            start = index + 1
        index += 1
    out.append(value[start:])
    return "".join(out)


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    """Whether ``image`` matches one of ``patterns`` (doublestar globs; see the
    module docstring); an empty ``patterns`` allows every image."""
    if not patterns:
        return True
    return any(glob.globmatch(image, pattern, flags=_FLAGS) for pattern in patterns)


@attrs.frozen
class ImageChoice:
    """The image a job's VM is made from: ``image`` as expanded, ``written`` as
    the job (or ``vm_isolation.image``) gave it, and ``source`` saying which
    (``"job"`` or ``"vm_isolation.image"``)."""

    image: str
    written: str
    source: str


def choose_image(
    job_image: str | None,
    default_image: str,
    variables: Mapping[str, str],
    allowed: Sequence[str],
    *,
    where: str,
    masked: Sequence[str] = (),
) -> ImageChoice:
    """The image for a job, expanded and checked (GitLab's flow, with the check
    moved after expansion; see the module docstring).

    ``where`` names the job in messages; ``masked`` values (secrets a variable
    may have brought into the name) show as ``[MASKED]`` there. Raises
    :class:`~fleetkit.errors.ImageRejected` naming the image and the patterns
    when the expanded image is not allowed, and naming both settings when there
    is no image at all. Either happens before any VM exists and is the job's
    (or its configuration's) fault, never the instance's.
    """
    written, source = (job_image, "job") if job_image else (default_image, "vm_isolation.image")
    if not written:
        raise ImageRejected(
            f"{where}: no image: the job names none and "
            "[runners.autoscaler.vm_isolation] image is empty"
        )
    image = expand_variables(written, variables)
    shown = repr(image) if image == written else f"{image!r} (written {written!r})"
    for secret in sorted(filter(None, masked), key=len, reverse=True):
        shown = shown.replace(secret, _MASK)
    if not image.strip():
        raise ImageRejected(f"{where}: image {shown} is empty after expanding variables")
    if not image_allowed(image, allowed):
        raise ImageRejected(
            f"{where}: image {shown} is not allowed by [runners.instance] allowed_images "
            f"{list(allowed)!r}"
        )
    return ImageChoice(image=image, written=written, source=source)
