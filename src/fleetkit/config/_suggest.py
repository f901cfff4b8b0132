"""Which keys GitLab Runner knows, and "did you mean" for the ones it does not.

fleetkit models only the autoscaler family of GitLab Runner's config. The other
global and runner-level keys are listed here (from ``common/config.go``, state
of 2026-08, see ``spec/gitlab-runner-keys.md``) so that a valid key is not
reported and a misspelt one gets a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "EXECUTORS",
    "GLOBAL_KEYS",
    "GOARCH",
    "GOOS",
    "RUNNER_KEYS",
    "closest",
    "did_you_mean",
    "goarch_hint",
    "goos_hint",
]

GLOBAL_KEYS = frozenset(
    {
        "listen_address",
        "session_server",
        "labels",
        "concurrent",
        "check_interval",
        "log_level",
        "log_format",
        "user",
        "runners",
        "sentry_dsn",
        "connection_max_age",
        "machine",
        "experimental",
        "shutdown_timeout",
    }
)

RUNNER_KEYS = frozenset(
    {
        "name",
        "limit",
        "output_limit",
        "request_concurrency",
        "strict_check_interval",
        "unhealthy_requests_limit",
        "unhealthy_interval",
        "job_status_final_update_retry_limit",
        "experimental",
        "url",
        "id",
        "token",
        "token_obtained_at",
        "token_expires_at",
        "tls-ca-file",
        "tls-cert-file",
        "tls-key-file",
        "labels",
        "executor",
        "builds_dir",
        "cache_dir",
        "clone_url",
        "environment",
        "proxy_exec",
        "pre_get_sources_script",
        "post_get_sources_script",
        "pre_build_script",
        "post_build_script",
        "prepare_timeout",
        "get_sources_timeout",
        "debug_trace_disabled",
        "safe_directory_checkout",
        "clean_git_config",
        "shell",
        "custom_build_dir",
        "referees",
        "cache",
        "artifact",
        "feature_flags",
        "monitoring",
        "use_slot_cgroups",
        "slot_cgroup_template",
        "instance",
        "ssh",
        "docker",
        "parallels",
        "virtualbox",
        "machine",
        "kubernetes",
        "custom",
        "autoscaler",
        "step_runner_image",
    }
)

#: Every executor name GitLab Runner registers.
EXECUTORS = (
    "shell",
    "ssh",
    "parallels",
    "virtualbox",
    "docker",
    "docker-windows",
    "docker+machine",
    "docker-autoscaler",
    "kubernetes",
    "custom",
    "instance",
)


# `go tool dist list`: what fleeting plugins and the connector compare os and arch against.
GOOS = (
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
)
GOARCH = (
    "386",
    "amd64",
    "arm",
    "arm64",
    "loong64",
    "mips",
    "mips64",
    "mips64le",
    "mipsle",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390x",
    "wasm",
)

# Names other tools use for the same thing (uname -m, Debian, vendors' docs), which
# letter distance would not find: "x86" is as close to "amd64" as to nothing.
_GOOS_ALIASES: dict[str, tuple[str, ...]] = {
    "macos": ("darwin",),
    "osx": ("darwin",),
    "mac": ("darwin",),
    "win": ("windows",),
    "win32": ("windows",),
    "win64": ("windows",),
    "sunos": ("solaris",),
}
_GOARCH_ALIASES: dict[str, tuple[str, ...]] = {
    "x86": ("amd64", "386"),
    "x86_64": ("amd64",),
    "x86-64": ("amd64",),
    "x64": ("amd64",),
    "amd": ("amd64",),
    "intel": ("amd64", "386"),
    "i386": ("386",),
    "i486": ("386",),
    "i586": ("386",),
    "i686": ("386",),
    "ia32": ("386",),
    "aarch64": ("arm64",),
    "armv8": ("arm64",),
    "armv6": ("arm",),
    "armv6l": ("arm",),
    "armv7": ("arm",),
    "armv7l": ("arm",),
    "armhf": ("arm",),
    "armel": ("arm",),
    "ppc64el": ("ppc64le",),
    "riscv": ("riscv64",),
}


def goos_hint(value: str) -> str:
    """``" (did you mean 'darwin'?)"`` for an ``os`` that is not a GOOS value, else ``""``."""
    return _go_hint(value, GOOS, _GOOS_ALIASES)


def goarch_hint(value: str) -> str:
    """``" (did you mean 'amd64' or '386'?)"`` for an ``arch`` that is not a GOARCH value."""
    return _go_hint(value, GOARCH, _GOARCH_ALIASES)


def _go_hint(value: str, known: tuple[str, ...], aliases: dict[str, tuple[str, ...]]) -> str:
    folded = value.strip().lower()
    if folded in known:
        found: tuple[str, ...] = (folded,)
    elif folded in aliases:
        found = aliases[folded]
    else:
        match = closest(folded, known)
        found = (match,) if match else ()
    if not found:
        return ""
    return f" (did you mean {' or '.join(repr(f) for f in found)}?)"


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``word``, if any is close enough to be a likely typo."""
    ordered = sorted(candidates)
    found = difflib.get_close_matches(word, ordered, n=1, cutoff=0.6)
    if found:
        return found[0]
    # Snake-case keys that differ in one whole word (key_file for key_path) look
    # unlike each other letter by letter, yet are the usual slip.
    words = word.split("_")
    for candidate in ordered:
        other = candidate.split("_")
        same_shape = len(words) > 1 and len(other) == len(words)
        if same_shape and sum(a != b for a, b in zip(words, other, strict=True)) == 1:
            return candidate
    return None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate, or ``""`` when none is close."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
