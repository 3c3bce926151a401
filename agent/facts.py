"""Thread memory for the offline responder: extract user facts, answer questions.

All state is re-derived from the message history on every call, so whatever
the bot "remembers" comes from the checkpointed thread and nothing else.

Performance: only the first :data:`SCAN_LIMIT` characters of each message are
examined, and every regex is linear (no nested quantifiers), so a 10 MB message
costs about as much as a short one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.messages import message_role, message_text

#: Only this many characters of each message are scanned for facts/questions.
SCAN_LIMIT = 2_000

_I = re.IGNORECASE
# A sentence runs up to ., ! or ?; a '.' followed by a non-space ("3.30") does
# not end it. The two branches never match the same character: linear time.
_SENTENCE_RE = re.compile(r"(?:[^.!?\n]|\.(?=\S))+[.!?]*")
_CLAUSE = r"(?P<v>[^,;:!?.\n]{1,80})"
_CUT_RE = re.compile(r"\s+(?:and|but|so|because|though|although|who|which|btw)\b.*$", _I)
_TRAILING_RE = re.compile(r"\s+(?:now|currently|nowadays|these days|at the moment|today|too|as well)$", _I)
_QUOTES = " \t\"'`“”‘’"

_NAME_RES = (
    re.compile(r"\bmy name(?: is|'s)\s+" + _CLAUSE, _I),
    re.compile(r"\bi(?: am|'m) called\s+" + _CLAUSE, _I),
    re.compile(r"^(?:please\s+)?call me\s+" + _CLAUSE, _I),
)
_LOCATION_RES = (
    re.compile(r"\bi(?: now| currently)? (?:live|reside|stay) in\s+" + _CLAUSE, _I),
    re.compile(r"\bi(?: am|'m) (?:living|based|staying) in\s+" + _CLAUSE, _I),
    re.compile(r"\bi(?: just)? moved to\s+" + _CLAUSE, _I),
)
_ORIGIN_RES = (re.compile(r"\bi(?: am|'m) (?:originally )?from\s+" + _CLAUSE, _I),)
_AGE_RES = (
    re.compile(r"\bi(?: am|'m)\s+(?P<v>\d{1,3})(?:\s+years?\s+old\b|\s*y/?o\b|\s*[.!]*$)", _I),
    re.compile(r"\bmy age is\s+(?P<v>\d{1,3})\b", _I),
)
_OCCUPATION_RES = (
    re.compile(r"\bi(?: am|'m)\s+(?P<v>(?:a|an)\s+[^,;:!?.\n]{1,80})", _I),
    re.compile(r"\bi work as\s+(?:a\s+|an\s+)?" + _CLAUSE, _I),
    re.compile(r"\bmy (?:job|occupation|profession) is\s+(?:a\s+|an\s+)?" + _CLAUSE, _I),
)
_FAVORITE_RE = re.compile(r"\bmy (?:favou?rite|fav) (?P<k>[a-z]+(?: [a-z]+){0,2}?)(?: is|'s| are)\s+" + _CLAUSE, _I)
_MEMO_RE = re.compile(
    r"(?:^|,\s*|\band\s+)(?:please\s+|can you\s+|could you\s+|would you\s+|will you\s+)?"
    r"(?:remember|don't forget|do not forget|keep in mind|note)\s+(?:that\s+)?:?\s*(?P<v>[^?!\n]{1,200})",
    _I,
)
_MEMO_REJECT_RE = re.compile(r"^(?:what|where|who|whom|how|when|which|why|whether|if|me|it|this|anything)\b", _I)

_GREETING_RE = re.compile(
    r"^\W*(?:hi|hello|hey|hiya|howdy|greetings|yo|hola|ola|olá|good (?:morning|afternoon|evening|day))\b", _I
)
_QUESTION_START_RE = re.compile(
    r"^\W*(?:what|what's|whats|where|who|whom|how|which|when|why|do|does|did|can|could|would|will|"
    r"is|are|am|tell me|remind me)\b",
    _I,
)
_Q_NAME_RE = re.compile(r"\bmy name\b|\bwho am i\b|\bwhat am i called\b", _I)
_Q_LOCATION_RE = re.compile(
    r"\bwhere (?:do i|i) (?:live|reside|stay)\b|\bmy (?:city|town|location|address)\b|\bwhere am i based\b", _I
)
_Q_ORIGIN_RE = re.compile(r"\bwhere (?:am i|i am|i'm) from\b", _I)
_Q_FAVORITE_RE = re.compile(r"\bmy (?:favou?rite|fav) (?P<k>[a-z]+(?: [a-z]+){0,2})", _I)
_Q_AGE_RE = re.compile(r"\bhow old am i\b|\bmy age\b", _I)
_Q_OCCUPATION_RE = re.compile(
    r"\bwhat do i do\b|\bmy (?:job|occupation|profession|work)\b|\bwhat do i work\b|\bwhat am i\??\s*$", _I
)
_Q_MEMO_RE = re.compile(
    r"\byou to remember\b|\bshould you remember\b|\bmy (?:notes|reminders)\b|\btold you to (?:remember|note)\b", _I
)
_Q_SUMMARY_RE = re.compile(
    r"\babout me\b|\babout myself\b|\bwhat do you (?:know|remember)\b|\bwhat have i told you\b", _I
)

_KEY_SPELLING = {"colour": "color", "flavour": "flavor", "favourite": "favorite"}
_PRONOUNS = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i'm": "you're",
    "i've": "you've",
    "i'll": "you'll",
    "i'd": "you'd",
}
_WORD_RE = re.compile(r"[A-Za-z']+")


@dataclass
class UserFacts:
    """Facts the user stated in one thread; a later statement replaces an earlier one."""

    name: str | None = None
    location: str | None = None
    origin: str | None = None
    age: str | None = None
    occupation: str | None = None
    favorites: dict[str, str] = field(default_factory=dict)
    memos: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        """Return True when nothing is known about the user."""
        return not any((self.name, self.location, self.origin, self.age, self.occupation, self.favorites, self.memos))

    def absorb(self, text: str) -> tuple[list[str], list[str]]:
        """Update from one user message; return ``(facts learned, memos learned)`` as phrases."""
        learned: list[str] = []
        memos: list[str] = []
        for sentence in split_sentences(text):
            self._absorb_sentence(sentence, learned, memos)
        return _dedupe(learned), _dedupe(memos)

    def _absorb_sentence(self, sentence: str, learned: list[str], memos: list[str]) -> None:
        question = is_question(sentence)
        if value := _first_value(_NAME_RES, sentence):
            self.name = _pretty_name(value)
            learned.append(f"your name is {self.name}")
        if value := _first_value(_LOCATION_RES, sentence):
            self.location = value
            learned.append(f"you live in {value}")
        if value := _first_value(_ORIGIN_RES, sentence):
            self.origin = value
            learned.append(f"you are from {value}")
        if value := _first_value(_AGE_RES, sentence):
            self.age = value
            learned.append(f"you are {value} years old")
        if not question and (value := _first_value(_OCCUPATION_RES, sentence)):
            self.occupation = value if re.match(r"(?:a|an)\s", value, _I) else _with_article(value)
            learned.append(f"you are {self.occupation}")
        for match in _FAVORITE_RE.finditer(sentence):
            key, value = _normalize_key(match.group("k")), _clean_value(match.group("v"))
            if value:
                self.favorites[key] = value
                learned.append(f"your favorite {key} is {value}")
        if not question or "remember that" in sentence.lower():
            match = _MEMO_RE.search(sentence)
            memo = swap_pronouns(match.group("v").strip().rstrip(".!?").strip(_QUOTES)) if match else ""
            if memo and not _MEMO_REJECT_RE.match(memo):
                self.memos = [m for m in self.memos if m.lower() != memo.lower()] + [memo]
                memos.append(memo)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into trimmed sentences (terminal punctuation kept)."""
    normalized = text.replace("’", "'")
    return [s for s in (m.group(0).strip() for m in _SENTENCE_RE.finditer(normalized)) if s]


def is_question(sentence: str) -> bool:
    """Return True for sentences with a '?' or starting like a question."""
    return "?" in sentence or bool(_QUESTION_START_RE.match(sentence))


def swap_pronouns(text: str) -> str:
    """Turn first person into second person: "I like my tea" -> "you like your tea"."""
    previous = ""

    def swap(match: re.Match[str]) -> str:
        nonlocal previous
        word = match.group(0)
        lower = word.lower()
        out = "are" if lower == "am" and previous == "i" else _PRONOUNS.get(lower, word)
        previous = lower
        return out

    return _WORD_RE.sub(swap, text)


def extract_facts(messages: Sequence[Any], scan_limit: int = SCAN_LIMIT) -> UserFacts:
    """Collect :class:`UserFacts` from the user messages in ``messages``, oldest first."""
    facts = UserFacts()
    for message in messages:
        if message_role(message) == "user":
            facts.absorb(message_text(message, scan_limit))
    return facts


def compose_reply(messages: Sequence[Any], scan_limit: int = SCAN_LIMIT) -> str:
    """Deterministically reply to the last user message in ``messages``.

    Greets, acknowledges newly stated facts, answers questions about known
    facts, and otherwise gives a hint that mentions the turn number.
    """
    users = [m for m in messages if message_role(m) == "user"]
    if not users:
        return "Hello! Say something and I'll reply."
    facts = extract_facts(users[:-1], scan_limit)
    latest = message_text(users[-1], scan_limit)
    learned, memos = facts.absorb(latest)
    sentences = split_sentences(latest)
    greeting = bool(sentences) and bool(_GREETING_RE.match(sentences[0]))
    answers = _answers(sentences, facts)

    parts: list[str] = []
    if greeting:
        parts.append(f"Hello, {facts.name}!" if facts.name else "Hello!")
    if learned:
        parts.append(f"Got it: {_join(learned)}. I'll remember that.")
    parts.extend(f"Noted, I'll remember that {memo}." for memo in memos)
    parts.extend(answers)
    if greeting and len(parts) == 1:
        parts.append(
            "What can I do for you today?" if facts.name else "What's your name? You can tell me with 'my name is ...'."
        )
    if not parts:
        parts.append(
            f"This is message {len(users)} in this thread. Tell me something about yourself, "
            "e.g. 'my name is Ana', and ask me about it later."
        )
    return " ".join(parts)


def _answers(sentences: Sequence[str], facts: UserFacts) -> list[str]:
    """Answer each recognised question in ``sentences`` once."""
    answers: dict[str, str] = {}
    for sentence in sentences:
        if not is_question(sentence):
            continue
        found: dict[str, str] = {}
        if _Q_MEMO_RE.search(sentence):
            found["memos"] = _memo_answer(facts)
        if _Q_NAME_RE.search(sentence):
            found["name"] = f"Your name is {facts.name}." if facts.name else _unknown("your name", "my name is ...")
        if _Q_ORIGIN_RE.search(sentence):
            found["origin"] = _origin_answer(facts)
        elif _Q_LOCATION_RE.search(sentence):
            found["location"] = _location_answer(facts)
        if _Q_AGE_RE.search(sentence):
            found["age"] = (
                f"You are {facts.age} years old." if facts.age else _unknown("your age", "I am ... years old")
            )
        if _Q_OCCUPATION_RE.search(sentence):
            found["occupation"] = (
                f"You are {facts.occupation}." if facts.occupation else _unknown("what you do", "I'm a ...")
            )
        for match in _Q_FAVORITE_RE.finditer(sentence):
            key, value = _lookup_favorite(facts, match.group("k"))
            found[f"favorite:{key}"] = (
                f"Your favorite {key} is {value}."
                if value
                else _unknown(f"your favorite {key}", f"my favorite {key} is ...")
            )
        if not found and _Q_SUMMARY_RE.search(sentence):
            found["summary"] = _summary_answer(facts)
        for intent, answer in found.items():
            answers.setdefault(intent, answer)
    return list(answers.values())


def _first_value(patterns: Sequence[re.Pattern[str]], sentence: str) -> str | None:
    for pattern in patterns:
        match = pattern.search(sentence)
        if match and (value := _clean_value(match.group("v"))):
            return value
    return None


def _clean_value(raw: str) -> str:
    return _TRAILING_RE.sub("", _CUT_RE.sub("", raw.strip())).strip(_QUOTES)


def _normalize_key(raw: str) -> str:
    return " ".join(_KEY_SPELLING.get(word, word) for word in raw.lower().split())


def _pretty_name(raw: str) -> str:
    name = " ".join(raw.split()[:5])
    return name.title() if name.islower() else name


def _with_article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _unknown(what: str, example: str) -> str:
    return f"I don't know {what} yet. Tell me with '{example}'."


def _location_answer(facts: UserFacts) -> str:
    if facts.location:
        return f"You live in {facts.location}."
    if facts.origin:
        return f"I don't know where you live, but you told me you are from {facts.origin}."
    return _unknown("where you live", "I live in ...")


def _origin_answer(facts: UserFacts) -> str:
    if facts.origin:
        return f"You are from {facts.origin}."
    if facts.location:
        return f"I don't know where you are from, but you live in {facts.location}."
    return _unknown("where you are from", "I'm from ...")


def _lookup_favorite(facts: UserFacts, raw_key: str) -> tuple[str, str | None]:
    words = _normalize_key(raw_key).split()
    for size in range(len(words), 0, -1):
        key = " ".join(words[:size])
        if key in facts.favorites:
            return key, facts.favorites[key]
    return (words[0] if words else raw_key), None


def _memo_answer(facts: UserFacts) -> str:
    if not facts.memos:
        return "You haven't asked me to remember anything yet. Say 'remember that ...'."
    return "You asked me to remember: " + "; ".join(facts.memos[-10:]) + "."


def _summary_answer(facts: UserFacts) -> str:
    if facts.is_empty():
        return "I don't know anything about you yet. Tell me something, e.g. 'my name is Ana'."
    items: list[str] = []
    if facts.name:
        items.append(f"your name is {facts.name}")
    if facts.location:
        items.append(f"you live in {facts.location}")
    if facts.origin:
        items.append(f"you are from {facts.origin}")
    if facts.age:
        items.append(f"you are {facts.age} years old")
    if facts.occupation:
        items.append(f"you are {facts.occupation}")
    items.extend(f"your favorite {key} is {value}" for key, value in facts.favorites.items())
    if facts.memos:
        items.append("you asked me to remember: " + "; ".join(facts.memos[-10:]))
    return "Here is what I know about you: " + _join(items) + "."


__all__ = [
    "SCAN_LIMIT",
    "UserFacts",
    "compose_reply",
    "extract_facts",
    "is_question",
    "split_sentences",
    "swap_pronouns",
]
