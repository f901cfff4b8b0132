"""A throwaway SSH key pair for EC2 Instance Connect (dynamic credentials)."""

from __future__ import annotations

import attrs

from fleetkit.model import mask_secret

__all__ = ["KeyPair", "generate_key_pair"]


@attrs.frozen
class KeyPair:
    """An Ed25519 key pair: ``private`` in OpenSSH PEM form (a secret, masked in
    the repr) and ``public`` as an ``authorized_keys`` line."""

    private: bytes = attrs.field(repr=mask_secret)
    public: str


def generate_key_pair(comment: str = "fleetkit") -> KeyPair:
    """A new Ed25519 key pair, made in memory (never written to disk)."""
    # Imported here: only dynamic credentials need it (cryptography ships with
    # asyncssh, the SSH connector's library).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, f"{public.decode()} {comment}")
