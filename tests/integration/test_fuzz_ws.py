"""Property-based fuzzing of websocket frames against the real stack (Daphne, worker, Redis):
whatever a client sends, the server answers with a documented error code, never `internal`,
and the connection stays usable (a ping after each frame gets its pong). Bounded in examples
and in time."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import PASSWORD

DOCUMENTED = {"invalid", "unauthenticated", "forbidden", "not_found", "busy", "conflict", "too_large", "queue_full"}
DOCUMENTED |= {"rate_limited", "unavailable"}
READ_TIMEOUT = 30

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
FIELDS = ("ref", "filter", "messages", "turnId", "policy", "parent", "forkOf", "regenerate", "cancel", "own", "all")
commands = st.fixed_dictionaries(
    {"type": st.sampled_from(["send", "cancel", "ping", "dance"]) | json_values},
    optional={name: json_values for name in FIELDS},
)
# Hand-written hostile texts: broken JSON, what orjson refuses, what it takes but others do not.
NASTY = [
    "",
    "{",
    "null",
    "[]",
    '"send"',
    "[" * 2000 + "]" * 2000,
    '{"type":"ping","ref":' + "[" * 300 + "1" + "]" * 300 + "}",
    '{"type":"ping","ref":"\\ud800"}',
    '{"type":"send","messages":[{"id":"a","role":"user","parts":[{"type":"text","text":"\\udfff"}]}]}',
    '{"type":"ping","ref":1e400}',
    '{"type":"ping","ref":NaN}',
    '{"type":"ping","ref":18446744073709551616}',
    '{"type":"cancel","filter":{"turnId":"' + "x" * 5000 + '"}}',
    '{"type":"send","messages":[],"regenerate":"nope"}',
    '{"type":{"$gt":""}}',
    '{"type":"ping","__proto__":{"x":1}}',
]
frames = st.one_of(
    commands.map(lambda frame: orjson.dumps(frame).decode()),
    json_values.map(lambda value: orjson.dumps(value).decode()),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.sampled_from(NASTY),
)


class Connection:
    """One device of a fuzzing user; reconnects if a frame legitimately closed it."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.ws: ClientConnection | None = None
        self.codes: list[str] = []

    def open(self) -> ClientConnection:
        if self.ws is None:
            self.ws = connect(self.url, additional_headers={"Authorization": f"Token {self.token}"}, max_size=None)
            self._until(lambda frame: frame.get("type") == "snapshot")
        return self.ws

    def _until(self, predicate: Any) -> dict[str, Any]:
        assert self.ws is not None
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            frame = orjson.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if frame.get("type") == "error":
                self.codes.append(frame["code"])
            if predicate(frame):
                return dict(frame)

    def usable(self) -> bool:
        ref = uuid.uuid4().hex
        try:
            self.open().send(orjson.dumps({"type": "ping", "ref": ref}).decode())
            return self._until(lambda frame: frame.get("type") == "pong" and frame.get("ref") == ref)["ref"] == ref
        except ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1000:  # only a valid `close` may end it
                raise
            self.ws = None
            return self.usable()


@pytest.fixture(scope="module")
def device(stack, create_user) -> Any:
    username = create_user("fuzz")
    token = httpx.post(f"{stack.base_url}/api/auth/token", json={"username": username, "password": PASSWORD}).json()
    session = httpx.post(
        f"{stack.base_url}/api/sessions",
        json={"title": "fuzz", "modelOptions": {"tokens": 1}},
        headers={"Authorization": f"Token {token['token']}"},
    ).json()
    url = stack.base_url.replace("http", "ws", 1) + f"/ws/sessions/{session['id']}/"
    connection = Connection(url, token["token"])
    yield connection
    if connection.ws is not None:
        connection.ws.close()


@pytest.mark.timeout(300)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(frame=frames)
def test_no_frame_crashes_the_server_or_its_connection(device, frame):
    device.open().send(frame)
    assert device.usable(), frame
    assert set(device.codes) <= DOCUMENTED, (frame, device.codes)
