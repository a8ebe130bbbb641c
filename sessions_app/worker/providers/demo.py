"""The built-in `demo` model: offline, and plainly a demo.

It answers in readable Markdown made from the prompt's own words, says that it is the demo
model, and streams at a pace a person can follow (about 30 words a second: a few seconds an
answer, long enough to press Stop). Each turn words its answer differently, so Regenerate
shows a new version; the same turn always gets the same answer.

modelOptions: `tokens` (exactly that many words, the same for the same prompt whatever the
turn: tests and benchmarks compare answers with `demo_tokens`), `rate` (words per second,
default 30), `pauseAfter` and `pauseSeconds` (go silent mid-answer), `failAfter` (raise a
provider error after that many words), `stamp` (prefix each word with its emit time, for
benchmarks).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import count as counting
from itertools import islice
from typing import Any

from sessions_app.worker.providers.base import Finish, ModelRequest, ProviderError, StreamItem, TextDelta, Usage

STOPWORDS = frozenset(
    """a about after all also am an and any are as at be because been but by can could did do
    does for from had has have how i if in into is it its just me more my no not of on or our
    out please so some than that the their them then there these they this to too up us was
    we were what when where which while who why will with would you your""".split()
)

OPENINGS = (
    "**{topic}**: a demo answer to “{quote}”. This is the built-in demo model: no AI read your "
    "message, it only reuses your words, so that you can watch an answer stream, stop it, or ask for another version.",
    "**{topic}**, as the demo model sees it. You asked “{quote}”; no language model is connected, so this "
    "answer is stitched together from your own words to show how answers stream to every device.",
    "**{topic}**: the demo model answering “{quote}”. Nothing here comes from a real AI; the words are "
    "yours, rearranged, so that the chat has something to stream while you try it out.",
)
INTROS = (
    "Here is how a real assistant might organise it:",
    "Three things worth a thought:",
    "A quick outline, in demo form:",
    "If this were a real answer, it would cover:",
)
POINTS = (
    "Start with what *{word}* means for you, and write it down in one sentence.",
    "Split *{word}* into small steps and check each one before the next.",
    "Compare two options for *{word}* side by side before you decide.",
    "Give *{word}* a little more time than you think it needs.",
    "Ask someone who has done *{word}* before what surprised them.",
    "Keep *{word}* simple at first; details can come later.",
    "Note one open question about *{word}* and come back to it tomorrow.",
    "A real model would now say something clever about *{word}*.",
)
CLOSINGS = (
    "Press **Regenerate** for a differently worded version, or pick a real model in the session settings.",
    "Try **Stop** while an answer streams, or send another message alongside this one.",
    "Everyone in this session sees this answer as it streams, on every device.",
    "Set up OpenAI or Anthropic (docs/providers.md) and choose it in the session settings for real answers.",
)
MORE = "More demo text, part {n}, about *{word}*:"


def _prompt_of(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return "".join(p.get("text", "") for p in message["parts"] if p.get("type") == "text")
    return ""


def _keywords(prompt: str) -> list[str]:
    """Up to five words of the prompt that carry its meaning, in their order."""
    found: list[str] = []
    for word in re.findall(r"[^\W_][\w'’-]*", prompt):
        if word.lower() in STOPWORDS or (len(word) < 3 and not any(c.isdigit() for c in word)):
            continue
        if word.lower() not in (w.lower() for w in found):
            found.append(word)
        if len(found) == 5:
            break
    return found or re.findall(r"\S+", prompt)[:1] or ["your message"]


def _quote(prompt: str, limit: int = 80) -> str:
    text = " ".join(prompt.split()) or "(an empty message)"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _topic(words: list[str]) -> str:
    first = words[0][:1].upper() + words[0][1:]
    if len(words) == 1:
        return first
    return f"{', '.join([first, *words[1:-1]])} and {words[-1]}"


def _paragraphs(prompt: str, seed: str) -> Iterator[tuple[str, bool]]:
    """The answer's paragraphs, each made when it is needed, and whether it is past the
    answer's natural end (the text that only an explicit `tokens` asks for)."""
    digest = hashlib.blake2b(f"{prompt}\0{seed}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))  # varied wording, not security
    topic = _keywords(prompt)
    words = [w for w in topic if not w.isdigit()] or topic  # "what *3* means" reads badly
    yield rng.choice(OPENINGS).format(topic=_topic(topic), quote=_quote(prompt)), False
    points = rng.sample(POINTS, 3)
    bullets = [f"- {point.format(word=words[i % len(words)])}" for i, point in enumerate(points)]
    yield "\n".join([rng.choice(INTROS), *bullets]), False
    yield rng.choice(CLOSINGS), False
    for n in counting(2):
        point = rng.choice(POINTS).format(word=rng.choice(words))
        yield f"{MORE.format(n=n, word=words[n % len(words)])} {point}", True


def _token_stream(prompt: str, seed: str, *, natural: bool) -> Iterator[str]:
    """Words, each with the space after it; a new line or paragraph comes with the word
    that starts it. `natural`: stop at the answer's natural end."""
    for index, (paragraph, extra) in enumerate(_paragraphs(prompt, seed)):
        if extra and natural:
            return
        for line_index, line in enumerate(paragraph.split("\n")):
            lead = ("\n\n" if index else "") if line_index == 0 else "\n"
            for word_index, word in enumerate(line.split(" ")):
                yield f"{lead if word_index == 0 else ''}{word} "


def demo_tokens(prompt: str, count: int, seed: str = "") -> list[str]:
    """The words the demo model answers `prompt` with when asked for `count` of them (each
    a word and a space); `seed` varies the wording (the model uses the turn's id unless
    `tokens` is set)."""
    return list(islice(_token_stream(prompt, seed, natural=False), count))


def demo_answer(prompt: str, seed: str = "") -> list[str]:
    """The whole answer the demo model gives when no `tokens` option is set."""
    return list(_token_stream(prompt, seed, natural=True))


def _number(options: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError("provider_bad_request", f"demo option {key} must be a number")
    if not low <= value <= high:
        raise ProviderError("provider_bad_request", f"demo option {key} is between {low:g} and {high:g}")
    return float(value)


def _count(options: dict[str, Any], key: str) -> int | None:
    """A count option (tokens, pauseAfter, failAfter): a whole number, 0 to 100,000."""
    if key not in options:
        return None
    value = _number(options, key, 0, 0, 100_000)
    if value != int(value):
        raise ProviderError("provider_bad_request", f"demo option {key} must be a whole number")
    return int(value)


@dataclass(frozen=True)
class DemoOptions:
    count: int | None  # `tokens`; None: the answer's natural length
    rate: float
    pause_after: int | None
    pause_seconds: float
    fail_after: int | None
    stamp: bool


def parse_demo_options(options: dict[str, Any]) -> DemoOptions:
    """The demo model's options (ProviderError `provider_bad_request` for one that is not a
    number); other keys are ignored, so a session keeps a vendor's options while it tries the
    demo. A number out of its range, or a count that is not whole, is refused too."""
    return DemoOptions(
        count=_count(options, "tokens"),
        rate=_number(options, "rate", 30, 0.01, 100_000),
        pause_after=_count(options, "pauseAfter"),
        pause_seconds=_number(options, "pauseSeconds", 0, 0, 3600),
        fail_after=_count(options, "failAfter"),
        stamp=bool(options.get("stamp")),
    )


class DemoProvider:
    name = "demo"
    supports_tools = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        options = parse_demo_options(request.options)
        rate, pause_after, pause_seconds = options.rate, options.pause_after, options.pause_seconds
        fail_after, stamp = options.fail_after, options.stamp
        prompt = _prompt_of(request.messages)
        # Each word is made when it is due, not all before the first: a burst of 100 turns
        # spent ~6 ms of the worker's loop making answers before any first token went out.
        words = (
            islice(_token_stream(prompt, "", natural=False), options.count)
            if options.count is not None
            else _token_stream(prompt, request.turn_id, natural=True)
        )
        loop = asyncio.get_running_loop()
        due = loop.time()
        sent = 0
        for token in words:
            if fail_after is not None and sent >= fail_after:
                raise ProviderError("provider_unavailable", f"demo model failed after {sent} tokens (failAfter)")
            if pause_after is not None and sent == pause_after and pause_seconds:
                await asyncio.sleep(pause_seconds)
                due = loop.time()
            due += 1 / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield TextDelta(f"<{sent}@{time.time():.6f}>{token}" if stamp else token)
            sent += 1
        if fail_after is not None and fail_after == sent:
            raise ProviderError("provider_unavailable", f"demo model failed after {sent} tokens (failAfter)")
        yield Usage(input_tokens=len(prompt.split()), output_tokens=sent)
        yield Finish("stop")
