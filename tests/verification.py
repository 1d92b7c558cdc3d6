"""Proving an account's address in a test the way a person does: the "verify" mail the cloud
sent at sign-up is read from the suite's SMTP server (``tests/mail_server.py``) and its link
opened (``POST /api/auth/verify``)."""

from __future__ import annotations

import httpx

from tests.cloud_process import Account, CloudProcess
from tests.mail_server import server_for


async def verify_addresses(cloud: CloudProcess, *accounts: Account) -> None:
    """Each account opens the link of its sign-up's "verify" mail."""
    await verify_emails(cloud, *(a.email for a in accounts))


async def verify_emails(cloud: CloudProcess, *emails: str) -> None:
    server = server_for(cloud.env["MUMU_SMTP_URL"])
    async with httpx.AsyncClient(base_url=cloud.url, timeout=30.0) as http:
        for email in emails:
            mail = await server.next_mail(email, "verify")
            r = await http.post("/api/auth/verify", json={"token": mail.token})
            assert r.status_code == 200, r.text


def verify_emails_sync(cloud: CloudProcess, *emails: str) -> None:
    """The same from a thread without an event loop (the operator commands' tests)."""
    server = server_for(cloud.env["MUMU_SMTP_URL"])
    with httpx.Client(base_url=cloud.url, timeout=30.0) as http:
        for email in emails:
            mail = server.take(email, "verify")
            r = http.post("/api/auth/verify", json={"token": mail.token})
            assert r.status_code == 200, r.text
