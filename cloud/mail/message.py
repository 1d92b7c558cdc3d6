"""One e-mail, rendered and ready to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: What a mail is for (a label of ``mumu_mail_total``).
MailKind = Literal[
    "verify",  # prove the address of a new account
    "reset",  # choose a new password
    "already_registered",  # somebody signed up with an address that has an account
    "confirm_new_address",  # prove a new address before it replaces the old one
    "address_changed",  # tells the old address it was replaced
    "invitation",  # an owner invites this address to watch a camera
]


@dataclass(frozen=True)
class Mail:
    to: str
    kind: MailKind
    subject: str
    text: str
    html: str
    #: The one link the mail is about (shown in the log and the demo's terminal).
    link: str | None = None
