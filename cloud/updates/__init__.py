"""Over-the-air updates, cloud side: releases, staged rollouts, each device's version and update
state, ``update_offer``/``update_status``, and the signed repository's files (docs/updates.md).

The cloud decides *who* gets a release and *when*; it never decides whether a release is genuine
(the devices check that with TUF against a trust root the cloud does not hold).
"""
