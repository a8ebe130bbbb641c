"""Django admin: the turns list, and the action that cancels selected turns through the
same service the API uses."""

from __future__ import annotations

import re

import httpx

from sessions_app.models import MessageNode, Turn
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


async def view_only_staff(create_user, orm) -> str:
    """A staff user who may view sessions, turns and messages in the admin, and change nothing."""
    username = create_user("viewer")

    def grant() -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission

        user = get_user_model().objects.get(username=username)
        user.is_staff, user.is_superuser = True, False
        user.save()
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="sessions_app",
                codename__in=["view_turn", "view_chatsession", "view_messagenode"],
            )
        )

    orm(grant)
    return username


async def test_a_turn_page_is_read_only_and_its_cancel_button_goes_through_the_service(
    make_client, stack, create_user, orm
):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=1000, rate=50)
    device = await alice.connect(session["id"])
    turn = await device.send("what the operator sees")
    await device.wait_event(lambda e: e["type"] == "delta")
    pk = orm(lambda: Turn.objects.get(turn_id=turn.turn_id).pk)

    admin = await admin_login(stack.base_url, create_user("admin", True))
    try:
        listing = await admin.get("/admin/sessions_app/turn/")
        assert "what the operator sees" in listing.text  # the question, in the list
        page = await admin.get(f"/admin/sessions_app/turn/{pk}/change/")
        assert page.status_code == 200
        for field in ("status", "turn_id", "worker_id", "client_id", "model_options"):
            assert f'name="{field}"' not in page.text, f"{field} is editable"
        assert 'name="_save"' not in page.text
        assert "Cancel this turn" in page.text and "End as stuck" in page.text
        # a form posted anyway changes nothing
        await admin.post(
            f"/admin/sessions_app/turn/{pk}/change/",
            data={"status": "complete", "csrfmiddlewaretoken": csrf_token(page.text)},
        )
        assert orm(lambda: Turn.objects.get(pk=pk).status) == "active"
        await admin.post(f"/admin/sessions_app/turn/{pk}/cancel/", data={"csrfmiddlewaretoken": csrf_token(page.text)})
    finally:
        await admin.aclose()

    end = await turn.end()
    assert end["reason"] == "cancelled" and end["cancelledBy"].startswith("admin-")


async def test_ending_a_stuck_turn_keeps_what_it_streamed_and_every_device_sees_it(
    make_client, stack, create_user, orm
):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=1000, rate=50)
    device = await alice.connect(session["id"])
    turn = await device.send("a turn that hangs")
    await device.wait_event(lambda e: e["type"] == "delta")
    pk = orm(lambda: Turn.objects.get(turn_id=turn.turn_id).pk)

    admin = await admin_login(stack.base_url, create_user("admin", True))
    try:
        listing = await admin.get("/admin/sessions_app/turn/")
        await admin.post(
            "/admin/sessions_app/turn/",
            data={
                "action": "end_stuck_turns",
                "_selected_action": str(pk),
                "csrfmiddlewaretoken": csrf_token(listing.text),
            },
        )
    finally:
        await admin.aclose()

    end = await turn.end()
    assert end["reason"] == "error" and end["error"]["code"] == "ended_by_operator"
    kept = orm(lambda: MessageNode.objects.get(turn__pk=pk, role="assistant").text)
    assert kept and device.text_of(turn.ack["assistantMessageId"]).startswith(kept)
    assert (await alice.turn(session["id"], turn.turn_id))["status"] == "error"


async def test_a_view_only_staff_user_cannot_cancel_or_end_turns(make_client, stack, create_user, orm):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=1000, rate=50)
    device = await alice.connect(session["id"])
    turn = await device.send("not yours to stop")
    await device.wait_event(lambda e: e["type"] == "delta")
    pk = orm(lambda: Turn.objects.get(turn_id=turn.turn_id).pk)

    viewer = await admin_login(stack.base_url, await view_only_staff(create_user, orm))
    try:
        page = await viewer.get(f"/admin/sessions_app/turn/{pk}/change/")
        assert page.status_code == 200 and "not yours to stop" in page.text
        assert "Cancel this turn" not in page.text and "End as stuck" not in page.text
        token = csrf_token(page.text)
        for url in (f"/admin/sessions_app/turn/{pk}/cancel/", f"/admin/sessions_app/turn/{pk}/end-stuck/"):
            refused = await viewer.post(url, data={"csrfmiddlewaretoken": token})
            assert refused.status_code == 403
        listing = await viewer.get("/admin/sessions_app/turn/")
        assert "cancel_turns" not in listing.text
        await viewer.post(
            "/admin/sessions_app/turn/",
            data={"action": "cancel_turns", "_selected_action": str(pk), "csrfmiddlewaretoken": token},
        )
    finally:
        await viewer.aclose()
    assert orm(lambda: Turn.objects.get(pk=pk).status) == "active"
    await device.cancel(turn_id=turn.turn_id)
    await turn.end()


async def test_a_session_page_shows_its_transcript_read_only_and_message_lists_show_text(
    make_client, stack, create_user, orm
):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=5, rate=200)
    device = await alice.connect(session["id"])
    turn = await device.send("<b>hello</b> from the transcript")
    await turn.end()
    answer = device.text_of(turn.ack["assistantMessageId"])

    admin = await admin_login(stack.base_url, create_user("admin", True))
    try:
        page = await admin.get(f"/admin/sessions_app/chatsession/{session['id']}/change/")
        assert page.status_code == 200
        assert "&lt;b&gt;hello&lt;/b&gt; from the transcript" in page.text  # text as written, never HTML
        assert answer.split()[0].replace("*", "") in page.text.replace("*", "")
        for field in ("title", "model", "policy", "owner", "model_options"):
            assert f'name="{field}"' not in page.text, f"{field} is editable"
        nodes = await admin.get("/admin/sessions_app/messagenode/")
        assert "&lt;b&gt;hello&lt;/b&gt; from the transcript" in nodes.text
    finally:
        await admin.aclose()
