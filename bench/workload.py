"""Realistic checkpoints: conversations recorded from the real chat graph, replayed into any saver.

A template is one 10-turn conversation (20 messages, 30 checkpoints, their writes and blobs)
recorded by running :func:`agent.build_graph` with the offline responder on an ``InMemorySaver``.
:func:`replay` puts the same checkpoints into another saver, thread by thread, through the
public ``put``/``put_writes`` API, so every saver stores exactly what a graph would have stored.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent import OfflineResponder, build_graph, chat_turn

TURNS_PER_THREAD = 10  # 10 turns = 20 messages = 30 checkpoints

_NAMES = ("Ada", "Bob", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana")
_LIKES = ("green tea", "chess", "hiking", "jazz", "sourdough", "cycling", "poetry", "astronomy")


def user_text(seed: int, turn: int) -> str:
    """The user's message of ``turn`` in a conversation (deterministic, with facts to remember)."""
    name = _NAMES[seed % len(_NAMES)]
    like = _LIKES[(seed + turn) % len(_LIKES)]
    if turn == 0:
        return f"Hi, my name is {name} and I live in city number {seed}."
    if turn % 3 == 1:
        return f"I like {like}. Can you suggest something to read about {like} this weekend?"
    if turn % 3 == 2:
        return "What is my name, and what did I tell you I like?"
    return f"Thanks! Let me add that I work on project {seed * 7 + turn} and my favourite number is {turn}."


@dataclass(frozen=True)
class Step:
    """One checkpoint of a template conversation, ready to be put again."""

    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    new_versions: dict[str, Any]
    parent_id: str | None
    writes: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...]  # (task_id, task_path, ((channel, value), ...))


@dataclass(frozen=True)
class Template:
    steps: tuple[Step, ...]

    @property
    def checkpoints(self) -> int:
        return len(self.steps)

    def values(self) -> list[Any]:
        """Every channel value and write value (what a caching serializer may pin)."""
        out: list[Any] = []
        for step in self.steps:
            out.extend(step.checkpoint["channel_values"].values())
            for _task, _path, writes in step.writes:
                out.extend(v for _c, v in writes)
        return out


def record_templates(count: int, turns: int = TURNS_PER_THREAD) -> list[Template]:
    """Run ``count`` conversations of ``turns`` turns on the real chat graph and record them."""
    mem = InMemorySaver()
    graph = build_graph(mem, OfflineResponder())
    templates = []
    for seed in range(count):
        tid = f"template-{seed}"
        for turn in range(turns):
            chat_turn(graph, tid, user_text(seed, turn))
        templates.append(_extract(mem, tid))
    return templates


def _extract(mem: InMemorySaver, tid: str) -> Template:
    tuples = list(mem.list({"configurable": {"thread_id": tid}}))[::-1]
    steps = []
    previous: dict[str, Any] = {}
    for tup in tuples:
        versions = tup.checkpoint["channel_versions"]
        new_versions = {k: v for k, v in versions.items() if previous.get(k) != v}
        previous = versions
        cid = tup.config["configurable"]["checkpoint_id"]
        parent = tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None
        by_task: dict[str, tuple[str, list[tuple[int, str, Any]]]] = {}
        for (task_id, idx), (_t, channel, typed, path) in mem.writes.get((tid, "", cid), {}).items():
            by_task.setdefault(task_id, (path, []))[1].append((idx, channel, mem.serde.loads_typed(typed)))
        writes = tuple(
            (task, path, tuple((c, v) for _i, c, v in sorted(items, key=lambda x: (x[0] < 0, x[0]))))
            for task, (path, items) in by_task.items()
        )
        steps.append(Step(tup.checkpoint, tup.metadata, new_versions, parent, writes))
    return Template(tuple(steps))


def replay(saver: Any, thread_id: str, template: Template, fresh: str | None = None) -> str:
    """Put every checkpoint (and its writes) of ``template`` into ``thread_id``; return the last id.

    With ``fresh`` set, checkpoint ids are new (newer than any existing one) and channel versions
    get the suffix ``fresh``, so the thread's history grows instead of being overwritten.
    """
    ids: dict[str, str] = {}
    last = ""
    for step in template.steps:
        checkpoint = step.checkpoint
        new_versions = step.new_versions
        parent = step.parent_id
        if fresh is not None:
            new_id = str(uuid6())
            ids[checkpoint["id"]] = new_id
            parent = ids.get(parent, last) if parent else (last or None)
            versions = {k: f"{v}{fresh}" for k, v in checkpoint["channel_versions"].items()}
            checkpoint = {**checkpoint, "id": new_id, "channel_versions": versions}
            new_versions = {k: f"{v}{fresh}" for k, v in new_versions.items()}
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        if parent:
            config["configurable"]["checkpoint_id"] = parent
        saved = saver.put(config, checkpoint, step.metadata, new_versions)
        for task_id, path, writes in step.writes:
            saver.put_writes(saved, list(writes), task_id, path)
        last = saved["configurable"]["checkpoint_id"]
    return last


def fill(saver: Any, templates: list[Template], threads: int, prefix: str = "t", fresh: str | None = None) -> int:
    """Replay templates into ``threads`` threads named ``prefix0..``; return the checkpoints put."""
    n = 0
    for i in range(threads):
        template = templates[i % len(templates)]
        replay(saver, f"{prefix}{i}", template, fresh)
        n += template.checkpoints
    return n


class PinnedSerde(JsonPlusSerializer):
    """A JsonPlusSerializer that serialises the pinned template values once and reuses the bytes.

    Used only to fill large states quickly: the stored bytes are the same as without it, only the
    repeated ``dumps_typed`` of identical template values is skipped (for every saver alike).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pinned: dict[int, tuple[Any, tuple[str, bytes]]] = {}
        self.enabled = True

    def pin(self, values: list[Any]) -> None:
        for value in values:
            self._pinned[id(value)] = (value, super().dumps_typed(value))

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if self.enabled:
            hit = self._pinned.get(id(obj))
            if hit is not None and hit[0] is obj:
                return hit[1]
        return super().dumps_typed(obj)


def pinned_serde(templates: list[Template]) -> PinnedSerde:
    serde = PinnedSerde()
    for template in templates:
        serde.pin(template.values())
    return serde


# -- single operations --------------------------------------------------------------------------


class OpFactory:
    """Builds the arguments of single ``put``/``put_writes`` calls shaped like a real chat turn."""

    def __init__(self, template: Template) -> None:
        self.last = template.steps[-1]  # the checkpoint after the 10th reply: 20 messages
        self._n = itertools.count()

    def put_args(self, thread_id: str, parent_id: str | None) -> tuple[dict, Checkpoint, CheckpointMetadata, dict]:
        n = next(self._n)
        step = self.last
        suffix = f".op{n}"
        versions = {k: f"{v}{suffix}" for k, v in step.checkpoint["channel_versions"].items()}
        values = dict(step.checkpoint["channel_values"])
        # a fresh list, as a graph would hand over: the saver serialises it on every put
        values["messages"] = list(values["messages"])
        checkpoint = {
            **step.checkpoint,
            "id": str(uuid6()),
            "channel_versions": versions,
            "channel_values": values,
        }
        new_versions = {k: f"{v}{suffix}" for k, v in step.new_versions.items()}
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        if parent_id:
            config["configurable"]["checkpoint_id"] = parent_id
        return config, checkpoint, step.metadata, new_versions

    def writes_args(self) -> tuple[list[tuple[str, Any]], str]:
        n = next(self._n)
        reply = AIMessage(content=f"Reply number {n}: noted, and here is a suggestion for the weekend.")
        return [("messages", [reply]), ("branch:to:respond", None)], str(uuid6())


__all__ = [
    "TURNS_PER_THREAD",
    "OpFactory",
    "PinnedSerde",
    "Step",
    "Template",
    "fill",
    "pinned_serde",
    "record_templates",
    "replay",
    "user_text",
]
