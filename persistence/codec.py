"""Channel values compressed, and each version of a channel stored as a delta against an earlier one.

LangGraph stores a new version of a channel's whole value at every step (the ``messages`` list
grows by a message or two), so a conversation's bytes grow with the square of its length. Here a
version is kept as a zstd frame compressed against an earlier version of the same channel, used as
a raw-content dictionary: what the two have in common costs a few bytes. The bases follow the
skip-delta scheme (Subversion's): version ``n`` of a channel's chain is compressed against version
``n & (n - 1)``, so decoding any version walks at most log2(n) + 1 frames (bounded time for old
versions: time travel, ``get_state_history``, restores), and each version costs about what changed
since its base (on average the content of log2(n) / 2 versions): a backup of a new turn writes about
the new turn's bytes, at any length. Nothing is rewritten once written.

The same encoded values live in memory, in the backup rows and in recovery files. :class:`Blobs` is
the blob dict of the memory cache and of snapshots: it encodes on ``blobs[key] = value`` and
decodes on ``blobs[key]`` and ``blobs.get(key)``, so InMemorySaver's own code reads values exactly as
LangGraph put them; ``raw()`` and iteration give the encoded values the machinery moves around.
Encrypted values (``msgpack+aes``) and values under 8 KiB are kept as they are. Compression library: zstd
(``compression.zstd``, in the standard library from Python 3.14, through ``backports.zstd`` before):
dictionary compression is what makes a version against its base cost only the difference.
"""

from __future__ import annotations

import json
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

if sys.version_info >= (3, 14):  # pragma: no cover - the standard library's
    from compression.zstd import ZstdDict, compress, decompress
else:
    from backports.zstd import ZstdDict, compress, decompress

#: tag prefix of a version compressed alone (the root of a chain)
ROOT = "z0:"
#: tag prefix of a version compressed against an earlier one
DELTA = "zd:"
#: values smaller than this are kept as they are: compressing a few kilobytes costs a put more than the
#: memory it saves (a short conversation's whole state), while a long one passes this within a few dozen turns
MIN_ENCODE = 8 * 1024
#: zstd level (3 is zstd's default: ~0.1 ms per 200 kB version against its base)
LEVEL = 3
#: bytes of other decoded versions kept for the next reads (older versions read by time travel, least
#: recently used out first); a saver with a budget keeps an eighth of it at most. The newest version of
#: each chain and the versions later ones will be encoded against are kept apart (see :class:`Blobs`)
CACHE_BYTES = 4 * 1024 * 1024

Key = tuple[Any, ...]
Typed = tuple[str, bytes]


class BrokenDelta(Exception):
    """A delta's base is missing or is not the version it was compressed against."""


def is_encoded(tag: str) -> bool:
    return tag.startswith(ROOT) or tag.startswith(DELTA)


def _eligible(value: Typed) -> bool:
    tag, data = value
    return len(data) >= MIN_ENCODE and "+" not in tag and not is_encoded(tag) and tag != "empty"


_TAGS: dict[str, str] = {}


def _tagged(prefix: str, tag: str) -> str:
    """``prefix + tag``, one string object per distinct tag (a value's tag is kept with every version)."""
    joined = prefix + tag
    return _TAGS.setdefault(joined, joined)


def _future_base(index: int, length: int) -> bool:
    """Version ``index`` of a chain of ``length`` versions is the base of a version still to come:
    version ``m`` has base ``m & (m - 1)``, so ``index`` is one for ``m = index + 2**j`` with ``2**j``
    below its lowest set bit; 0 is the base of every power of two."""
    return index == 0 or index + ((index & -index) >> 1) >= length


def _header(base_version: Any, base: bytes) -> bytes:
    ver = json.dumps(base_version).encode()
    return len(ver).to_bytes(2, "big") + ver + zlib.crc32(base).to_bytes(4, "big")


def _split(data: bytes) -> tuple[Any, int, bytes]:
    size = int.from_bytes(data[:2], "big")
    version = json.loads(data[2 : 2 + size])
    crc = int.from_bytes(data[2 + size : 6 + size], "big")
    return version, crc, data[6 + size :]


class Blobs(dict[Key, Typed]):
    """The blob dict ``(thread_id, ns, channel, version) -> (type, bytes)``, encoded inside (see the module).

    Plain ``dict`` operations other than ``[]``, ``get`` and assignment see the encoded values. A
    thread loaded again (after an eviction, a restart, a handoff) goes on with its chains where the
    stored values end them (:meth:`resume`), so its next version is still a delta.

    Decoded versions are kept two ways. The *hot* ones: the newest version of each chain (what the
    next read wants) and the versions a later one will be encoded against (about log2(n) of them,
    which also shorten the decoding of any newer version), while they are that; they belong to their
    thread and go with it (``hot_bytes``). The others read lately (time travel) are in an LRU of
    ``cache_bytes``.
    """

    def __init__(self, *args: Any, cache_bytes: int = CACHE_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (thread_id, ns, channel) -> the versions of its chain, in the order they were put
        self._chains: dict[tuple[Any, ...], list[Any]] = {}
        #: (thread_id, ns, channel) -> version -> its index in the chain
        self._index: dict[tuple[Any, ...], dict[Any, int]] = {}
        #: thread_id -> the (thread_id, ns, channel) of its chains (forgetting a thread reads only these)
        self._by_thread: dict[Any, set[tuple[Any, ...]]] = {}
        #: (thread_id, ns, channel) -> version -> decoded bytes of its hot versions
        self._hot: dict[tuple[Any, ...], dict[Any, bytes]] = {}
        self._hot_bytes = 0
        self._decoded: OrderedDict[Key, bytes] = OrderedDict()
        self._decoded_bytes = 0
        self.cache_bytes = cache_bytes
        self._cache_lock = threading.Lock()

    # -- writes ---------------------------------------------------------------------------------

    def __setitem__(self, key: Key, value: Typed) -> None:
        if dict.__contains__(self, key):  # decoded versions are kept only of keys the dict holds
            self._drop_decoded(key)
        if len(value[1]) >= MIN_ENCODE and _eligible(value):
            value = self._encode(key, value)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Key) -> None:
        self._drop_decoded(key)
        dict.__delitem__(self, key)

    def pop(self, key: Key, *default: Any) -> Any:
        self._drop_decoded(key)
        return dict.pop(self, key, *default)

    def _drop_decoded(self, key: Key) -> None:
        hot = self._hot.get(key[:3])
        if key in self._decoded or (hot is not None and key[3] in hot):
            with self._cache_lock:
                data = self._decoded.pop(key, None)
                if data is not None:
                    self._decoded_bytes -= len(data)
                data = hot.pop(key[3], None) if hot is not None else None
                if data is not None:
                    self._hot_bytes -= len(data)

    def _encode(self, key: Key, value: Typed) -> Typed:
        tag, data = value
        chain_key = key[:3]
        chain = self._chains.get(chain_key)
        n = len(chain) if chain is not None else 0
        encoded: Typed | None = None
        if n:
            assert chain is not None
            base_key = (*chain_key, chain[n & (n - 1)])
            base = self._inner(base_key) if dict.__contains__(self, base_key) else None
            if base is not None:
                frame = compress(data, level=LEVEL, zstd_dict=ZstdDict(base, is_raw=True))
                encoded = (_tagged(DELTA, tag), _header(base_key[3], base) + frame)
        if encoded is None:
            chain = self._chains[chain_key] = []
            self._index[chain_key] = {}
            self._by_thread.setdefault(chain_key[0], set()).add(chain_key)
            encoded = (_tagged(ROOT, tag), compress(data, level=LEVEL))
        assert chain is not None
        self._index[chain_key][key[3]] = len(chain)
        chain.append(key[3])
        # incompressible: kept whole (still a valid base), and read as it is: nothing to keep decoded
        whole = len(encoded[1]) >= len(data)
        with self._cache_lock:
            self._cool(chain_key, newest=key)
            if not whole:
                self._keep_hot(key, data)
        return value if whole else encoded

    # -- reads ----------------------------------------------------------------------------------

    def __getitem__(self, key: Key) -> Typed:
        value = dict.__getitem__(self, key)
        if is_encoded(value[0]):
            return self._decode(key, value)
        return value

    def get(self, key: Key, default: Any = None) -> Any:
        value = dict.get(self, key)
        if value is None:
            return default
        if is_encoded(value[0]):
            return self._decode(key, value)
        return value

    def raw(self, key: Key, default: Any = None) -> Any:
        """The value as stored (encoded), for backups, copies and size accounting."""
        return dict.get(self, key, default)

    def _decode(self, key: Key, value: Typed) -> Typed:
        tag = value[0]
        inner = tag[len(ROOT) :]
        return inner, self._inner(key, value)

    def _inner(self, key: Key, value: Typed | None = None) -> bytes:
        """The bytes LangGraph's serde wrote for ``key`` (decoding its chain of bases)."""
        hot = self._hot.get(key[:3])
        if hot is not None:
            data = hot.get(key[3])
            if data is not None:
                return data
        cached = self._decoded.get(key)
        if cached is not None:
            with self._cache_lock:
                if key in self._decoded:
                    self._decoded.move_to_end(key)
            return cached
        if value is None:
            value = dict.__getitem__(self, key)
        tag, data = value
        if tag.startswith(ROOT):
            out = decompress(data)
        elif tag.startswith(DELTA):
            base_version, crc, frame = _split(data)
            base_key = (*key[:3], base_version)
            if not dict.__contains__(self, base_key):
                raise BrokenDelta(f"channel {key[2]!r} version {key[3]!r}: its base version {base_version!r} is gone")
            base = self._inner(base_key)
            if zlib.crc32(base) != crc:
                raise BrokenDelta(
                    f"channel {key[2]!r} version {key[3]!r}: its base version {base_version!r} has other content"
                )
            out = decompress(frame, zstd_dict=ZstdDict(base, is_raw=True))
        else:
            return data
        self._remember(key, out)
        return out

    def _remember(self, key: Key, data: bytes) -> None:
        chain_key = key[:3]
        chain = self._chains.get(chain_key)
        at = self._index.get(chain_key, {}).get(key[3])
        if chain is not None and at is not None and (at == len(chain) - 1 or _future_base(at, len(chain))):
            with self._cache_lock:
                if dict.__contains__(self, key):
                    self._keep_hot(key, data)
            return
        if len(data) > self.cache_bytes:
            return
        with self._cache_lock:
            cache = self._decoded
            if key in cache:
                cache.move_to_end(key)
                return
            cache[key] = data
            self._decoded_bytes += len(data)
            while self._decoded_bytes > self.cache_bytes and cache:
                _old, dropped = cache.popitem(last=False)
                self._decoded_bytes -= len(dropped)

    def _keep_hot(self, key: Key, data: bytes) -> None:
        """Under the cache lock."""
        hot = self._hot.setdefault(key[:3], {})
        if key[3] not in hot:
            hot[key[3]] = data
            self._hot_bytes += len(data)
        dropped = self._decoded.pop(key, None)
        if dropped is not None:
            self._decoded_bytes -= len(dropped)

    def _cool(self, chain_key: tuple[Any, ...], newest: Key) -> None:
        """The chain just grew: its versions that are no longer the newest nor a base of one still to
        come stop being hot. Under the cache lock."""
        hot = self._hot.get(chain_key)
        if not hot:
            return
        index, length = self._index[chain_key], len(self._chains[chain_key])
        for version in [v for v in hot if v != newest[3]]:
            at = index.get(version)
            if at is None or (at != length - 1 and not _future_base(at, length)):
                self._hot_bytes -= len(hot.pop(version))

    @property
    def decoded_bytes(self) -> int:
        """Bytes of decoded versions kept for the next reads (on top of the encoded values): the hot
        ones and the LRU."""
        return self._hot_bytes + self._decoded_bytes

    @property
    def hot_bytes(self) -> int:
        """Bytes of the hot decoded versions (the newest of each chain and the bases still to be used)."""
        return self._hot_bytes

    # -- upkeep ---------------------------------------------------------------------------------

    def forget(self, thread_ids: Iterable[str]) -> None:
        """Drop what is known of these threads' chains and decoded versions (evicted, deleted, replaced)."""
        wanted = set(thread_ids)
        if not wanted:
            return
        chain_keys = [k for tid in wanted for k in self._by_thread.pop(tid, ())]
        for chain_key in chain_keys:
            self._chains.pop(chain_key, None)
            self._index.pop(chain_key, None)
        with self._cache_lock:
            for chain_key in chain_keys:
                hot = self._hot.pop(chain_key, None)
                if hot:
                    self._hot_bytes -= sum(map(len, hot.values()))
            if self._decoded:
                for key in [k for k in self._decoded if k[0] in wanted]:
                    self._decoded_bytes -= len(self._decoded.pop(key))

    def materialize(self, keys: Iterable[Key]) -> dict[Key, Typed]:
        """The values of ``keys`` re-encoded so they need no base (before the bases they use are deleted):
        key -> new encoded value. The caller stores them (with ``dict.__setitem__`` semantics: ``store_raw``)."""
        out: dict[Key, Typed] = {}
        for key in keys:
            value = dict.get(self, key)
            if value is None or not value[0].startswith(DELTA):
                continue
            inner_tag, data = value[0][len(DELTA) :], self._inner(key, value)
            frame = compress(data, level=LEVEL)
            out[key] = (_tagged(ROOT, inner_tag), frame) if len(frame) < len(data) else (inner_tag, data)
        return out

    def store_raw(self, key: Key, value: Typed) -> None:
        """Store an encoded (or plain) value as it is."""
        self._drop_decoded(key)
        dict.__setitem__(self, key, value)

    def resume(self, keys: Iterable[Key]) -> int:
        """Go on with the chains of values just stored as they were (``store_raw``: a thread loaded
        from the store): each channel's chain is its encoded versions since the newest root frame,
        in version order, so the next version is encoded against one of them. Channels whose chain
        this dict already knows stay as they are. Returns how many chains were resumed.

        Any base is correct (a delta names its base and checks its CRC); the order only keeps the
        skip-delta bound on how many frames a version decodes through."""
        found: dict[tuple[Any, ...], list[tuple[Any, bool]]] = {}
        for key in keys:
            value = dict.get(self, key)
            if value is not None and is_encoded(value[0]):
                found.setdefault(key[:3], []).append((key[3], value[0].startswith(ROOT)))
        resumed = 0
        for chain_key, versions in found.items():
            if chain_key in self._chains:
                continue
            try:
                versions.sort()
            except TypeError:  # versions of mixed types: no order to go on from
                continue
            roots = [i for i, (_version, root) in enumerate(versions) if root]
            if roots:
                chain = self._chains[chain_key] = [version for version, _root in versions[roots[-1] :]]
                self._index[chain_key] = {version: at for at, version in enumerate(chain)}
                self._by_thread.setdefault(chain_key[0], set()).add(chain_key)
                resumed += 1
        return resumed

    def bases(self, key: Key) -> list[Key]:
        """The chain of bases ``key`` decodes through (nearest first)."""
        out: list[Key] = []
        value = dict.get(self, key)
        while value is not None and value[0].startswith(DELTA):
            base_version, _crc, _frame = _split(value[1])
            key = (*key[:3], base_version)
            out.append(key)
            value = dict.get(self, key)
        return out

    def plain(self) -> dict[Key, Typed]:
        """Every value decoded (for tests and tools that compare with what LangGraph put)."""
        return {k: self[k] for k in self}


__all__ = ["CACHE_BYTES", "DELTA", "MIN_ENCODE", "ROOT", "Blobs", "BrokenDelta", "is_encoded"]
