"""The conversation tree: where a new user message attaches, and a turn's context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sessions_app.models import MessageNode, Policy, Turn
from sessions_app.turns._queries import BranchNode


def default_parent(
    *,
    policy: str,
    in_flight: Sequence[Turn],
    interrupted: Sequence[Turn],
    newest: MessageNode | None,
) -> MessageNode | None:
    """Parent of a new user message when the client names none (DESIGN.md, Sending):

    - `interrupt`: after the sender's cancelled (partial, kept) answer;
    - `queue` behind in-flight turns: after the answer of the turn it waits for;
    - while turns are in flight otherwise: a sibling of the newest in-flight user message;
    - else: `newest`, the session's newest settled node (the end of the current branch),
      which the caller reads for many sessions at once (hotsql.newest_settled_nodes).
    """
    # Only what a new node's parent needs (its pk, and its id for the `message` event).
    nodes = MessageNode.objects.only("id", "node_id")
    if policy == Policy.INTERRUPT and interrupted:
        return nodes.filter(pk=interrupted[-1].assistant_message_id or 0).first()
    if in_flight:
        newest_turn = in_flight[-1]
        if policy == Policy.QUEUE:
            return nodes.filter(pk=newest_turn.assistant_message_id or 0).first()
        return nodes.filter(children__pk=newest_turn.user_message_id or 0).first()  # its user message's parent
    return newest


def context_path(node_pk: int, nodes: Mapping[int, BranchNode]) -> list[BranchNode]:
    """Nodes from the root down to the node `node_pk` (inclusive), skipping answers left
    empty. `nodes`: nodes by pk holding at least its ancestors (hotsql.ancestry)."""
    path: list[BranchNode] = []
    current = nodes.get(node_pk)
    seen: set[int] = set()
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        if current.parts or current.role != "assistant":
            path.append(current)
        current = nodes.get(current.parent_id) if current.parent_id else None
    path.reverse()
    return path
