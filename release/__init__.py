"""``mumu-release``: build release bundles and keep the signed (TUF) update repository."""
