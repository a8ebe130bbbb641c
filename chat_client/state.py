"""The session's state as one device sees it, built by applying frames in `seq` order
(docs/protocol.md, "Applying events"). Pure: no I/O; `Device` feeds it what it receives."""

from __future__ import annotations

from typing import Any

from chat_client.protocol import Event

ENDED = ("complete", "cancelled", "error")  # a turn's end reasons


class SessionState:
    """The tree's nodes, the turns, who is generating and who is online; every event applied
    and when it arrived; every gap or duplicate seen (both stay empty when the server keeps
    its promise)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.snapshots = 0
        self.messages: dict[str, dict[str, Any]] = {}
        self.turns: dict[str, dict[str, Any]] = {}
        self.active_turns: dict[str, set[str]] = {}
        self.online: list[str] = []
        self.deleted_by: str | None = None  # the session was deleted, by this clientId
        self.events: list[Event] = []
        self.receive_times: list[float] = []
        self.gaps: list[tuple[int, int]] = []
        self.duplicates: list[int] = []
        self._by_turn: dict[str, list[Event]] = {}

    # --- applying ---

    def _apply_snapshot(self, snapshot: Event) -> None:
        self.snapshots += 1
        self.last_seq = snapshot["lastSeq"]
        self.messages = {m["id"]: {**m, "parts": list(m["parts"])} for m in snapshot["messages"]}
        self.turns = {t["turnId"]: dict(t) for t in snapshot["turns"]}
        self.active_turns = {}
        for turn in snapshot["turns"]:
            if turn["status"] == "active":
                self.active_turns.setdefault(turn["clientId"], set()).add(turn["turnId"])

    def _apply_event(self, event: Event, received_at: float) -> None:
        seq = event["seq"]
        if seq <= self.last_seq:
            self.duplicates.append(seq)
            return
        if seq != self.last_seq + 1:
            self.gaps.append((self.last_seq, seq))
        self.last_seq = seq
        self.events.append(event)
        self.receive_times.append(received_at)
        kind = event["type"]
        turn_id = event.get("turnId") or (event.get("message") or {}).get("turnId")
        if turn_id:
            self._by_turn.setdefault(turn_id, []).append(event)
        if kind == "message":
            node = {**event["message"], "parts": list(event["message"]["parts"])}  # events stay as received
            known = self.messages.get(node["id"])
            if known is not None and known.get("contentSeq", 0) > node.get("contentSeq", 0):
                node = {**node, "parts": known["parts"], "contentSeq": known["contentSeq"]}
            self.messages[node["id"]] = node
        elif kind == "delta":
            self._apply_delta(event)
        elif kind == "presence":
            self.online = list(event["online"])
        elif kind == "session.deleted":
            # The session and everything in it are gone: its turns stopped, and no
            # `turn.end` follows for them (the server closes the connection with 4404).
            self.deleted_by = event["clientId"]
            self.active_turns = {}
        elif kind in ("tool.call", "tool.result"):
            answer = self.messages.get(event["messageId"])
            if answer is not None and event["seq"] > answer.get("contentSeq", 0):
                answer["parts"] = [*answer["parts"], event["part"]]
                answer["contentSeq"] = event["seq"]
        elif kind in ("turn.queued", "turn.start") and self._has_ended(event["turnId"]):
            pass  # a turn's end is final (docs/protocol.md, "Applying events")
        elif kind == "turn.queued":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status="queued"
            )
        elif kind == "turn.start":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status="active"
            )
            self.active_turns.setdefault(event["clientId"], set()).add(event["turnId"])
            self._settle_answer(event["turnId"], ("queued",), "streaming")  # a queued turn starts
        elif kind == "turn.end":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status=event["reason"], reason=event["reason"]
            )
            owned = self.active_turns.get(event["clientId"], set())
            owned.discard(event["turnId"])
            if not owned:
                self.active_turns.pop(event["clientId"], None)
            self._settle_answer(event["turnId"], ("streaming", "queued"), event["reason"])

    def _has_ended(self, turn_id: str) -> bool:
        return self.turns.get(turn_id, {}).get("status") in ENDED

    def _settle_answer(self, turn_id: str, was: tuple[str, ...], status: str) -> None:
        """The turn's answer node, if its status is one of `was`, takes `status`."""
        for node in self.messages.values():
            if node.get("turnId") == turn_id and node["role"] == "assistant" and node["status"] in was:
                node["status"] = status

    def _apply_delta(self, event: Event) -> None:
        node = self.messages.get(event["messageId"])
        if node is None:
            node = self.messages[event["messageId"]] = {
                "id": event["messageId"],
                "role": "assistant",
                "parts": [],
                "turnId": event["turnId"],
                "status": "streaming",
                "contentSeq": 0,
            }
        if event["seq"] <= node.get("contentSeq", 0):
            return  # already in the snapshot's text
        part_type = event.get("part") or "text"
        parts = node["parts"]
        if parts and parts[-1]["type"] == part_type:
            parts[-1] = {**parts[-1], "text": parts[-1]["text"] + event["text"]}
        else:
            parts.append({"type": part_type, "text": event["text"]})
        node["contentSeq"] = event["seq"]

    # --- reading state ---

    @property
    def deleted(self) -> bool:
        return self.deleted_by is not None

    def text_of(self, message_id: str) -> str:
        node = self.messages.get(message_id, {})
        return "".join(p.get("text", "") for p in node.get("parts", []) if p.get("type") == "text")

    def turn_ended(self, turn_id: str) -> bool:
        """Whether this state knows the turn ended (from its `turn.end`, or a snapshot)."""
        return self.turns.get(turn_id, {}).get("status") not in (None, "queued", "active")

    def turn_end(self, turn_id: str) -> Event | None:
        """The turn's `turn.end` if this state knows the turn ended, else None: the event
        applied, or, for a turn that had ended before the snapshot applied (no `turn.end`
        reaches this device then), one made from the snapshot's turn: `type`, `turnId`,
        `clientId`, `reason` (its status), and `error`, `parentTurnId`, `cancelledBy` where
        the turn has them; with no `seq` or `at`, as it was never received."""
        if not self.turn_ended(turn_id):
            return None
        for event in reversed(self._by_turn.get(turn_id, [])):
            if event["type"] == "turn.end":
                return event
        turn = self.turns[turn_id]
        ended: Event = {
            "type": "turn.end",
            "turnId": turn_id,
            "clientId": turn.get("clientId"),
            "reason": turn["status"],
        }
        for key in ("error", "parentTurnId", "cancelledBy"):
            if turn.get(key) is not None:
                ended[key] = turn[key]
        return ended

    def turn_events(self, turn_id: str) -> list[Event]:
        return self._by_turn.get(turn_id, [])

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["type"] == kind]
