"""A throwaway SSH key pair for EC2 Instance Connect (dynamic credentials)."""

from __future__ import annotations

import attrs

from fleetkit.model import mask_secret

__all__ = ["KeyPair", "generate_key_pair", "key_pair_from"]


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


def key_pair_from(private: bytes, comment: str = "fleetkit") -> KeyPair:
    """The key pair of an OpenSSH or PEM private key (``key_path``'s content).

    Raises :class:`~fleetkit.errors.ConfigError` at ``connector_config.key_path``
    when it is not an unencrypted private key; the message never holds the key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    from fleetkit.errors import ConfigError, Problem

    try:
        key = serialization.load_ssh_private_key(private, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(private, password=None)  # type: ignore[assignment]
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(
                [
                    Problem(
                        "connector_config.key_path",
                        "is not an unencrypted OpenSSH or PEM private key",
                    )
                ]
            ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, f"{public.decode()} {comment}")
