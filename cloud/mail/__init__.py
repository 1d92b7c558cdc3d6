"""E-mail the cloud sends to prove addresses and to invite: verification, password reset, address
changes, invitations.  ``templates`` renders each kind (plain text + HTML), ``outbox`` queues
them (bounded, never awaited by a request) and hands them to a ``Transport``: SMTP
(``MUMU_SMTP_URL``) or, without it, the log (the embedded default and the demo)."""
