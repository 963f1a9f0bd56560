"""The `fleet:` section: loaded, checked with located errors, and absent means no etcd code."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from remediator.cli import main
from remediator.load import load

BASE = """\
sources:
  site: {type: probe, url: 'http://127.0.0.1/'}
services:
  fpm: {kind: php-fpm, pid_file: /run/php/php8.2-fpm.pid, start: [/usr/sbin/php-fpm8.2]}
playbooks:
  - name: fpm-down
    when: {probe_failing: {probe: site}}
    steps: [{restart: fpm}]
"""


def _config(root: Path, text: str) -> Path:
    (root / "playbooks.d").mkdir(exist_ok=True)
    cfg = root / "remediator.yaml"
    cfg.write_text(text)
    cfg.chmod(0o644)
    return cfg


def test_a_fleet_section_loads_with_its_defaults(tmp_path: Path) -> None:
    text = BASE + "fleet: {etcd: ['http://127.0.0.1:2379'], pool: web}\n"
    loaded = load(_config(tmp_path, text))
    assert loaded.config is not None, loaded.all_errors()
    fleet = loaded.config.fleet
    assert fleet is not None
    assert (fleet.pool, fleet.max_concurrent, fleet.lease_ttl) == ("web", 1, 10.0)
    assert fleet.on_unreachable == "hold" and fleet.host is None
    assert all(pb.fleet for pb in loaded.playbooks)


def test_a_playbook_may_opt_out(tmp_path: Path) -> None:
    text = BASE.replace("steps: [{restart: fpm}]", "steps: [{restart: fpm}]\n    fleet: false")
    loaded = load(_config(tmp_path, text))
    assert loaded.config is not None, loaded.all_errors()
    assert [pb.fleet for pb in loaded.playbooks] == [False]


def test_fleet_errors_are_located(tmp_path: Path) -> None:
    text = BASE + "fleet:\n  etcd: ['ftp://x']\n  pool: web\n  on_unreachable: maybe\n"
    cfg = _config(tmp_path, text)
    errors = [str(e) for e in load(cfg).all_errors()]
    assert any(e.startswith(f"{cfg}:10:") and "fleet.etcd" in e for e in errors), errors
    assert any(e.startswith(f"{cfg}:12:") and "maybe" in e for e in errors), errors


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    text = BASE + "fleet: {etcd: ['https://10.0.0.1:2379'], pool: web, cert_file: /etc/c.pem}\n"
    errors = [str(e) for e in load(_config(tmp_path, text)).all_errors()]
    assert any("give both cert_file and key_file" in e for e in errors), errors


def test_without_a_fleet_section_no_etcd_code_is_imported(tmp_path: Path) -> None:
    cfg = _config(tmp_path, BASE)
    code = (
        "import sys; from pathlib import Path; from remediator import cli, daemon; "
        "from remediator.load import load; "
        f"assert load(Path({str(cfg)!r})).config is not None; "
        "print(sorted(m for m in sys.modules if m.startswith('remediator.fleet')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(out.strip().strip("[]").replace("'", "").split(", "))
    # the declarations and the engine's words only: no client, no semaphore, no thread
    assert not loaded & {
        "remediator.fleet.etcd",
        "remediator.fleet.semaphore",
        "remediator.fleet.gate",
    }
    assert "remediator.fleet.options" in loaded  # the check reached the fleet at all


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def _check(cfg: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["-c", str(cfg), "check"], out, err)
    return rc, err.getvalue()


def _tls_config(root: Path, **files: str) -> Path:
    (root / "etcd").mkdir(mode=0o755)
    modes = {"password": 0o600, "key.pem": 0o600}
    for name, text in {
        "ca.pem": CERT,
        "cert.pem": CERT,
        "key.pem": KEY,
        "password": "pw\n",
    }.items():
        path = root / "etcd" / name
        path.write_text(files.get(name, text))
        path.chmod(modes.get(name, 0o644))
    lines = [
        "fleet:",
        "  etcd: ['https://127.0.0.1:2379']",
        "  pool: web",
        f"  ca_file: {root}/etcd/ca.pem",
        f"  cert_file: {root}/etcd/cert.pem",
        f"  key_file: {root}/etcd/key.pem",
        "  username: web",
        f"  password_file: {root}/etcd/password",
    ]
    return _config(root, BASE + "\n".join(lines) + "\n")


def test_check_accepts_the_fleet_files(tmp_path: Path) -> None:
    rc, err = _check(_tls_config(tmp_path))
    assert rc == 0, err
    assert "fleet" not in err


def test_check_locates_each_fleet_file_it_cannot_use(tmp_path: Path) -> None:
    cfg = _tls_config(tmp_path, **{"cert.pem": "not a certificate\n"})
    (tmp_path / "etcd" / "ca.pem").unlink()
    (tmp_path / "etcd" / "password").chmod(0o644)  # a secret others can read: refused
    rc, err = _check(cfg)
    assert rc != 0, err
    lines = err.splitlines()
    assert (
        f"{cfg}:12:12: fleet.ca_file: cannot read {tmp_path}/etcd/ca.pem: No such file or directory"
        in lines
    ), err
    assert any(
        ln.startswith(f"{cfg}:13:14: fleet.cert_file: ") and "is not a PEM certificate" in ln
        for ln in lines
    ), err
    assert any(
        ln.startswith(f"{cfg}:16:18: fleet.password_file: refusing to use ")
        and "readable by others" in ln
        for ln in lines
    ), err
    assert "Traceback" not in err


def test_check_warns_of_a_client_key_others_can_read(tmp_path: Path) -> None:
    cfg = _tls_config(tmp_path)
    key = tmp_path / "etcd" / "key.pem"
    key.chmod(0o644)
    rc, err = _check(cfg)
    assert rc == 0, err
    warning = f"warning: {cfg}:14:13: fleet.key_file: the client key {key} is readable by others"
    assert warning in err, err
    assert f"chmod 0600 {key}" in err
