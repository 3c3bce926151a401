"""Checkpoints other than a thread's newest, kept compressed.

A LangGraph checkpoint serialises to a few hundred bytes, most of them channel versions
(``00000000000000000000000000000042.0.7160766501031915``, about ten per checkpoint) and the same
key names in every checkpoint. A long conversation keeps thousands of them: on a 300-turn thread
of the chat graph, 900 checkpoints of 570 B, a sixth of the saver's memory for the thread. zstd
against :data:`PRIMER` (those names and the zero runs of the versions, as a raw-content
dictionary) stores them in a third (175 kB of 513 kB), in 4 us per checkpoint.

Only checkpoints that stopped being the newest of their namespace are packed (when a child is put),
and only in a namespace that holds :data:`PACK_AFTER` of them, so a turn's read of the newest one
costs nothing more; a read of an older one (time travel, ``list``, ``get_state_history``) decodes
it in about 11 us.

A packed checkpoint is a :class:`Packed`, a tuple that holds ``("zc1:" + type, frame)`` as stored
and reads as the ``(type, bytes)`` LangGraph's serde wrote: unpacking it, indexing it and passing it
to ``serde.loads_typed`` give the original, so InMemorySaver's own code and every reader are
unchanged. The machinery that moves stored values around takes the frame: backup rows through
:func:`stored`, sizes through ``tuple.__getitem__``, recovery files by pickling it as it is. In the
store a packed checkpoint is the same row with that type and frame; a load makes it a
:class:`Packed` again by its type.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

if sys.version_info >= (3, 14):  # pragma: no cover - the standard library's
    from compression.zstd import ZstdCompressor, ZstdDict, decompress
else:
    from backports.zstd import ZstdCompressor, ZstdDict, decompress

#: type prefix of a checkpoint compressed against PRIMER (the 1 names the primer: never change its bytes)
PACKED = "zc1:"
#: what LangGraph checkpoints repeat: key names, common channel names and the zero runs of versions
PRIMER = (
    b"\xa2ts\xd9 2026-01-01T00:00:00.000000+00:00\xa2id\xd9$1f000000-0000-6000-8000-000000000000"
    b"\xb0channel_versions\xadversions_seen\xb0updated_channels\xadpending_sends\xa9__input__\xa9__start__"
    b"\xa8messages\xaabranch:to:\xa5agent\xa5tools\xa5title"
    b"\xd9400000000000000000000000000000000.0.\xd9300000000000000000000000000000000.0."
)
#: checkpoints smaller than this are kept as they are (nothing worth a frame to gain)
MIN_PACK = 160
#: a namespace's checkpoints are packed once it holds this many: below it, its checkpoints take a few
#: dozen kB and 4 us per ``put`` would cost more than it saves (as small channel values, see
#: :data:`persistence.codec.MIN_ENCODE`); a long conversation passes it within about twenty turns
PACK_AFTER = 64
#: zstd level (packing runs in ``put``: 3 is zstd's default and costs ~4 us here)
LEVEL = 3

_DICT = ZstdDict(PRIMER, is_raw=True)
_lock = threading.Lock()
_compressor = ZstdCompressor(level=LEVEL, zstd_dict=_DICT)

Typed = tuple[str, bytes]


class Packed(tuple):  # type: ignore[type-arg]
    """A checkpoint's ``(type, bytes)`` kept as ``("zc1:" + type, frame)``; reads see the original."""

    __slots__ = ()

    def __new__(cls, stored: Typed) -> Packed:
        return super().__new__(cls, stored)

    @property
    def raw(self) -> Typed:
        """``("zc1:" + type, frame)``, as stored."""
        return (tuple.__getitem__(self, 0), tuple.__getitem__(self, 1))

    def plain(self) -> Typed:
        """The ``(type, bytes)`` LangGraph's serde wrote."""
        tag: str = tuple.__getitem__(self, 0)
        return tag[len(PACKED) :], decompress(tuple.__getitem__(self, 1), zstd_dict=_DICT)

    def __iter__(self) -> Any:
        return iter(self.plain())

    def __getitem__(self, index: Any) -> Any:
        return self.plain()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Packed):
            return self.raw == other.raw
        return self.plain() == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.plain())

    def __repr__(self) -> str:
        tag, frame = self.raw
        return f"Packed(({tag!r}, <{len(frame)} bytes>))"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.raw,))


def pack(typed: Typed) -> Typed:
    """``typed`` packed, or as it is when it is small, encrypted (``+`` in its type: ciphertext does
    not compress), already packed, or would not get smaller."""
    if type(typed) is Packed:
        return typed
    tag, data = typed
    if len(data) < MIN_PACK or "+" in tag or ":" in tag:
        return typed
    with _lock:
        frame = _compressor.compress(data, mode=ZstdCompressor.FLUSH_FRAME)
    if len(frame) >= len(data):
        return typed
    return Packed((PACKED + tag, frame))


def stored(typed: Typed) -> Typed:
    """What to write to the store for ``typed``: the frame of a packed one, else ``typed``."""
    return typed.raw if type(typed) is Packed else typed


__all__ = ["MIN_PACK", "PACKED", "PACK_AFTER", "PRIMER", "Packed", "pack", "stored"]
