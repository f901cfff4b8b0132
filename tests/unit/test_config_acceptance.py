"""The acceptance corpus: 42 real-world autoscaler configs, each with the outcome it must get.

The files and their known mistakes are described in ``configs/acceptance/INDEX.md``.
Each entry of :data:`EXPECTED` maps a problem or warning path to a fragment its
message must contain ("" when the path alone says enough).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from fleetkit.config import check, load
from fleetkit.errors import ConfigError, Problem

CORPUS = Path(__file__).parent / "configs" / "acceptance"

FRAGMENT = "expected an array of tables ([[runners]])"
NO_PLUGIN = "is missing: name the fleeting plugin"
NO_EXECUTOR = "is missing: a runner with [runners.autoscaler] needs executor"
MISPLACED = "belongs in [runners.autoscaler], not directly under [[runners]]"
UNBOUNDED = "with scale_factor_limit 0 grows idle capacity without bound"
# Issue 14: docker-autoscaler ran jobs on the host exactly like instance, with no
# container; fleetkit does not run containers, so it now refuses the executor by name.
DOCKER = "'docker-autoscaler' runs each job in a Docker container"


class Expected(NamedTuple):
    """What one corpus file must produce: problems (then it does not load) and warnings."""

    problems: Mapping[str, str] = {}
    warnings: Mapping[str, str] = {}


LOADS = Expected()

EXPECTED: dict[str, Expected] = {
    "01-glr-docs-docker-autoscaler-aws.toml": Expected({"runners[0].executor": DOCKER}),
    # plugin_config is the plugin's own: its zone-is-a-region slip is not fleetkit's to see.
    "02-glr-docs-docker-autoscaler-gcp.toml": Expected({"runners[0].executor": DOCKER}),
    "03-glr-docs-docker-autoscaler-azure.toml": Expected({"runners[0].executor": DOCKER}),
    "04-glr-docs-instance-aws-linux.toml": LOADS,
    "05-glr-docs-instance-aws-windows.toml": LOADS,
    "06-glr-docs-instance-macos-vm-isolation.toml": LOADS,
    "07-glr-docs-instance-azure-windows.toml": LOADS,
    "08-glr-docs-fleeting-install-oci-plugin.toml": LOADS,
    "09-glr-docs-fleeting-manual-plugin-name.toml": LOADS,
    "10-glr-docs-policy-periods-snippet.toml": Expected({"runners": FRAGMENT}),
    "11-glr-docs-slot-cgroups-autoscaler.toml": Expected(
        {"runners[0].autoscaler.plugin": NO_PLUGIN, "runners[0].executor": DOCKER}
    ),
    "12-glr-docs-docker-plus-autoscaler-typo.toml": Expected(
        {"runners[0].executor": "'docker+autoscaler' is not a GitLab Runner executor"}
    ),
    "13-hetzner-dev-config.toml": Expected({"runners[0].executor": DOCKER}),
    "14-hetzner-quickstart.toml": Expected({"runners[0].executor": DOCKER}),
    "17-proxmox-ne0sight-instance.toml": LOADS,
    "18-proxmox-ne0sight-docker-autoscaler.toml": Expected({"runners[0].executor": DOCKER}),
    "19-proxmox-ne0sight-readme-node-policies.toml": LOADS,
    "20-yandexcloud-lavr-example.toml": Expected({"runners[0].executor": DOCKER}),
    "21-yandexcloud-lavr-readme-fragment.toml": Expected({"runners": FRAGMENT}),
    "22-azure-huynh-terraform.toml": Expected({"runners[0].executor": DOCKER}),
    "23-openstack-sardina-readme-2023-key-file.toml": Expected(
        {
            "runners": FRAGMENT,
            "runners.autoscaler.connector_config.key_file": "did you mean 'key_path'?",
        }
    ),
    "24-openstack-sardina-readme-full.toml": Expected({"runners[0].executor": DOCKER}),
    "25-upcloud-kirbo-register-generated.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={"concurrent": "5 caps jobs below what runners[0] can run"},
    ),
    "26-incus-scalecommerce-fragment.toml": Expected({"runners": FRAGMENT}),
    "27-cloudscale-config-template.toml": Expected({"runners[0].executor": DOCKER}),
    "28-scaleway-codecentric-mac.toml": Expected({"runners[0].executor": DOCKER}),
    "29-fleetingd-helmholtz-misplaced-keys.toml": Expected(
        {
            "runners[0].plugin": MISPLACED,
            "runners[0].instance_ready_command": MISPLACED,
            "runners[0].delete_instances_on_shutdown": MISPLACED,
            "runners[0].autoscaler.policy[0].preemtive_mode": "did you mean 'preemptive_mode'?",
            "runners[0].autoscaler.plugin": NO_PLUGIN,
        }
    ),
    "30-fleetingd-helmholtz-plugin-config-fragment.toml": Expected(
        {"runners[0].executor": NO_EXECUTOR, "runners[0].autoscaler.plugin": NO_PLUGIN}
    ),
    "32-ionos-template-config-substituted.toml": Expected(
        warnings={"runners[0].autoscaler.connector_config.arch": "(did you mean 'amd64' or '386'?)"}
    ),
    # Helm injects executor, url and token; the TOML alone has no executor.
    # Issue 14: request_concurrency = 2 was accepted in silence; fleetkit polls no
    # GitLab, so it has no effect, and says so.
    "33-kubevirt-gonicus-helm-values.toml": Expected(
        {"runners[0].executor": NO_EXECUTOR},
        warnings={"runners[0].request_concurrency": "2 has no effect"},
    ),
    # scale_factor 2 with no limit in both policies: a choice, but an unbounded one.
    "34-cattle-ops-docker-autoscaler-rendered.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={
            "runners[0].autoscaler.policy[0].scale_factor": UNBOUNDED,
            "runners[0].autoscaler.policy[1].scale_factor": UNBOUNDED,
        },
    ),
    "35-phpboyscout-fleet-rendered.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={
            "concurrent": "20 caps jobs below what runners[0] can run",
            "runners[0].limit": "20 caps this runner's jobs",
        },
    ),
    "36-schuberg-mcaf-rendered-from-hcl.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={"concurrent": "4 caps jobs below what runners[0] can run"},
    ),
    # scale_factor fed from a percentage variable (10 meaning 10%).
    "37-grit-aws-ec2-rendered.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={"runners[0].autoscaler.policy[0].scale_factor": "not a percentage"},
    ),
    "38-grit-google-rendered-request-concurency-typo.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={"runners[0].request_concurency": "did you mean 'request_concurrency'?"},
    ),
    # tags and run_untagged are registration options; config.toml has no such runner keys.
    "39-vsphere-myplixa-full.toml": Expected(
        {"runners[0].executor": DOCKER},
        warnings={
            "runners[0].tags": "is not a GitLab Runner key",
            "runners[0].run_untagged": "is not a GitLab Runner key",
        },
    ),
    "40-vsphere-myplixa-two-runners-fragment.toml": Expected(
        {
            "runners[0].executor": NO_EXECUTOR,
            "runners[0].autoscaler.plugin": NO_PLUGIN,
            "runners[1].executor": NO_EXECUTOR,
            "runners[1].autoscaler.plugin": NO_PLUGIN,
        }
    ),
    "41-yandex-alexeysetevoi-linux.toml": Expected({"runners[0].executor": DOCKER}),
    "42-incus-emmanuelthome-instance.toml": LOADS,
    "invalid/15-hetzner-readme-old-invalid.toml": Expected(
        {"line 12, column 6": "placeholders such as <token> must be quoted"}
    ),
    "invalid/16-hetzner-readme-2024-slash-comments.toml": Expected(
        {"line 26, column 1": "comments start with '#', not '//' (lines 26, 27)"}
    ),
    "invalid/31-ionos-template-config-as-published.toml": Expected(
        {"line 46, column 12": "placeholders such as <token> must be quoted"}
    ),
}


def _matches(found: tuple[Problem, ...], wanted: Mapping[str, str]) -> None:
    by_path = {p.path: p.message for p in found}
    assert set(by_path) == set(wanted)
    for path, fragment in wanted.items():
        assert fragment in by_path[path], (path, by_path[path])


def test_every_corpus_file_has_an_expectation() -> None:
    """The table covers exactly the 42 files of the corpus, so none is skipped silently."""
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.toml")}
    assert files == set(EXPECTED)
    assert len(files) == 42


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_outcome(name: str) -> None:
    """Each corpus file loads with exactly its expected warnings, or fails with exactly its problems."""
    expected = EXPECTED[name]
    path = CORPUS / name
    findings = check(path)
    _matches(findings.problems, expected.problems)
    _matches(findings.warnings, expected.warnings)
    if expected.problems:
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert caught.value.problems == findings.problems
    else:
        assert load(path).warnings == findings.warnings
