"""Django admin: the turns list, and the action that cancels selected turns through the
same service the API uses."""

from __future__ import annotations

import re

import httpx

from sessions_app.models import Turn
from tests.conftest import PASSWORD
from tests.integration.helpers import NOTICE, session_with


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def admin_login(base_url: str, username: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base_url, follow_redirects=True)
    page = await http.get("/admin/login/")
    token = csrf_token(page.text)
    await http.post(
        "/admin/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"},
    )
    return http


async def test_admin_cancels_selected_turns_through_the_service(make_client, stack, create_user, orm):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=1000, rate=50)
    device = await alice.connect(session["id"])
    turn = await device.send("stop me from admin")
    await device.wait_event(lambda e: e["type"] == "delta")
    pk = orm(lambda: Turn.objects.get(turn_id=turn.turn_id).pk)

    admin = await admin_login(stack.base_url, create_user("admin", True))
    try:
        listing = await admin.get("/admin/sessions_app/turn/", params={"status__exact": "active"})
        assert turn.turn_id in listing.text
        token = csrf_token(listing.text)
        await admin.post(
            "/admin/sessions_app/turn/",
            data={"action": "cancel_turns", "_selected_action": str(pk), "csrfmiddlewaretoken": token},
        )
    finally:
        await admin.aclose()

    end = await turn.end()
    assert end["reason"] == "cancelled"
    assert device.text_of(turn.ack["assistantMessageId"]).endswith(NOTICE)
