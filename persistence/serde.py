"""Serializers: whether one encrypts, the one an operator tool uses, and the check that a store can be read.

LangGraph's ``EncryptedSerializer`` tags every value it writes with its cipher (``msgpack+aes``). A
saver whose serde encrypts keeps nothing of a thread in clear text in the store: the summaries (title
and message text, kept for search) are left out, and search falls back to thread ids. The operator
tools (the CLI, the dashboard) read an encrypted store the way LangGraph does, with the key in
``LANGGRAPH_AES_KEY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from persistence.errors import HybridSaverError

#: the environment variable LangGraph's ``EncryptedSerializer.from_pycryptodome_aes()`` reads its key from
KEY_VARIABLE = "LANGGRAPH_AES_KEY"


class EncryptedStore(HybridSaverError):
    """The store holds encrypted values and the serializer at hand cannot decrypt them."""


def encrypts(serde: SerializerProtocol) -> bool:
    """True when ``serde`` writes encrypted values (its type tags carry a cipher, as ``msgpack+aes``)."""
    try:
        tag, _data = serde.dumps_typed("probe")
    except Exception:  # noqa: BLE001 - a serde that cannot write a str says nothing about encryption
        return False
    return "+" in tag


def is_encrypted_type(tag: str | None) -> bool:
    """True for the type tag of a value an encrypting serde wrote (``msgpack+aes``)."""
    return bool(tag) and "+" in str(tag)


def serde_from_env(env: Mapping[str, str] | None = None) -> SerializerProtocol:
    """The serializer an operator tool reads the store with: LangGraph's AES ``EncryptedSerializer``
    when ``LANGGRAPH_AES_KEY`` is set, else the default ``JsonPlusSerializer``.

    Raises:
        EncryptedStore: the key is set but cannot be used (pycryptodome missing, wrong length).
    """
    env = os.environ if env is None else env
    key = env.get(KEY_VARIABLE, "")
    if not key:
        return JsonPlusSerializer()
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    try:
        return EncryptedSerializer.from_pycryptodome_aes(key=_key_bytes(key))
    except ImportError:
        raise EncryptedStore(
            f"{KEY_VARIABLE} is set, but reading an encrypted store needs pycryptodome: "
            "pip install 'hybrid-saver[encryption]' (or pip install pycryptodome)."
        ) from None


def _key_bytes(key: str) -> bytes:
    raw = key.encode()
    if len(raw) not in (16, 24, 32):
        raise EncryptedStore(
            f"{KEY_VARIABLE} is {len(raw)} bytes long; an AES key is 16, 24 or 32 bytes (the same key the "
            "savers of this store use)."
        )
    return raw


def check_can_read(tag: str | None, serde: SerializerProtocol, where: str = "The store") -> None:
    """Refuse, with the fix, to decode a value of type ``tag`` that ``serde`` cannot decrypt.

    Raises:
        EncryptedStore: the value is encrypted and ``serde`` does not encrypt.
    """
    if is_encrypted_type(tag) and not encrypts(serde):
        raise EncryptedStore(
            f"{where} is encrypted (values of type {tag!r}) and no key was given. Set {KEY_VARIABLE} to the "
            "key its savers use (LangGraph's EncryptedSerializer.from_pycryptodome_aes() reads the same variable), "
            "or pass serde=EncryptedSerializer(...) to the saver."
        )


__all__ = ["KEY_VARIABLE", "EncryptedStore", "check_can_read", "encrypts", "is_encrypted_type", "serde_from_env"]
