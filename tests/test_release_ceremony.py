"""The key ceremony as docs/updates.md tells it, through the ``mumu-release`` command line: each
root key made by its holder under their own password, the first root and every rotation signed
one holder at a time, the targets key in a PKCS#11 token (SoftHSM) - and a real TUF client (the
updater's) trusting what came out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.update.verify import SignedRepository
from tests.update_fixtures import RepoServer, serve, tiny_bundle

PROJECT = Path(__file__).resolve().parent.parent
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


class Cli:
    """``mumu-release`` as a holder runs it: their own environment (password, PIN) each time."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
        path = [str(PROJECT), *filter(None, [base.get("PYTHONPATH")])]
        self.env = {**base, "PYTHONPATH": os.pathsep.join(path), **(env or {})}

    def run(
        self, *args: object, password: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if password is not None:
            env["MUMU_KEY_PASSWORD"] = password
        done = subprocess.run(
            [sys.executable, "-m", "release.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode == 1, (done.stdout, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
        return done


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServer]:
    (tmp_path / "repo").mkdir()
    yield from serve(tmp_path / "repo")


def keyid(pub: Path) -> str:
    return str(json.loads(pub.read_text())["keyid"])


def client_sees(server: RepoServer, trust_root: Path, state: Path, name: str) -> str:
    """What a camera with ``trust_root`` in its image verifies about ``name``: its sha256."""
    info, _url = SignedRepository(server.url, state, trust_root).target(name)
    return str(info.hashes["sha256"])


def holders(cli: Cli, tmp: Path, count: int, first: int = 1) -> list[Path]:
    """Each holder's own machine (a directory), key and password."""
    out = []
    for i in range(first, first + count):
        machine = tmp / f"holder{i}"
        cli.run("root", "keygen", "--keys", machine, "--name", f"holder{i}", password=f"pw-{i}")
        assert b"ENCRYPTED" in (machine / f"holder{i}.key").read_bytes()
        out.append(machine / f"holder{i}")
    return out


def test_each_root_key_is_made_and_signs_on_its_own_machine(
    cli: Cli, tmp_path: Path, server: RepoServer
) -> None:
    repo = tmp_path / "repo"
    # a root key is never written in the clear
    done = cli.run("root", "keygen", "--keys", tmp_path / "x", "--name", "lazy", ok=False)
    assert "always encrypted" in done.stderr and not (tmp_path / "x" / "lazy.key").exists()
    h1, h2, h3 = holders(cli, tmp_path, 3)
    cli.run("keygen", "--keys", tmp_path / "manager", "--name", "targets", password="pw-t")
    cli.run("keygen", "--keys", tmp_path / "server", "--name", "online")
    targets, online = tmp_path / "manager" / "targets", tmp_path / "server" / "online"
    root = tmp_path / "usb" / "root.json"
    root.parent.mkdir()
    init = ["init", "--threshold", 2, "--out", root]
    for h in (h1, h2, h3):
        init += ["--root-key", h.with_suffix(".pub.json")]
    cli.run(*init, "--targets-key", f"{targets}.pub.json", "--online-key", f"{online}.pub.json")
    unsigned = json.loads(root.read_text())
    assert unsigned["signatures"] == []
    assert unsigned["signed"]["roles"]["root"]["threshold"] == 2
    assert sorted(unsigned["signed"]["roles"]["root"]["keyids"]) == sorted(
        keyid(h.with_suffix(".pub.json")) for h in (h1, h2, h3)
    )
    # nothing reaches the repository short of the threshold
    assert cli.run("root", "verify", root, ok=False).returncode == 1
    publish = ["root", "publish", root, "--repo", repo]
    keys = ["--targets-key", f"{targets}.key", "--online-key", f"{online}.key"]
    assert "not enough root signatures" in cli.run(*publish, *keys, ok=False).stderr
    # each holder signs in turn, with their own key and password only
    done = cli.run("root", "sign", root, "--key", f"{h1}.key", password="pw-2", ok=False)
    assert "MUMU_KEY_PASSWORD" in done.stderr
    cli.run("root", "sign", root, "--key", f"{h1}.key", password="pw-1")
    assert "not a root key" in (
        cli.run("root", "sign", root, "--key", f"{targets}.key", password="pw-t", ok=False).stderr
    )
    assert "not enough" in cli.run(*publish, *keys, password="pw-t", ok=False).stderr
    cli.run("root", "sign", root, "--key", f"{h2}.key", password="pw-2")
    assert cli.run("root", "verify", root).returncode == 0
    # the first root needs the targets and online keys too: they sign the first targets etc.
    assert "targets key too" in cli.run(*publish, ok=False).stderr
    cli.run(*publish, *keys, password="pw-t")
    assert not list(repo.glob("metadata/2.*"))
    published = json.loads((repo / "metadata/1.root.json").read_text())["signatures"]
    assert sorted(s["keyid"] for s in published) == sorted(
        keyid(h.with_suffix(".pub.json")) for h in (h1, h2)
    )
    assert "holds a repository already" in cli.run(*publish, *keys, ok=False).stderr

    bundle = tiny_bundle(tmp_path / "dist", "1.1.0")
    cli.run("publish", "--repo", repo, *keys, bundle, password="pw-t")
    baked = tmp_path / "image-root.json"
    shutil.copyfile(repo / "metadata/1.root.json", baked)
    camera = tmp_path / "camera-tuf"
    name = "mumu-agent-1.1.0-x86_64.tar"
    assert len(client_sees(server, baked, camera, name)) == 64

    # rotation, one holder at a time: holder3 leaves, holder4 joins
    (h4,) = holders(cli, tmp_path, 1, first=4)
    nxt = tmp_path / "usb" / "root-2.json"
    cli.run(
        "root",
        "next",
        "--repo",
        repo,
        "--out",
        nxt,
        "--remove-root-key",
        keyid(h3.with_suffix(".pub.json")),
        "--add-root-key",
        h4.with_suffix(".pub.json"),
    )
    # a leaving holder's key is no key of the new root: it may sign only against the old one
    assert "not a root key" in (
        cli.run("root", "sign", nxt, "--key", f"{h3}.key", password="pw-3", ok=False).stderr
    )
    cli.run("root", "sign", nxt, "--key", f"{h3}.key", "--repo", repo, password="pw-3")
    cli.run("root", "sign", nxt, "--key", f"{h4}.key", "--repo", repo, password="pw-4")
    # old root: holder3 only (1 of 2); new: holder4 only (1 of 2)
    done = cli.run("root", "verify", nxt, "--repo", repo, ok=False)
    assert "the old root needs 2 (1 given), the new one 2 (1 given)" in done.stdout
    assert keyid(h1.with_suffix(".pub.json")) in done.stdout.split("may still sign")[1]
    assert "not enough" in cli.run("root", "publish", nxt, "--repo", repo, ok=False).stderr
    cli.run("root", "sign", nxt, "--key", f"{h1}.key", "--repo", repo, password="pw-1")
    cli.run("root", "verify", nxt, "--repo", repo)
    cli.run("root", "publish", nxt, "--repo", repo)
    assert (repo / "metadata/2.root.json").exists()
    # the camera, still on its baked v1, walks to v2 and keeps trusting the repository
    cli.run("renew", "--repo", repo, "--online-key", f"{online}.key")
    assert len(client_sees(server, baked, camera, name)) == 64
    trusted = json.loads((camera / "root.json").read_text())["signed"]
    assert trusted["version"] == 2
    assert keyid(h4.with_suffix(".pub.json")) in trusted["roles"]["root"]["keyids"]
    assert keyid(h3.with_suffix(".pub.json")) not in trusted["roles"]["root"]["keyids"]
    # the demo's one-machine init still works, and says what it is
    demo = cli.run("init", "--repo", tmp_path / "demo", "--keys", tmp_path / "demo-keys")
    assert "demo" in demo.stderr


@pytest.fixture
def token(tmp_path: Path) -> dict[str, str]:
    """A SoftHSM token holding an ECDSA P-256 key made inside it (pkcs11-tool, as a release
    manager would with a real token); the environment that reaches it."""
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    init = ["softhsm2-util", "--init-token", "--free", "--label", "mumu-targets"]
    subprocess.run(
        [*init, "--so-pin", "87654321", "--pin", "123456"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM,
            "--token-label",
            "mumu-targets",
            "--login",
            "--pin",
            "123456",
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "02",
            "--label",
            "targets",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {"SOFTHSM2_CONF": str(conf), "PYKCS11LIB": str(SOFTHSM)}


def test_the_targets_key_in_a_pkcs11_token_signs_releases_a_client_trusts(
    tmp_path: Path, token: dict[str, str], server: RepoServer
) -> None:
    repo = tmp_path / "repo"
    uri = "hsm:2?label=mumu-targets"
    cli = Cli(token)
    # the public key is read from the token (no PIN needed for it)
    done = cli.run("token-key", "--key", uri, "--out", tmp_path / "t.pub.json")
    assert json.loads((tmp_path / "t.pub.json").read_text())["scheme"] == "ecdsa-sha2-nistp256"
    assert keyid(tmp_path / "t.pub.json") in done.stdout
    (h1,) = holders(cli, tmp_path, 1)
    cli.run("keygen", "--keys", tmp_path / "server", "--name", "online")
    online = tmp_path / "server" / "online"
    root = tmp_path / "root.json"
    # init takes the token key's URI as well as its .pub.json
    cli.run(
        "init",
        "--root-key",
        f"{h1}.pub.json",
        "--threshold",
        1,
        "--targets-key",
        uri,
        "--online-key",
        f"{online}.pub.json",
        "--out",
        root,
    )
    # without the PIN, or with a wrong one, nothing is signed
    signed = json.loads(root.read_text())["signed"]
    assert signed["roles"]["targets"]["keyids"] == [keyid(tmp_path / "t.pub.json")]
    cli.run("root", "sign", root, "--key", f"{h1}.key", password="pw-1")
    publish = ["root", "publish", root, "--repo", repo, "--online-key", f"{online}.key"]
    done = cli.run(*publish, "--targets-key", uri, ok=False)
    assert "MUMU_PKCS11_PIN" in done.stderr and not (repo / "metadata").exists()
    wrong = Cli({**token, "MUMU_PKCS11_PIN": "000000"})
    done = wrong.run(*publish, "--targets-key", uri, ok=False)
    assert "PIN" in done.stderr and not (repo / "metadata" / "1.root.json").exists()

    holder = Cli({**token, "MUMU_PKCS11_PIN": "123456"})
    holder.run(*publish, "--targets-key", uri)
    bundle = tiny_bundle(tmp_path / "dist", "1.1.0")
    keys = ["--targets-key", uri, "--online-key", f"{online}.key"]
    holder.run("publish", "--repo", repo, *keys, bundle)
    targets = json.loads((repo / "metadata/2.targets.json").read_text())
    assert [s["keyid"] for s in targets["signatures"]] == [keyid(tmp_path / "t.pub.json")]
    # a PEM key is not the targets key of this repository any more
    cli.run("keygen", "--keys", tmp_path / "pem", "--name", "targets")
    done = cli.run(
        "publish",
        "--repo",
        repo,
        "--targets-key",
        tmp_path / "pem/targets.key",
        "--online-key",
        f"{online}.key",
        bundle,
        ok=False,
    )
    assert "not a targets key" in done.stderr
    # the camera (python-tuf's client, securesystemslib verifying the ECDSA signature)
    name = "mumu-agent-1.1.0-x86_64.tar"
    sha = client_sees(server, repo / "metadata/1.root.json", tmp_path / "camera", name)
    import hashlib

    assert sha == hashlib.sha256(bundle.read_bytes()).hexdigest()
    # renewing targets from the token works too (twice a year)
    holder.run("renew", "--repo", repo, *keys)
    assert (repo / "metadata/3.targets.json").exists()
