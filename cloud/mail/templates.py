"""The words of every mail, as plain text and HTML, with the product's name and the one link."""

from __future__ import annotations

import re
from html import escape

from cloud.mail.message import Mail, MailKind

PRODUCT = "MuMu Camera"


def _one_line(text: str, limit: int = 80) -> str:
    """Words a person chose (a camera's name) made safe for a subject: no control characters
    (a CR/LF would start a header of its own), bounded."""
    flat = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _mail(kind: MailKind, to: str, subject: str, lines: list[str], link: str, action: str) -> Mail:
    text = "\n\n".join([*lines, f"{action}: {link}", f"— {PRODUCT}"]) + "\n"
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in lines)
    html = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<h1>{escape(PRODUCT)}</h1>{paragraphs}"
        f'<p><a href="{escape(link, quote=True)}">{escape(action)}</a></p>'
        f'<p style="color:#666">{escape(link)}</p></body></html>'
    )
    return Mail(to=to, kind=kind, subject=f"{PRODUCT}: {subject}", text=text, html=html, link=link)


def verify_address(to: str, link: str, hours: int) -> Mail:
    return _mail(
        "verify",
        to,
        "confirm your address",
        [
            f"Welcome to {PRODUCT}. Confirm that {to} is your address to receive cameras "
            "shared with you and to be able to reset your password.",
            f"The link works once, for {hours} hours. If you did not sign up, ignore this mail.",
        ],
        link,
        "Confirm your address",
    )


def reset_password(to: str, link: str, minutes: int) -> Mail:
    return _mail(
        "reset",
        to,
        "choose a new password",
        [
            f"Somebody asked to reset the password of the {PRODUCT} account {to}.",
            f"The link works once, for {minutes} minutes; choosing a new password signs out "
            "every browser. If it was not you, ignore this mail: your password stays.",
        ],
        link,
        "Choose a new password",
    )


def already_registered(to: str, link: str) -> Mail:
    return _mail(
        "already_registered",
        to,
        "you already have an account",
        [
            f"Somebody tried to create a {PRODUCT} account with {to}, which has one already.",
            "If it was you and you forgot your password, choose a new one. If not, ignore "
            "this mail: nothing changed.",
        ],
        link,
        "Choose a new password",
    )


def confirm_new_address(to: str, old: str, link: str, hours: int) -> Mail:
    return _mail(
        "confirm_new_address",
        to,
        "confirm your new address",
        [
            f"The {PRODUCT} account {old} asked to use {to} from now on.",
            f"Confirm it to make the change; until then {old} stays. The link works once, "
            f"for {hours} hours.",
        ],
        link,
        "Confirm your new address",
    )


def address_changed(to: str, new: str, link: str) -> Mail:
    return _mail(
        "address_changed",
        to,
        "your address was changed",
        [
            f"The {PRODUCT} account that used {to} now uses {new}.",
            "If you did not do this, sign in and change your password, or write to the "
            "people who run this service.",
        ],
        link,
        f"Open {PRODUCT}",
    )


def invitation(
    to: str, inviter: str, camera: str, link: str, has_account: bool, confirmed: bool = True
) -> Mail:
    """``has_account``: ``to`` has an account (the link opens the camera list, where the
    invitation waits; ``confirmed``: its address is verified, else it is told to confirm it
    first); else the link opens the sign-up with the address filled in."""
    if not has_account:
        how = (
            "Create an account with this address to watch: the invitation waits for it, "
            "and you accept it once you have confirmed the address."
        )
    elif confirmed:
        how = "Sign in with this address to accept it from your camera list."
    else:
        how = (
            "Confirm this address first (the link in the mail sent when you signed up), "
            "then accept it from your camera list."
        )
    return _mail(
        "invitation",
        to,
        f"{_one_line(inviter)} shares the camera “{_one_line(camera)}” with you",
        [f"{inviter} invites you to watch their camera “{camera}” live.", how],
        link,
        "Open the invitation" if has_account else "Create an account to watch",
    )
