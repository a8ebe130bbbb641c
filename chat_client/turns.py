"""A turn as one device sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from chat_client.protocol import Event

if TYPE_CHECKING:
    from chat_client.device import Device


class TurnHandle:
    """A turn as one device sees it: its stream of deltas and its end."""

    def __init__(self, device: Device, ack: dict[str, Any]) -> None:
        self.device = device
        self.ack = ack
        self.turn_id: str = ack["turnId"]
        self.status: str = ack["status"]

    async def stream(self, timeout: float = 60) -> AsyncIterator[str]:
        """Yield this turn's text deltas as they arrive, until its `turn.end` (or until the
        device knows it ended some other way: a snapshot, the session's deletion).
        ChatClientError `closed` if the device closes for good before."""
        index = 0
        while True:
            events = self.device.turn_events(self.turn_id)
            while index < len(events):
                event = events[index]
                index += 1
                if event["type"] == "delta" and event.get("part") is None:
                    yield event["text"]
                elif event["type"] == "turn.end":
                    return
            if self.device.turn_ended(self.turn_id):
                return  # it ended before a snapshot this device applied: no `turn.end` comes
            if self.device._session_gone():
                return  # the session was deleted: its turns stopped without a `turn.end`
            if self.device.closed_for_good:
                raise self.device._closed_error()
            await self.device.next_event(timeout)

    async def end(self, timeout: float = 60) -> Event:
        """The turn's `turn.end` (see `Device.wait_turn_end`)."""
        return await self.device.wait_turn_end(self.turn_id, timeout)

    async def cancel(self) -> dict[str, Any]:
        return await self.device.cancel(turn_id=self.turn_id)
