"""Ed25519 signatures of an evidence bundle's root digest: whoever holds the public key can
check a bundle, and nobody who altered it can seal it again without the private key.

Keys are PEM (what ``openssl genpkey -algorithm ed25519`` writes), unencrypted. A key is
named by its fingerprint: the SHA-256 of its 32 raw public bytes, in hex.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"


class SigningKeyError(ValueError):
    """The bytes are not the Ed25519 key expected (the message never quotes the key)."""


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: an encrypted key
        raise SigningKeyError(
            "not an unencrypted PEM private key (openssl genpkey -algorithm ed25519)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"a {type(key).__name__.removesuffix('PrivateKey')} key, not Ed25519")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError("not a PEM public key (openssl pkey -pubout)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"a {type(key).__name__.removesuffix('PublicKey')} key, not Ed25519")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half, as PEM text."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def signature_valid(key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
