"""The conversation tree: where a new user message attaches, and a turn's context.

A turn's context is the conversation as one shared timeline shows it above the turn's
message (docs/protocol.md, "The conversation tree"; decision 021): the branch from the
root to the message, and at every fork of that branch where other people's messages ran
*concurrently* (siblings not made by an edit or a regenerate), those exchanges too, in the
order they were sent. Exchanges still answering when the turn starts, and the turn's own
concurrent siblings, are left out: turns that run alongside each other are independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol, TypeVar

from sessions_app.models import MessageNode, Policy, Role, Turn
from sessions_app.turns._queries import (
    ContextRow,
    context_rows,
    newest_settled_nodes,
    parent_node,
    parent_of_newest_first_message,
)


def default_parent(
    *,
    policy: str,
    in_flight: Sequence[Turn],
    interrupted: Sequence[Turn],
    newest: MessageNode | None,
) -> MessageNode | None:
    """Parent of a new user message when the client names none (docs/protocol.md, "The conversation tree"):

    - `interrupt`: after the sender's cancelled (partial, kept) answer;
    - `queue` behind in-flight turns: after the answer of the newest of them;
    - while other messages are answered otherwise: a sibling of the newest of them (the
      first message of its send), so that the exchanges that ran together share a parent;
    - else: `newest`, the session's newest settled node (the end of the timeline), which
      the caller reads for many sessions at once (hotsql.newest_settled_nodes).

    A regeneration in flight has no message of its own: it does not make the new message
    a sibling of the old question it answers again, nor put a queued one under its answer.
    """
    # Plain SQL (decision 015): the ORM's compilation of these reads was a third of the
    # Python of a send that comes while others are in flight (an interrupt, a queue, two
    # people typing at once).
    if policy == Policy.INTERRUPT and interrupted:
        return parent_node(interrupted[-1].assistant_message_id)
    if in_flight:
        # The newest send, not the newest turn: a regeneration newer than it would put a
        # queued message under an answer still being rewritten.
        queued = policy == Policy.QUEUE
        sent_messages, parent = parent_of_newest_first_message([t.pk for t in in_flight], answer=queued)
        if sent_messages:
            return parent
        if newest is None:  # only regenerations in flight: the caller read no settled node
            session_id = in_flight[-1].session_id
            newest = newest_settled_nodes([session_id]).get(session_id)
    return newest


class ContextNodes(dict[int, ContextRow]):
    """Nodes by pk, with their children indexed once for every context built from them."""

    @cached_property
    def children(self) -> dict[Any, list[ContextRow]]:
        """Children by parent pk, in creation order; a session's roots under ("root", its id)."""
        index: dict[Any, list[ContextRow]] = {}
        for node in sorted(self.values(), key=lambda n: n.pk):
            index.setdefault(node.parent_id or ("root", node.session_id), []).append(node)
        return index

    def siblings(self, node: ContextRow) -> list[ContextRow]:
        return self.children.get(node.parent_id or ("root", node.session_id), [])


def context_nodes(user_message_pks: Iterable[int], session_ids: Iterable[Any]) -> ContextNodes:
    """What the contexts of turns asking these user messages are made of, in one read
    (_queries.context_rows): the branches, the siblings along them and their exchanges."""
    return ContextNodes((row.pk, row) for row in context_rows(user_message_pks, session_ids))


def context_path(node_pk: int, nodes: ContextNodes) -> list[ContextRow]:
    """The context of a turn asking the user message `node_pk`: the nodes from the root
    down to it, with the concurrent exchanges of the forks above it, in the order they were
    sent; answers left empty are skipped (a queued turn cancelled before it ran, an answer
    still streaming). `nodes`: at least what `context_nodes` reads for it."""
    path = _ancestors(node_pk, nodes)
    if not path:
        return []
    own_send = _send_start(path[-1], nodes)
    chosen: list[ContextRow] = list(path)
    for step in path:
        if step.role != Role.USER or len(nodes.siblings(step)) < 2 or step.pk == own_send.pk:
            continue  # no fork here, answers' versions, or the turn's own concurrent siblings
        if _send_start(step, nodes).pk != step.pk:
            continue  # a send's later message: its siblings are its first message's
        slot = _slot_of(step, nodes)
        for root, versions in _slots(nodes.siblings(step)).items():
            if root != slot and root < own_send.pk:  # sent before this turn's message
                chosen.extend(_exchange(_newest_version(versions, nodes), nodes))
    if len(chosen) == len(path):  # nothing ran concurrently above: the branch, as it is
        return [n for n in path if n.parts or n.role != Role.ASSISTANT]
    keys = {n.pk: _key(n, nodes) for n in chosen}
    depth = {n.pk: i for i, n in enumerate(chosen)}
    ordered = sorted(chosen, key=lambda n: (keys[n.pk], depth[n.pk]))
    return [n for n in ordered if n.parts or n.role != Role.ASSISTANT]


def _ancestors(node_pk: int, nodes: Mapping[int, ContextRow]) -> list[ContextRow]:
    path: list[ContextRow] = []
    current = nodes.get(node_pk)
    seen: set[int] = set()
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        path.append(current)
        current = nodes.get(current.parent_id) if current.parent_id else None
    path.reverse()
    return path


def _send_start(node: ContextRow, nodes: Mapping[int, ContextRow]) -> ContextRow:
    """The first message of the send `node` belongs to (a send of several messages is a
    chain of user messages of one turn); an answer's is its question's."""
    current = node
    while True:
        parent = nodes.get(current.parent_id) if current.parent_id else None
        if parent is None:
            return current
        if current.role == Role.ASSISTANT or (parent.role == Role.USER and parent.turn_pk == current.turn_pk):
            current = parent
        else:
            return current


def _slot_of(node: ContextRow, nodes: Mapping[int, ContextRow]) -> int:
    """The pk of the message an edit (or a regenerate) is a version of, followed back to
    the original: versions of one message share it; concurrent messages do not."""
    current, seen = node, {node.pk}
    while current.fork_of_id and current.fork_of_id not in seen:
        original = nodes.get(current.fork_of_id)
        if original is None or original.parent_id != node.parent_id:
            break
        seen.add(original.pk)
        current = original
    return current.pk


def _slots(siblings: Sequence[ContextRow]) -> dict[int, list[ContextRow]]:
    """Sibling user messages grouped by the original they are versions of."""
    by_pk = {n.pk: n for n in siblings}
    slots: dict[int, list[ContextRow]] = {}
    for sibling in sorted(siblings, key=lambda n: n.pk):
        if sibling.role != Role.USER:
            continue
        root = _slot_of(sibling, by_pk)
        slots.setdefault(root, []).append(sibling)
    return slots


def _newest_version(versions: Sequence[ContextRow], nodes: ContextNodes) -> ContextRow:
    """The version the timeline shows: the one with the newest activity in its exchange."""
    return max(versions, key=lambda version: max(n.pk for n in _exchange_nodes(version, nodes)))


def _exchange_nodes(start: ContextRow, nodes: ContextNodes) -> list[ContextRow]:
    """A send's messages and every answer to its last one."""
    chain = [start]
    while True:
        below = nodes.children.get(chain[-1].pk, [])
        follow = [c for c in below if c.role == Role.USER and c.turn_pk == start.turn_pk]
        if not follow:
            return chain + [c for c in below if c.role == Role.ASSISTANT]
        chain.append(follow[0])


def _exchange(start: ContextRow, nodes: ContextNodes) -> list[ContextRow]:
    """A concurrent exchange as the context takes it: the send's messages and its newest
    answer, or nothing when that answer holds nothing (yet: it is still streaming)."""
    found = _exchange_nodes(start, nodes)
    answers = [n for n in found if n.role == Role.ASSISTANT]
    if not answers or not max(answers, key=lambda n: n.pk).parts:
        return []
    return [n for n in found if n.role == Role.USER] + [max(answers, key=lambda n: n.pk)]


def _key(node: ContextRow, nodes: Mapping[int, ContextRow]) -> int:
    """When the exchange of `node` was sent: the pk of its send's first message, or of the
    original that message is a version of (an edit stays where the original was)."""
    start = _send_start(node, nodes)
    return _slot_of(start, nodes)


# --- the timeline, as a page shows it ---------------------------------------------------------


class TreeNode(Protocol):
    """What the timeline needs of a node (a MessageNode, or a ContextRow-like row)."""

    pk: Any
    parent_id: Any
    fork_of_id: Any
    role: str
    turn_id: Any


N = TypeVar("N", bound=TreeNode)


def timeline(nodes: Iterable[N]) -> list[N]:
    """The conversation as the chat page shows it before a reader picks another version
    anywhere (static/chat/tree.js): at every fork every concurrent exchange, each with its
    version holding the newest message, ordered by when each exchange was sent; an answer
    after its question, an edit or a regeneration where its original was."""
    by_pk = {n.pk: n for n in nodes}
    children: dict[Any, list[N]] = {}
    for node in sorted(by_pk.values(), key=lambda n: n.pk):
        children.setdefault(node.parent_id, []).append(node)

    def slot(node: N) -> Any:
        current, seen = node, {node.pk}
        while current.fork_of_id and current.fork_of_id not in seen:
            original = by_pk.get(current.fork_of_id)
            if original is None or original.parent_id != node.parent_id:
                break
            seen.add(original.pk)
            current = original
        return current.pk

    newest: dict[Any, Any] = {}
    for node in sorted(by_pk.values(), key=lambda n: n.pk, reverse=True):  # children before parents
        newest[node.pk] = max([node.pk, *(newest[c.pk] for c in children.get(node.pk, []))])
    shown: list[N] = []
    depth: dict[Any, int] = {}
    walk: list[Any] = [None]
    while walk:
        parent = walk.pop()
        slots: dict[Any, list[N]] = {}
        for child in children.get(parent, []):
            slots.setdefault(slot(child), []).append(child)
        for versions in slots.values():
            version = max(versions, key=lambda v: newest[v.pk])
            depth[version.pk] = depth.get(parent, -1) + 1
            shown.append(version)
            walk.append(version.pk)

    def start(node: N) -> Any:
        current = node
        while (parent := by_pk.get(current.parent_id)) is not None and (
            current.role == Role.ASSISTANT
            or (parent.role == Role.USER and current.turn_id and parent.turn_id == current.turn_id)
        ):
            current = parent
        return slot(current)

    return sorted(shown, key=lambda n: (start(n), depth[n.pk], n.pk))
