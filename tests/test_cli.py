"""The ``hefl`` command as a user runs it: real subprocesses, real ZeroMQ sockets, real keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hefl.cli import main

SMALL = ["--bits", "512", "--insecure"]


def hefl_cmd(*args: str, timeout: float = 120, cwd: Path | None = None):
    """Run ``hefl ARGS`` in a fresh interpreter; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "hefl.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def start_party(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hefl.cli", "party", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "objective,metric,low,high",
    [("multi:softprob", "test_accuracy", 0.6, 1.0), ("reg:squarederror", "test_rmse", 5, 20)],
)
def test_demo_vf2boost_objectives(objective, metric, low, high):
    proc = hefl_cmd("demo", "vf2boost", "--objective", objective, "--rows", "800", "--trees",
                    "1", "--depth", "2", "--inproc", *SMALL, "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["identical_to_plaintext_reference"] is True
    assert report["objective"] == objective and low < report[metric] < high


@pytest.mark.timeout(180)
def test_demo_vf2boost_one_process_per_party(tmp_path):
    trace, gantt = tmp_path / "trace.json", tmp_path / "gantt.png"
    proc = hefl_cmd("demo", "vf2boost", "--rows", "1500", "--trees", "2", "--depth", "3",
                    *SMALL, "--json", "--trace", str(trace), "--gantt", str(gantt))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["identical_to_plaintext_reference"] is True
    assert "process per party" in report["mode"]
    assert 0.8 < report["test_auc"] < 1.0
    stats = report["party_statistics"]
    assert set(stats) == {"active", "passive1"}
    assert stats["active"]["bytes_sent"] > 0 and stats["passive1"]["bytes_sent"] > 0
    assert stats["active"]["bytes_sent"] == stats["passive1"]["bytes_received"]
    assert json.loads(trace.read_text())["traceEvents"]
    assert gantt.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_demo_batchcrypt_inproc_three_clients(capsys):
    code = main(["demo", "batchcrypt", "--rounds", "2", "--inproc", *SMALL, "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clients"] == 3 and report["rounds"] == 2
    assert abs(report["accuracy_gap_points"]) < 0.5
    assert report["aggregator_received"] == ["CipherVector", "PublicKey", "RoundHeader"]
    assert set(report["party_statistics"]) == {"aggregator", "client0", "client1", "client2"}


def test_summary_is_one_screen(capsys):
    assert main(["demo", "batchcrypt", "--rounds", "1", "--clients", "2", "--inproc", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "aggregator" in out
    assert len(out.splitlines()) <= 24


@pytest.mark.timeout(120)
def test_progress_shows_when_piped_and_quiet_silences_it():
    argv = ["demo", "batchcrypt", "--rounds", "2", "--clients", "2", "--inproc", *SMALL]
    proc = hefl_cmd(*argv)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rounds ")]
    assert [line.split()[1] for line in lines] == ["0/2", "1/2", "2/2"], proc.stderr
    assert "s to go" in lines[1] and lines[2].endswith("done")
    assert "\r" not in proc.stderr  # a pipe gets lines, not a redrawn bar
    quiet = hefl_cmd(*argv, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_summary_units_and_verbose_details():
    from hefl._demos import format_report

    stats = {"bytes_sent": 2000, "bytes_received": 10, "busy_seconds": 1.0}
    report = {
        "protocol": "vf2boost",
        "mode": "inproc",
        "dataset": "Adult",
        "parties": 2,
        "trees": 3,
        "key_bits": 2048,
        "obfuscation": "djn-short",
        "native_kernel": True,
        "test_auc": 0.9,
        "identical_to_plaintext_reference": True,
        "seconds": 9.0,
        "seconds_per_tree": 3.0,
        "predict_seconds": 1.0,
        "optimistic_hit_rate": 0.5,
        "party_statistics": {"active": {**stats, "idle_seconds": 3.0, "idle_share": 0.75}},
    }
    short = format_report(report)
    assert "idle %" in short and "75%" in short and "waiting for another party" in short
    assert "obfuscator" not in short and "50%" not in short
    long = format_report(report, verbose=True)
    assert "short exponents" in long and "won at 50% of the nodes" in long


def test_party_help_groups_options_by_protocol():
    from hefl.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    party = commands.choices["party"]
    titles = {group.title: group for group in party._action_groups}
    vf2 = {a.dest for a in titles["VF2Boost options (--protocol vf2boost)"]._group_actions}
    bc = {a.dest for a in titles["BatchCrypt options (--protocol batchcrypt)"]._group_actions}
    assert {"trees", "depth", "bins", "rows"} <= vf2 and {"rounds", "quant_bits"} <= bc
    parsers = [build_parser()]
    for parser in parsers:  # every command and subcommand, depth first
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                parsers.extend(action.choices.values())
            elif action.option_strings:
                assert action.help, f"{parser.prog} {action.option_strings} has no help text"
    assert len(parsers) == 8  # hefl, demo (vf2boost, batchcrypt), party, keygen (2 kinds)


@pytest.mark.parametrize(
    ("argv", "code", "needles"),
    [
        (["demo", "vf2boost", "--frobnicate"], 2, ["unrecognized arguments: --frobnicate"]),
        (["demo", "vf2boost", "--trees", "zero"], 2, ["--trees"]),
        (["demo", "quantum"], 2, ["invalid choice"]),
        (["demo", "vf2boost", "--bits", "1024"], 1, ["--bits 1024", "--insecure"]),
        (["demo", "batchcrypt", "--quant-bits", "40", "--inproc"], 1, ["--quant-bits must be"]),
        (["demo", "vf2boost", "--bins", "1"], 1, ["--bins 1"]),
        (["demo", "batchcrypt", "--bits", "512"], 1, ["--bits 512", "--insecure"]),
        (["keygen", "paillier", "--bits", "100"], 1, ["--insecure"]),
        (["demo", "vf2boost", "--rows", "-5"], 2, ["--rows", "must be > 0"]),
        (["demo", "vf2boost", "--rows", "0"], 2, ["--rows", "must be > 0"]),
        (
            ["party", "--config", "nowhere.toml", "--name", "a", "--protocol", "vf2boost"],
            1,
            ["nowhere.toml"],
        ),
        (["demo", "vf2boost", "--gantt", "/no/such/folder/g.png"], 1, ["does not exist"]),
    ],
)
def test_user_mistakes_are_one_line_and_nonzero(argv, code, needles, tmp_path):
    proc = hefl_cmd(*argv, cwd=tmp_path, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert_one_line_error(proc.stderr, *needles)


def test_keygen_writes_key_files(tmp_path):
    proc = hefl_cmd("keygen", "paillier", "--bits", "512", "--insecure", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    from hefl.crypto import PrivateKey, PublicKey

    sk = PrivateKey.from_json((tmp_path / "paillier.key.json").read_text())
    pk = PublicKey.from_json((tmp_path / "paillier.pub.json").read_text())
    assert sk.public_key == pk and pk.n_bits == 512
    assert os.stat(tmp_path / "paillier.key.json").st_mode & 0o077 == 0
    proc = hefl_cmd("keygen", "curve", "--name", "alice", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    public = (tmp_path / "alice.key").read_text().strip()
    assert public in proc.stdout and len(public) == 40
    assert os.stat(tmp_path / "alice.key_secret").st_mode & 0o077 == 0
    # the default is 2048 bits; smaller keys are refused without the opt-in
    proc = hefl_cmd("keygen", "paillier", "--bits", "1024", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "2048")


def write_federation(
    tmp_path: Path, ports: list[int], names: list[str], curve: bool, **federation
) -> Path:
    lines = ["[federation]"]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in federation.items()]
    if curve:
        lines.append("curve = true")
    for name, port in zip(names, ports, strict=True):
        lines += [f"[parties.{name}]", f'address = "tcp://127.0.0.1:{port}"']
        if curve:
            assert hefl_cmd("keygen", "curve", "--name", name, "--out", "keys",
                            cwd=tmp_path).returncode == 0  # fmt: skip
            public = (tmp_path / "keys" / f"{name}.key").read_text().strip()
            lines += [f'public_key = "{public}"', f'secret_key_file = "keys/{name}.key_secret"']
    path = tmp_path / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.timeout(180)
def test_party_vf2boost_over_curve_with_a_paillier_key_file(tmp_path, free_ports):
    # the active party is named in the file, not implied by its place in it
    toml = write_federation(tmp_path, free_ports(2), ["shop", "bank"], curve=True, active="bank")
    assert hefl_cmd("keygen", "paillier", *SMALL, "--out", str(tmp_path)).returncode == 0
    flags = ["--config", str(toml), "--protocol", "vf2boost", "--rows", "1200", "--trees", "2",
             "--depth", "2", *SMALL]  # fmt: skip
    key = ["--paillier-key", str(tmp_path / "paillier.key.json")]
    procs = {
        "bank": start_party(*flags, "--name", "bank", "--out", "out", *key, cwd=tmp_path),
        "shop": start_party(*flags, "--name", "shop", "--out", "out", cwd=tmp_path),
    }
    outs = {n: p.communicate(timeout=150) for n, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1]
    assert "test AUC" in outs["bank"][0]
    from hefl.protocols.vf2boost import PartyModel

    bank = PartyModel.from_json((tmp_path / "out" / "bank.model.json").read_text())
    shop = PartyModel.from_json((tmp_path / "out" / "shop.model.json").read_text())
    assert bank.is_active and not shop.is_active and len(bank.trees) == 2


@pytest.mark.timeout(180)
def test_party_batchcrypt_three_hosts(tmp_path, free_ports):
    # every party is named freely (the file says which is the aggregator); the protocol
    # comes from the file
    names = ["bob", "hub", "alice"]
    toml = write_federation(
        tmp_path, free_ports(len(names)), names, curve=False,
        protocol="batchcrypt", aggregator="hub",
    )  # fmt: skip
    flags = ["--config", str(toml), "--rounds", "2", *SMALL, "--json"]
    procs = {n: start_party(*flags, "--name", n, cwd=tmp_path) for n in names}
    outs = {n: p.communicate(timeout=150) for n, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1]
    report = json.loads(outs["alice"][0])  # the first client (in name order) evaluates
    assert len(report["test_accuracy"]) == 2 and report["test_accuracy"][-1] > 0.7
    assert json.loads(outs["hub"][0])["statistics"]["bytes_received"] > 0


@pytest.mark.timeout(60)
def test_party_whose_peer_never_starts(tmp_path, free_ports):
    toml = write_federation(
        tmp_path, free_ports(2), ["bank", "shop"], curve=False, connect_timeout=3, active="bank"
    )
    start = time.monotonic()
    proc = hefl_cmd("party", "--config", str(toml), "--name", "bank", "--protocol", "vf2boost",
                    *SMALL, cwd=tmp_path, timeout=50)  # fmt: skip
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "shop", "did not come up")
    assert time.monotonic() - start < 30


@pytest.mark.timeout(60)
def test_party_port_in_use_and_unknown_party(tmp_path, free_ports):
    toml = write_federation(tmp_path, free_ports(2), ["bank", "shop"], curve=False, active="bank")
    port = int(toml.read_text().split("127.0.0.1:")[1].split('"')[0])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        proc = hefl_cmd("party", "--config", str(toml), "--name", "bank", "--protocol",
                        "vf2boost", *SMALL, cwd=tmp_path, timeout=50)  # fmt: skip
    finally:
        blocker.close()
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "already in use")
    proc = hefl_cmd("party", "--config", str(toml), "--name", "mallory", "--protocol",
                    "vf2boost", cwd=tmp_path, timeout=50)  # fmt: skip
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "mallory", "bank")
    proc = hefl_cmd("party", "--config", str(toml), "--name", "bank", "--protocol",
                    "batchcrypt", *SMALL, cwd=tmp_path, timeout=50)  # fmt: skip
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "does not say which party is the aggregator", "add")
    proc = hefl_cmd("party", "--config", str(toml), "--name", "shop", "--protocol",
                    "vf2boost", "--paillier-key", "k.json", cwd=tmp_path, timeout=50)  # fmt: skip
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "--paillier-key is for the active party, 'bank'")


def _running_with(needle: str) -> list[int]:
    """Pids of live processes whose command line mentions ``needle``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


@pytest.mark.timeout(60)
def test_parties_started_with_different_protocols_fail_fast(tmp_path, free_ports):
    names = ["aggregator", "client0", "client1"]
    toml = write_federation(
        tmp_path, free_ports(len(names)), names, curve=False,
        active="aggregator", aggregator="aggregator",
    )  # fmt: skip
    flags = ["--config", str(toml), "--rounds", "2", *SMALL]
    protocol = {"aggregator": "vf2boost", "client0": "batchcrypt", "client1": "batchcrypt"}
    start = time.monotonic()
    procs = {n: start_party(*flags, "--name", n, "--protocol", protocol[n], cwd=tmp_path)
             for n in names}  # fmt: skip
    outs = {n: p.communicate(timeout=40) for n, p in procs.items()}
    # start-up (imports) takes about a second; the handshake fails them within milliseconds
    assert time.monotonic() - start < 10
    for name, p in procs.items():
        assert p.returncode == 1, outs[name]
        assert_one_line_error(outs[name][1], "disagrees on 'protocol'")
    assert "client0 has 'batchcrypt', aggregator has 'vf2boost'" in outs["aggregator"][1] or (
        "client1 has 'batchcrypt', aggregator has 'vf2boost'" in outs["aggregator"][1]
    )
    for name in ("client0", "client1"):
        stderr = outs[name][1]
        assert "'vf2boost'" in stderr and "'batchcrypt'" in stderr
    assert not [p.pid for p in procs.values() if p.poll() is None]
    assert not _running_with(str(toml))


@pytest.mark.timeout(60)
def test_hosts_whose_files_name_different_active_parties_fail_fast(tmp_path, free_ports):
    ports = free_ports(2)
    files = {}
    for name, active in (("bank", "bank"), ("shop", "shop")):
        (tmp_path / name).mkdir()
        files[name] = write_federation(
            tmp_path / name, ports, ["bank", "shop"], curve=False, active=active
        )
    start = time.monotonic()
    procs = {
        n: start_party("--config", str(files[n]), "--name", n, "--protocol", "vf2boost",
                       *SMALL, cwd=tmp_path)
        for n in files
    }  # fmt: skip
    outs = {n: p.communicate(timeout=40) for n, p in procs.items()}
    assert time.monotonic() - start < 10  # start-up, then the handshake fails both at once
    for name, p in procs.items():
        assert p.returncode == 1, outs[name]
        assert_one_line_error(outs[name][1], "disagrees on 'roles'", "active=bank", "active=shop")


def test_party_refuses_plain_tcp_off_this_host(tmp_path):
    toml = tmp_path / "federation.toml"
    text = (
        '[federation]\nactive = "bank"\n[parties.bank]\naddress = "tcp://10.1.2.3:7001"\n'
        '[parties.shop]\naddress = "tcp://127.0.0.1:7002"\n'
    )
    toml.write_text(text)
    proc = hefl_cmd("party", "--config", str(toml), "--name", "shop", "--protocol", "vf2boost",
                    *SMALL, cwd=tmp_path, timeout=50)  # fmt: skip
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "tcp://10.1.2.3:7001", "curve = true", "insecure_transport")


def test_keygen_curve_prints_the_lines_a_federation_file_needs(tmp_path):
    import hefl

    proc = hefl_cmd("keygen", "curve", "--name", "alice", "--name", "bob", "--out", "keys",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace(
        "[parties.alice]", '[parties.alice]\naddress = "tcp://10.0.0.1:7001"'
    )
    text = text.replace("[parties.bob]", '[parties.bob]\naddress = "tcp://10.0.0.2:7001"')
    text = "[federation]\n" + text.split("[federation]\n", 1)[1]
    (tmp_path / "federation.toml").write_text(text)
    fed = hefl.load_federation(tmp_path / "federation.toml")  # off-host addresses, with CURVE
    assert fed.curve and fed.names == ["alice", "bob"]
    alice = (tmp_path / "keys" / "alice.key").read_text().strip()
    assert fed.parties["alice"].public_key == alice
    assert fed.parties["bob"].secret_key_file == tmp_path / "keys" / "bob.key_secret"
    proc = hefl_cmd("keygen", "curve", "--name", "a b ", cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "party name")
