"""Sharing a camera with viewers, against a real ``mumu-cloud serve`` on both backends.

An owner invites by e-mail or by a one-time link; a viewer watches and does nothing else; the
owner lists and revokes viewers; revoking ends the viewer's live sessions at once; every change
of the camera's owner drops its shares; the bounds hold and are counted; and a watch_request
racing a revoke hundreds of times leaves no session alive.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, start_cloud
from tests.cloud_process import Account, ApiClient, Camera, CloudProcess
from tests.mail_server import MailServer
from tests.test_cloud_invariants import SDP_ANSWER, SDP_OFFER, Inbox, metric
from tests.verification import verify_addresses

#: The alphabet of link tokens (secrets.token_urlsafe) and ids (uuid hex).
TOKEN = re.compile(r"/#/share/([A-Za-z0-9_-]{43})$")


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(
        request,
        tmp_path_factory.mktemp("cloud"),
        request.param,
        MUMU_MAX_VIEWERS_PER_CAMERA="3",
        MUMU_MAX_INVITES_PER_CAMERA="3",
        MUMU_INVITE_RATE="100000/minute",
        # the race below pipelines watch_requests faster than a person's socket may send
        MUMU_WS_MESSAGE_RATE="2000",
        MUMU_WS_MESSAGE_BURST="4000",
    )


@pytest.fixture
async def api(cloud: CloudProcess) -> AsyncIterator[ApiClient]:
    client = ApiClient(cloud.url)
    yield client
    await client.aclose()


async def link(api: ApiClient, owner: Account, camera: Camera) -> str:
    """A new invitation link's token."""
    r = await api.http.post(
        f"/api/devices/{camera.device_id}/invites", json={"link": True}, headers=owner.auth
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["kind"] == "link" and body["email"] is None
    found = TOKEN.search(body["url"])
    assert found, body["url"]
    return found.group(1)


async def accept_link(api: ApiClient, who: Account, token: str) -> httpx.Response:
    return await api.http.post("/api/invite-links/accept", json={"token": token}, headers=who.auth)


async def share(api: ApiClient, owner: Account, camera: Camera, viewer: Account) -> None:
    r = await accept_link(api, viewer, await link(api, owner, camera))
    assert r.status_code == 200, r.text


async def devices(api: ApiClient, who: Account) -> dict[str, dict[str, Any]]:
    r = await api.http.get("/api/devices", headers=who.auth)
    assert r.status_code == 200, r.text
    return {d["device_id"]: d for d in r.json()["devices"]}


async def watch(client: sig.Client, camera: Camera) -> str:
    await client.send("watch_request", {"device_id": camera.device_id})
    session_id: str = (await client.recv("watch_ready"))["payload"]["session_id"]
    return session_id


def error_code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


# --- by link --------------------------------------------------------------------------------------


async def test_a_viewer_by_link_watches_and_does_nothing_else(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, viewer, other = await api.account(), await api.account(), await api.account()
    camera = await api.owned_camera(owner, name="Porch")
    token = await link(api, owner, camera)

    # the link shows the camera and whose it is before anything is added
    r = await api.http.post("/api/invite-links/preview", json={"token": token}, headers=viewer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Porch" and r.json()["owner_email"] == owner.email
    assert camera.device_id not in await devices(api, viewer)
    # the owner cannot accept their own link; it stays usable
    r = await accept_link(api, owner, token)
    assert (r.status_code, error_code(r)) == (409, "own_camera")
    # its id (in the owner's listing and in proxy logs) accepts nothing: only its token does,
    # so the id cannot burn the link for the person it was sent to
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    [invite_id] = [i["invite_id"] for i in r.json()["invites"] if i["kind"] == "link"]
    for who in (other, viewer, owner):
        r = await api.http.post(f"/api/invites/{invite_id}/accept", headers=who.auth)
        assert (r.status_code, error_code(r)) == (404, "invite_invalid"), r.text

    r = await accept_link(api, viewer, token)
    assert r.status_code == 200, r.text
    shown = r.json()["device"]
    assert shown["role"] == "viewer" and shown["shared_by"] == owner.email
    assert shown["viewers"] is None
    listed = (await devices(api, viewer))[camera.device_id]
    assert (listed["role"], listed["shared_by"], listed["name"]) == ("viewer", owner.email, "Porch")
    assert (await devices(api, owner))[camera.device_id]["viewers"] == 1

    # single use
    r = await accept_link(api, other, token)
    assert (r.status_code, error_code(r)) == (404, "invite_invalid")
    r = await api.http.post("/api/invite-links/preview", json={"token": token}, headers=other.auth)
    assert (r.status_code, error_code(r)) == (404, "invite_invalid")

    # the owner sees the viewer (and how they came); the viewer sees no one
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    assert r.status_code == 200
    assert [(v["email"], v["via"]) for v in r.json()["viewers"]] == [(viewer.email, "link")]
    assert r.json()["invites"] == []

    # the viewer watches
    device = await sig.device(cloud.ws_url, camera.hello())
    watcher = await sig.viewer(cloud.ws_url, viewer.token)
    sid = await watch(watcher, camera)
    assert (await device.recv("watch_request"))["payload"]["session_id"] == sid
    await watcher.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    await device.recv("signal_offer")
    await device.send("signal_answer", {"session_id": sid, "sdp": SDP_ANSWER})
    await watcher.recv("signal_answer")

    # ... and may do nothing else: a clear 403 for each
    base = f"/api/devices/{camera.device_id}"
    for method, path, body in (
        ("PATCH", base, {"name": "Mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/invites", {"link": True}),
        ("GET", f"{base}/sharing", None),
        ("DELETE", f"{base}/viewers/{other.user_id}", None),
        ("PUT", f"{base}/update-settings", {"window": None}),
    ):
        r = await api.http.request(method, path, json=body, headers=viewer.auth)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert error_code(r) == "owner_only"
    assert (await devices(api, owner))[camera.device_id]["name"] == "Porch"

    # the viewer hears when the camera goes offline, as its owner does
    await device.close()
    await watcher.became(camera.device_id, online=False)
    await watcher.close()


async def test_revoking_ends_the_viewers_sessions_at_once(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, viewer = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    await share(api, owner, camera, viewer)
    device = await sig.device(cloud.ws_url, camera.hello())
    mine = await sig.viewer(cloud.ws_url, owner.token)
    theirs = await sig.viewer(cloud.ws_url, viewer.token)
    own_sid = await watch(mine, camera)
    sid = await watch(theirs, camera)
    await device.recv("watch_request")
    await device.recv("watch_request")

    r = await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{viewer.user_id}", headers=owner.auth
    )
    assert r.status_code == 204, r.text
    ended = (await theirs.recv("watch_ended"))["payload"]
    assert ended == {"session_id": sid, "reason": "access_revoked"}
    # the camera closes that peer (in words every agent knows)
    ended = (await device.recv("watch_ended"))["payload"]
    assert ended["session_id"] == sid and ended["reason"] == "device_unpaired"
    # the owner's own session goes on
    await mine.send("signal_offer", {"session_id": own_sid, "sdp": SDP_OFFER})
    assert (await device.recv("signal_offer"))["payload"]["session_id"] == own_sid
    # the revoked viewer can neither reach the old session nor start a new one
    await theirs.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await theirs.error())["code"] == "session_not_found"
    await theirs.send("watch_request", {"device_id": camera.device_id})
    assert (await theirs.error())["code"] == "forbidden"
    assert camera.device_id not in await devices(api, viewer)
    # revoking twice: 404
    r = await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{viewer.user_id}", headers=owner.auth
    )
    assert (r.status_code, error_code(r)) == (404, "not_found")
    assert await metric(cloud.url, 'mumu_watch_sessions_ended_total{reason="access_revoked"}') >= 1
    for client in (device, mine, theirs):
        await client.close()


async def test_a_viewer_may_leave(cloud: CloudProcess, api: ApiClient) -> None:
    owner, viewer = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    await share(api, owner, camera, viewer)
    device = await sig.device(cloud.ws_url, camera.hello())
    theirs = await sig.viewer(cloud.ws_url, viewer.token)
    sid = await watch(theirs, camera)
    r = await api.http.delete(f"/api/devices/{camera.device_id}/viewers/me", headers=viewer.auth)
    assert r.status_code == 204, r.text
    assert (await theirs.recv("watch_ended"))["payload"]["session_id"] == sid
    assert camera.device_id not in await devices(api, viewer)
    # the owner cannot "leave" their own camera
    r = await api.http.delete(f"/api/devices/{camera.device_id}/viewers/me", headers=owner.auth)
    assert (r.status_code, error_code(r)) == (409, "owner_cannot_leave")
    await theirs.close()
    await device.close()


# --- by e-mail ------------------------------------------------------------------------------------


async def test_an_invitation_by_e_mail_is_accepted_by_that_account_only(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    owner, invitee, other = await api.account(), await api.account(), await api.account()
    camera = await api.owned_camera(owner, name="Garden")
    url = f"/api/devices/{camera.device_id}/invites"
    # the mail names the inviter: an owner whose address is not proven cannot invite by e-mail
    r = await api.http.post(url, json={"email": invitee.email}, headers=owner.auth)
    assert (r.status_code, error_code(r)) == (403, "email_unverified")
    await verify_addresses(cloud, owner, other)
    r = await api.http.post(url, json={"email": invitee.email.upper()}, headers=owner.auth)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "email" and r.json()["email"] == invitee.email
    assert r.json()["url"] is None
    invite_id = r.json()["invite_id"]

    # a mail to the invitee: the camera's name, who invites, a link to the camera list
    mail = await mail_server.next_mail(invitee.email, "invitation")
    assert "Garden" in mail.subject and owner.email in mail.subject
    assert "Garden" in mail.text and owner.email in mail.text and "Garden" in mail.html
    assert mail.link == f"{cloud.url}/#/devices"
    assert "Create an account" not in mail.text
    assert "Confirm this address first" in mail.text  # (the invitee has not yet)

    # bound to the verified address: until the invitee proves it, not listed, not accepted
    assert (await api.http.get("/api/invites", headers=invitee.auth)).json()["invites"] == []
    for action in ("accept", "decline"):
        r = await api.http.post(f"/api/invites/{invite_id}/{action}", headers=invitee.auth)
        assert (r.status_code, error_code(r)) == (403, "email_unverified"), action
        assert "confirm your address" in r.json()["error"]["message"]
    await verify_addresses(cloud, invitee)

    r = await api.http.get("/api/invites", headers=invitee.auth)
    assert [(i["name"], i["owner_email"]) for i in r.json()["invites"]] == [("Garden", owner.email)]
    assert (await api.http.get("/api/invites", headers=other.auth)).json()["invites"] == []
    # nobody else can accept or decline it, even knowing its id
    for action in ("accept", "decline"):
        r = await api.http.post(f"/api/invites/{invite_id}/{action}", headers=other.auth)
        assert r.status_code == 404, r.text
    r = await api.http.post(f"/api/invites/{invite_id}/accept", headers=invitee.auth)
    assert r.status_code == 200, r.text
    assert r.json()["device"]["role"] == "viewer"
    assert (await api.http.get("/api/invites", headers=invitee.auth)).json()["invites"] == []
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    assert [(v["email"], v["via"]) for v in r.json()["viewers"]] == [(invitee.email, "email")]

    # inviting a viewer again, or oneself: clear refusals
    r = await api.http.post(url, json={"email": invitee.email}, headers=owner.auth)
    assert (r.status_code, error_code(r)) == (409, "already_viewer")
    r = await api.http.post(url, json={"email": owner.email}, headers=owner.auth)
    assert (r.status_code, error_code(r)) == (422, "invalid_input")
    for body in ({}, {"email": invitee.email, "link": True}, {"email": "not-an-address"}):
        r = await api.http.post(url, json=body, headers=owner.auth)
        assert (r.status_code, error_code(r)) == (422, "invalid_input"), body


async def test_an_invitation_waits_for_its_address_to_sign_up_and_can_be_declined(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    """The same answer whether the address has an account or not: nobody probes for accounts.
    Only the mail says more, to the address's own mailbox."""
    owner, existing = await api.account(), await api.account()
    await verify_addresses(cloud, owner, existing)
    camera = await api.owned_camera(owner)
    url = f"/api/devices/{camera.device_id}/invites"
    future = f"later-{camera.device_id[:8]}+x@example.com"
    answers = []
    for address in (existing.email, future):
        r = await api.http.post(url, json={"email": address}, headers=owner.auth)
        assert r.status_code == 201, r.text
        answers.append(sorted(r.json()))
    assert answers[0] == answers[1]
    # no account yet: "create an account to watch", a link to sign up with that address
    mail = await mail_server.next_mail(future, "invitation")
    assert "Test camera" in mail.subject and owner.email in mail.text
    assert "Create an account" in mail.text and "create an account" in mail.text.lower()
    assert mail.link == f"{cloud.url}/#/signup?email={future.replace('+', '%2B')}"
    known = await mail_server.next_mail(existing.email, "invitation")
    assert known.link == f"{cloud.url}/#/devices" and "Confirm" not in known.text

    newcomer = await api.account(email=future)
    assert (await api.http.get("/api/invites", headers=newcomer.auth)).json()["invites"] == []
    await verify_addresses(cloud, newcomer)
    invites = (await api.http.get("/api/invites", headers=newcomer.auth)).json()["invites"]
    assert len(invites) == 1
    r = await api.http.post(
        f"/api/invites/{invites[0]['invite_id']}/decline", headers=newcomer.auth
    )
    assert r.status_code == 204
    assert (await api.http.get("/api/invites", headers=newcomer.auth)).json()["invites"] == []
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    assert [i["email"] for i in r.json()["invites"]] == [existing.email]
    # the owner cancels the other one
    invite_id = r.json()["invites"][0]["invite_id"]
    r = await api.http.delete(f"{url}/{invite_id}", headers=owner.auth)
    assert r.status_code == 204
    assert (await api.http.get("/api/invites", headers=existing.auth)).json()["invites"] == []
    r = await api.http.delete(f"{url}/{invite_id}", headers=owner.auth)
    assert r.status_code == 404


# --- bounds, expiry, bad input --------------------------------------------------------------------


async def test_invitations_and_viewers_per_camera_are_bounded_and_counted(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """Three of each here (MUMU_MAX_INVITES_PER_CAMERA, MUMU_MAX_VIEWERS_PER_CAMERA)."""
    owner = await api.account()
    camera = await api.owned_camera(owner)
    url = f"/api/devices/{camera.device_id}/invites"
    tokens = [await link(api, owner, camera) for _ in range(3)]
    before = await metric(cloud.url, 'mumu_share_refused_total{reason="too_many_invites"}')
    r = await api.http.post(url, json={"link": True}, headers=owner.auth)
    assert (r.status_code, error_code(r)) == (409, "too_many_invites")
    after = await metric(cloud.url, 'mumu_share_refused_total{reason="too_many_invites"}')
    assert after == before + 1

    viewers = [await api.account() for _ in range(3)]
    for viewer, token in zip(viewers, tokens, strict=True):
        assert (await accept_link(api, viewer, token)).status_code == 200
    # full: no new invitation, and an open one cannot be accepted (nor is it used up)
    r = await api.http.post(url, json={"link": True}, headers=owner.auth)
    assert (r.status_code, error_code(r)) == (409, "too_many_viewers")
    r = await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{viewers[0].user_id}", headers=owner.auth
    )
    assert r.status_code == 204
    spare = await link(api, owner, camera)
    await share(api, owner, camera, viewers[0])
    late = await api.account()
    before = await metric(cloud.url, 'mumu_share_refused_total{reason="too_many_viewers"}')
    r = await accept_link(api, late, spare)
    assert (r.status_code, error_code(r)) == (409, "too_many_viewers")
    assert await metric(cloud.url, 'mumu_share_refused_total{reason="too_many_viewers"}') > before
    r = await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{viewers[1].user_id}", headers=owner.auth
    )
    assert (await accept_link(api, late, spare)).status_code == 200


async def test_an_expired_invitation_is_refused(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for short in start_cloud(
        request, tmp_path_factory.mktemp("short"), "embedded", MUMU_INVITE_TTL="1"
    ):
        api = ApiClient(short.url)
        try:
            owner, viewer = await api.account(), await api.account()
            await verify_addresses(short, owner, viewer)
            camera = await api.owned_camera(owner)
            token = await link(api, owner, camera)
            r = await api.http.post(
                f"/api/devices/{camera.device_id}/invites",
                json={"email": viewer.email},
                headers=owner.auth,
            )
            assert r.status_code == 201
            invite_id = r.json()["invite_id"]
            # expiry is read from the clock at each request: wait for the server to say so
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                r = await api.http.post(
                    "/api/invite-links/preview", json={"token": token}, headers=viewer.auth
                )
                if r.status_code != 200 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert (r.status_code, error_code(r)) == (410, "invite_expired")
            r = await accept_link(api, viewer, token)
            assert (r.status_code, error_code(r)) == (410, "invite_expired")
            assert (await api.http.get("/api/invites", headers=viewer.auth)).json()["invites"] == []
            r = await api.http.post(f"/api/invites/{invite_id}/accept", headers=viewer.auth)
            assert (r.status_code, error_code(r)) == (410, "invite_expired")
            assert camera.device_id not in await devices(api, viewer)
        finally:
            await api.aclose()


async def test_bad_input_gets_a_clear_4xx(cloud: CloudProcess, api: ApiClient) -> None:
    owner, stranger = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    base = f"/api/devices/{camera.device_id}"
    for method, path, body, who, status in (
        ("GET", f"{base}/sharing", None, stranger, 404),
        ("POST", f"{base}/invites", {"link": True}, stranger, 404),
        ("DELETE", f"{base}/viewers/{owner.user_id}", None, stranger, 404),
        ("GET", "/api/devices/no-such-camera/sharing", None, owner, 404),
        ("POST", "/api/invite-links/accept", {"token": "x\u0000y"}, owner, 404),
        ("POST", "/api/invite-links/accept", {"token": ""}, owner, 422),
        ("POST", "/api/invite-links/accept", {"token": "a" * 300}, owner, 422),
        ("POST", "/api/invite-links/preview", {"token": "nope", "x": 1}, owner, 422),
        ("POST", f"{base}/invites", {"email": "a\u0000@example.com"}, owner, 422),
        ("POST", "/api/invites/nope%00/accept", None, owner, 404),
        ("DELETE", f"{base}/invites/unknown", None, owner, 404),
        ("GET", f"{base}/sharing", None, None, 401),
    ):
        headers = who.auth if who is not None else {}
        r = await api.http.request(method, path, json=body, headers=headers)
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        assert "error" in r.json()


# --- every change of owner drops the shares -------------------------------------------------------


async def _shared_and_watching(
    cloud: CloudProcess, api: ApiClient
) -> tuple[Account, Camera, Account, sig.Client, sig.Client, str, str]:
    owner, viewer = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    await share(api, owner, camera, viewer)
    token = await link(api, owner, camera)  # an open invitation too
    device = await sig.device(cloud.ws_url, camera.hello())
    theirs = await sig.viewer(cloud.ws_url, viewer.token)
    sid = await watch(theirs, camera)
    await device.recv("watch_request")
    return owner, camera, viewer, device, theirs, sid, token


async def _shares_are_gone(
    api: ApiClient, camera: Camera, viewer: Account, theirs: sig.Client, sid: str, token: str
) -> None:
    ended = (await theirs.recv("watch_ended"))["payload"]
    assert ended["session_id"] == sid
    assert camera.device_id not in await devices(api, viewer)
    await theirs.send("watch_request", {"device_id": camera.device_id})
    assert (await theirs.error())["code"] == "forbidden"
    late = await api.account()
    r = await accept_link(api, late, token)
    assert (r.status_code, error_code(r)) == (404, "invite_invalid")


async def test_unpairing_drops_every_share(cloud: CloudProcess, api: ApiClient) -> None:
    owner, camera, viewer, device, theirs, sid, token = await _shared_and_watching(cloud, api)
    r = await api.http.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    assert r.status_code == 204
    await _shares_are_gone(api, camera, viewer, theirs, sid, token)
    # paired again by the same owner: still nobody else's
    await api.pair(owner, camera)
    assert camera.device_id not in await devices(api, viewer)
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    assert r.json()["viewers"] == [] and r.json()["invites"] == []
    await theirs.close()
    await device.close()


async def test_pairing_by_another_account_drops_every_share(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, camera, viewer, device, theirs, sid, token = await _shared_and_watching(cloud, api)
    await api.http.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    newcomer = await api.account()
    await api.pair(newcomer, camera)
    await _shares_are_gone(api, camera, viewer, theirs, sid, token)
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=newcomer.auth)
    assert r.json()["viewers"] == [] and r.json()["invites"] == []
    await theirs.close()
    await device.close()


async def test_a_factory_reset_drops_every_share(cloud: CloudProcess, api: ApiClient) -> None:
    _owner, camera, viewer, device, theirs, sid, token = await _shared_and_watching(cloud, api)
    r = await api.http.post(
        "/api/devices/retire", params={"device_id": camera.device_id}, headers=camera.auth
    )
    assert r.status_code == 204, r.text
    await _shares_are_gone(api, camera, viewer, theirs, sid, token)
    await theirs.close()
    await device.close()


async def test_deleting_the_owners_account_drops_every_share(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, camera, viewer, device, theirs, sid, token = await _shared_and_watching(cloud, api)
    r = await api.http.post(
        "/api/account/delete", json={"password": owner.password}, headers=owner.auth
    )
    assert r.status_code == 204, r.text
    await _shares_are_gone(api, camera, viewer, theirs, sid, token)
    await theirs.close()
    await device.close()


async def test_deleting_a_viewers_account_ends_its_sessions_and_its_place(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, camera, viewer, device, theirs, sid, _token = await _shared_and_watching(cloud, api)
    r = await api.http.post(
        "/api/account/delete", json={"password": viewer.password}, headers=viewer.auth
    )
    assert r.status_code == 204, r.text
    ended = (await device.recv("watch_ended"))["payload"]
    assert ended["session_id"] == sid
    r = await api.http.get(f"/api/devices/{camera.device_id}/sharing", headers=owner.auth)
    assert r.json()["viewers"] == []
    await theirs.close()
    await device.close()


# --- history --------------------------------------------------------------------------------------


async def test_history_shows_who_watched_to_the_owner_and_only_their_own_to_a_viewer(
    cloud: CloudProcess, api: ApiClient
) -> None:
    owner, viewer = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    await share(api, owner, camera, viewer)
    device = await sig.device(cloud.ws_url, camera.hello())
    mine = await sig.viewer(cloud.ws_url, owner.token)
    theirs = await sig.viewer(cloud.ws_url, viewer.token)
    own_sid, their_sid = await watch(mine, camera), await watch(theirs, camera)
    await theirs.send("watch_end", {"session_id": their_sid})
    await theirs.recv("watch_ended")

    url = f"/api/devices/{camera.device_id}/sessions"
    seen = (await api.http.get(url, headers=owner.auth)).json()["sessions"]
    assert {(s["session_id"], s["viewer_email"], s["viewer_role"]) for s in seen} == {
        (own_sid, owner.email, "owner"),
        (their_sid, viewer.email, "viewer"),
    }
    ended = next(s for s in seen if s["session_id"] == their_sid)
    assert ended["end_reason"] == "viewer_ended" and ended["ended_at"]
    seen = (await api.http.get(url, headers=viewer.auth)).json()["sessions"]
    assert [s["session_id"] for s in seen] == [their_sid]
    assert [s["viewer_email"] for s in seen] == [viewer.email], "nobody else's address"
    # the account-wide history: the owner's cameras, and the viewer's own sessions elsewhere
    everything = (await api.http.get("/api/sessions", headers=owner.auth)).json()["sessions"]
    assert {s["session_id"] for s in everything} == {own_sid, their_sid}
    assert all(s["device_id"] == camera.device_id for s in everything)
    everything = (await api.http.get("/api/sessions", headers=viewer.auth)).json()["sessions"]
    assert [s["session_id"] for s in everything] == [their_sid]
    # a revoked viewer sees nothing of the camera any more
    await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{viewer.user_id}", headers=owner.auth
    )
    assert (await api.http.get(url, headers=viewer.auth)).status_code == 404
    assert (await api.http.get("/api/sessions", headers=viewer.auth)).json()["sessions"] == []
    for client in (device, mine, theirs):
        await client.close()


# --- the race -------------------------------------------------------------------------------------


async def test_watch_requests_racing_revoke_leave_no_session(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """A viewer pipelines watch_requests while the owner revokes it; then it is invited again.
    Hundreds of rounds: no session of a revoked viewer survives, on either backend."""
    rounds, requests_per_round = 150, 4
    owner, viewer = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    device = Inbox(await sig.device(cloud.ws_url, camera.hello()))
    watcher = Inbox(await sig.viewer(cloud.ws_url, viewer.token))
    revoke = f"/api/devices/{camera.device_id}/viewers/{viewer.user_id}"
    granted: set[str] = set()
    replies = 0
    try:
        for _ in range(rounds):
            await share(api, owner, camera, viewer)
            requests = [
                watcher.client.send("watch_request", {"device_id": camera.device_id})
                for _ in range(requests_per_round)
            ]
            *_, response = await asyncio.gather(
                *requests, api.http.delete(revoke, headers=owner.auth)
            )
            assert response.status_code == 204, response.text
            replies += requests_per_round
            await watcher.wait(
                lambda n=replies: len(watcher.of("watch_ready")) + len(watcher.of("error")) >= n
            )
            granted |= {r["session_id"] for r in watcher.of("watch_ready")}
        assert granted, "no watch_request ever got through: the race was never run"
        # every granted session ended, and the camera heard so for each it was asked to serve
        asked = {r["session_id"] for r in device.of("watch_request")}
        assert granted <= asked
        await device.wait(lambda: asked <= {e["session_id"] for e in device.of("watch_ended")})
        await watcher.wait(lambda: granted <= {e["session_id"] for e in watcher.of("watch_ended")})
        # neither side can reach the other on any of them
        for sid in granted:
            await watcher.client.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
            await device.client.send("signal_answer", {"session_id": sid, "sdp": SDP_ANSWER})

        def refusals(inbox: Inbox) -> list[dict[str, Any]]:
            return [e for e in inbox.of("error") if e.get("ref") in granted]

        await watcher.wait(lambda: len(refusals(watcher)) >= len(granted))
        await device.wait(lambda: len(refusals(device)) >= len(granted))
        assert {e["code"] for e in refusals(watcher)} == {"session_not_found"}
        assert {e["code"] for e in refusals(device)} == {"session_not_found"}
        assert watcher.of("signal_answer") == [] and device.of("signal_offer") == []
        # refusals the race produced are the documented ones only
        codes = {e["code"] for e in watcher.of("error") if e.get("ref") not in granted}
        assert codes <= {"forbidden"}
    finally:
        await device.close()
        await watcher.close()


async def test_camera_lists_are_told_when_sharing_changes_them(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """``devices_changed`` reaches the accounts whose list somebody else changed: the owner when
    a viewer joins or leaves, the viewer when it is revoked, both when the camera is renamed or
    unpaired, the other side when an account is deleted; nobody else."""
    owner, family, other = await api.account(), await api.account(), await api.account()
    camera = await api.owned_camera(owner, "Porch")
    owner_tab = await sig.viewer(cloud.ws_url, owner.token)
    family_tab = await sig.viewer(cloud.ws_url, family.token)
    other_tab = await sig.viewer(cloud.ws_url, other.token)
    changed = {"device_id": camera.device_id}

    async def told(tab: sig.Client) -> None:
        assert (await tab.recv("devices_changed"))["payload"] == changed

    await share(api, owner, camera, family)  # joins: the owner's count, the viewer's other tabs
    await told(owner_tab)
    await told(family_tab)
    r = await api.http.delete(
        f"/api/devices/{camera.device_id}/viewers/{family.user_id}", headers=owner.auth
    )
    assert r.status_code == 204, r.text
    await told(family_tab)
    await told(owner_tab)

    await share(api, owner, camera, family)
    await told(owner_tab)
    await told(family_tab)
    r = await api.http.patch(
        f"/api/devices/{camera.device_id}", json={"name": "Front door"}, headers=owner.auth
    )
    assert r.status_code == 200, r.text
    await told(owner_tab)
    await told(family_tab)
    r = await api.http.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    assert r.status_code == 204, r.text
    await told(owner_tab)
    await told(family_tab)
    assert camera.device_id not in await devices(api, family)
    await other_tab.nothing()

    # account deletion: a viewer's tells the owner, an owner's tells the viewers
    garden = await api.owned_camera(owner, "Garden")
    changed = {"device_id": garden.device_id}
    for viewer, tab in ((family, family_tab), (other, other_tab)):
        await share(api, owner, garden, viewer)
        await told(owner_tab)
        await told(tab)
    r = await api.http.post(
        "/api/account/delete", json={"password": family.password}, headers=family.auth
    )
    assert r.status_code == 204, r.text
    await told(owner_tab)
    r = await api.http.post(
        "/api/account/delete", json={"password": owner.password}, headers=owner.auth
    )
    assert r.status_code == 204, r.text
    await told(other_tab)
    assert garden.device_id not in await devices(api, other)
    for tab in (owner_tab, family_tab, other_tab):
        await tab.close()
