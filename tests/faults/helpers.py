"""What every fault test checks in the end: each device shows exactly what the server
stored, with no event seen twice and no gap it was not told of (a snapshot)."""

from __future__ import annotations

from typing import Any

from chat_client import ChatClient, Device
from tests.integration.helpers import assert_clean


async def stored_messages(client: ChatClient, session_id: str) -> dict[str, dict[str, Any]]:
    """The session's tree as the server stored it: node id -> role, status and text."""
    nodes: list[dict[str, Any]] = []
    before = None
    while True:
        page = await client.messages(session_id, before=before, limit=100)
        nodes.extend(page["results"])
        before = page["next"]
        if not before:
            break
    return {node["id"]: _shown(node) for node in nodes}


def _shown(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": node["role"],
        "status": node["status"],
        "text": "".join(p.get("text", "") for p in node["parts"] if p.get("type") == "text"),
    }


def shown_messages(device: Device) -> dict[str, dict[str, Any]]:
    return {node_id: _shown(node) for node_id, node in device.messages.items()}


async def assert_shows_what_the_server_stored(client: ChatClient, session_id: str, *devices: Device) -> None:
    """Every device shows the stored tree: every node, with its status and its whole text."""
    stored = await stored_messages(client, session_id)
    for device in devices:
        shown = shown_messages(device)
        assert shown == stored, f"device {device.connection_id} differs from the server: {_diff(shown, stored)}"
        assert_clean(device)


def _diff(shown: dict[str, Any], stored: dict[str, Any]) -> str:
    lines = []
    for node_id in sorted(set(shown) | set(stored)):
        if shown.get(node_id) != stored.get(node_id):
            lines.append(f"{node_id}: device {shown.get(node_id)!r} / server {stored.get(node_id)!r}")
    return "; ".join(lines)


async def settled(device: Device, turn_id: str, timeout: float = 60) -> str:
    """Wait until the device knows the turn ended (from its `turn.end`, or from a snapshot
    taken after it); its reason."""
    reason: str = await device.wait_for(
        lambda: (
            (device.turns.get(turn_id) or {}).get("status") not in (None, "active", "queued")
            and device.turns[turn_id]["status"]
        ),
        timeout,
    )
    return reason
