"""Public test kit for fleetkit users and fleetkit's own tests.

Submodules: :mod:`fleetkit.testing.simulated` (an in-memory instance group with
latency and faults, in anyio time), :mod:`fleetkit.testing.conformance` (the
provider conformance suite), :mod:`fleetkit.testing.connector` (a scripted fake
connector), :mod:`fleetkit.testing.strategies` (hypothesis strategies),
:mod:`fleetkit.testing.sshd` (a throwaway OpenSSH server),
:mod:`fleetkit.testing.nesting` (an in-memory nesting hypervisor, in anyio time) and
:mod:`fleetkit.testing.moto` (a moto AWS server with fault injection). Library code never
imports this package.
"""
