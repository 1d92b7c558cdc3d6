"""Over-the-air updates of the agent, device side (docs/updates.md).

* :mod:`device.update.install` - a bundle's wheels into ``/opt/mumu/releases/<version>`` and the
  ``current``/``committed`` links (standard library only: the image build uses it too).
* :mod:`device.update.verify` - The Update Framework's client: is a bundle genuine?
* :mod:`device.update.fetch` - resumable downloads (HTTP range).
* :mod:`device.update.machine` - the updater's state machine: offer, download, install, switch,
  probation, commit or roll back; with an injectable clock, root directory and service manager.
* :mod:`device.update.link` - what the unprivileged agent shares with the privileged updater:
  the offer it received, how many viewers watch, and the status it reports to the cloud.
* :mod:`device.update.cli` - ``mumu-update``, run by the ``mumu-update*`` systemd units as root.
"""
