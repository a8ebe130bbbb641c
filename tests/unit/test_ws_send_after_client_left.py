"""A frame the consumer cannot send because its client already closed or dropped the
connection is no server fault: no ERROR, no traceback, no 4500 (web/consumer.py). A frame
that cannot be sent for any other reason still is. The transport is Daphne's own websocket
protocol, closed, as after a client's close that the consumer has not heard of yet."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from daphne.ws_protocol import WebSocketProtocol

from sessions_app.web.consumer import SessionConsumer


def consumer_sending_to(send: Any) -> tuple[SessionConsumer, list[int]]:
    """A consumer as connect leaves it, its writer's frames going to `send`; the close codes
    it asks for are listed."""
    consumer = SessionConsumer()
    consumer.base_send = send
    consumer.connection_id = "c1"
    consumer.outbox = asyncio.Queue()
    consumer.outbox_bytes = consumer.catch_up_bytes = 0
    consumer.flow = None
    consumer.closing = False
    consumer.overflowed = False
    consumer.tasks = set()
    closes: list[int] = []
    consumer._close_soon = closes.append  # type: ignore[method-assign,assignment]
    return consumer, closes


def closed_daphne_protocol() -> WebSocketProtocol:
    protocol = WebSocketProtocol()
    protocol.client_addr = ("127.0.0.1", 5000)
    protocol.state = WebSocketProtocol.STATE_CLOSED  # the client's close arrived
    return protocol


async def test_a_frame_for_a_client_that_left_is_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    protocol = closed_daphne_protocol()

    async def send(message: dict[str, Any]) -> None:
        protocol.handle_reply(message)  # what Daphne's server does with a consumer's send

    consumer, closes = consumer_sending_to(send)
    consumer._enqueue('{"type": "ack", "ref": 1}')
    with caplog.at_level(logging.DEBUG, logger="sessions_app.web.consumer"):
        await asyncio.wait_for(consumer._write_loop(), timeout=5)

    assert closes == []  # no 4500
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any("client left" in r.getMessage() for r in caplog.records)


async def test_a_frame_that_cannot_be_sent_otherwise_is_a_server_fault(caplog: pytest.LogCaptureFixture) -> None:
    async def send(message: dict[str, Any]) -> None:
        raise ValueError("the server cannot encode this")

    consumer, closes = consumer_sending_to(send)
    consumer._enqueue('{"type": "ack", "ref": 1}')
    with caplog.at_level(logging.DEBUG, logger="sessions_app.web.consumer"):
        await asyncio.wait_for(consumer._write_loop(), timeout=5)

    assert closes == [4500]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not be sent" in error.getMessage() and error.exc_info is not None
