"""
The Debian package for real: built from a copy of this tree with C{dpkg-buildpackage}, checked
by lintian, installed with C{dpkg -i}, its unit's C{ExecStart} run by hand as the unit would
(the unit's user, environment and options, a fake C{NOTIFY_SOCKET}), pushed to and pulled
from, reloaded, stopped, then purged.

It needs root and the build tools (C{.ci/run} installs them): without them it is skipped, with
the reason, except on CI (C{CI=true}), where that is a failure. It refuses to run where
twistreg is already installed, or its storage exists: the purge would delete that registry.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.server import ROOT, Client, wait_until
from tests.test_notify import ServiceManager
from tests.test_pool import Load
from tests.test_push_pull import BASE, CHILD, make_layer, push_image
from twistreg.checksums import payload_checksum

pytestmark = pytest.mark.integration

PACKAGE = "twistreg"
UNIT = Path("/lib/systemd/system/twistreg.service")
VENV = Path("/usr/lib/twistreg")
STATE = Path("/var/lib/twistreg")
BUILD_TOOLS = ("dpkg-buildpackage", "dh_virtualenv", "lintian", "setpriv")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where a package's files could be left behind (the source tree may be anywhere else).
SYSTEM_DIRS = ("/etc", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/share", "/lib/systemd",
               "/var/lib", "/var/log", "/var/cache", "/run")


def _run(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run C{command}; its output (both streams) in the error if it fails."""
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{shlex.join(command)} exited {done.returncode}:\n"
                             f"{done.stdout[-6000:]}")
    return done


def _installed() -> bool:
    done = _run("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE, check=False)
    return done.returncode == 0 and done.stdout not in ("", "not-installed")


def _unavailable() -> str | None:
    """Why this machine cannot run the package test, or None."""
    if os.geteuid() != 0:
        return "the Debian package test needs root (it installs and purges a system package)"
    missing = [tool for tool in BUILD_TOOLS
               if shutil.which(tool, path=SYSTEM_PATH) is None]
    if missing:
        return (f"the Debian package test needs {', '.join(missing)}: "
                "apt-get install -y dh-virtualenv lintian (as .ci/run does)")
    if _installed() or STATE.exists():
        return (f"{PACKAGE} is installed here (or {STATE} exists): the test would replace it "
                "and purge its storage; run it on a machine without twistreg")
    return None


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    """The package, built once for the module from a copy of the tree (no artefacts here)."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Debian package test: {reason}")
        pytest.skip(reason)
    build = tmp_path_factory.mktemp("debian-build")
    source = build / "twistreg"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__", "build", "*.egg-info",
        "dropin.cache"))
    # Debian's tools and interpreter only: no virtualenv of the test run leaks into the build.
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = SYSTEM_PATH
    _run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=source, env=env, timeout=1200)
    [package] = build.glob(f"{PACKAGE}_*.deb")
    return package


@pytest.fixture(scope="module")
def installed(deb: Path):
    """The package installed with dpkg -i; purged afterwards, whatever happened."""
    try:
        _run("dpkg", "-i", str(deb), env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        yield deb
    finally:
        if _installed():
            _run("dpkg", "--purge", PACKAGE, check=False)
        shutil.rmtree(STATE, ignore_errors=True)


def test_the_package_is_lintian_clean(deb):
    """No lintian error (warnings allowed; overrides carry their reason)."""
    done = _run("lintian", "--fail-on", "error", str(deb), check=False)
    errors = [line for line in done.stdout.splitlines() if line.startswith("E:")]
    assert done.returncode == 0 and errors == [], done.stdout


def test_the_package_bundles_its_dependencies_and_nothing_of_the_build(deb):
    # The interpreter the virtualenv was built for, by its versioned name.
    depends = _run("dpkg-deb", "-f", str(deb), "Depends").stdout
    assert re.search(r"\bpython3\.\d+\b", depends), depends
    contents = _run("dpkg-deb", "-c", str(deb)).stdout
    assert "./usr/lib/twistreg/bin/twist\n" in contents
    assert "./usr/bin/twistreg-admin\n" in contents
    assert "site-packages/twisted/plugins/twistreg_plugin.py" in contents
    # What twistreg imports, and nothing it does not (txaio was once declared).
    assert "site-packages/setproctitle/" in contents and "site-packages/txaio" not in contents
    assert "__pycache__" not in contents  # written at install time, by postinst
    # The bundle, not a build tree: a few tens of MB at most.
    assert deb.stat().st_size < 40 * 2**20


def test_install_creates_the_user_the_storage_and_the_plugin_cache(installed):
    user = pwd.getpwnam("twistreg")
    assert user.pw_dir == str(STATE) and user.pw_shell.endswith("nologin")
    assert user.pw_uid < 1000  # a system user
    stat = STATE.stat()
    assert (stat.st_uid, oct(stat.st_mode & 0o777)) == (user.pw_uid, "0o750")
    # Written by root at install time, so the service never tries to.
    [cache] = VENV.glob("lib/python3*/site-packages/twisted/plugins/dropin.cache")
    assert cache.stat().st_uid == 0
    conffiles = _run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert "/etc/twistreg/config.yml" in conffiles and "/etc/default/twistreg" in conffiles
    assert Path("/etc/systemd/system/multi-user.target.wants/twistreg.service").is_symlink()
    # Every compiled module of the bundle loads (dh_strip went over them).
    check = ("import importlib, pathlib, sys\n"
             "site = next(pathlib.Path(p) for p in sys.path if p.endswith('site-packages'))\n"
             "for so in site.rglob('*.so'):\n"
             "    parts = so.relative_to(site).parts\n"
             "    importlib.import_module('.'.join(parts[:-1] + (parts[-1].split('.')[0],)))\n")
    _run(str(VENV / "bin/python"), "-c", check)
    assert "twistreg" in _run(str(VENV / "bin/twist"), "--help").stdout


def test_the_admin_command_runs_on_the_services_configuration(installed):
    """twistreg-admin reads what the unit reads, as the service's user."""
    shown = json.loads(_run("/usr/bin/twistreg-admin", "config", "--json").stdout)
    assert (shown["flavor"], shown["storage"], shown["storage_path"]) == (
        "prod", "local", str(STATE))
    done = _run("/usr/bin/twistreg-admin", "purge-uploads")
    assert "removed 0 stale uploads" in done.stdout


def test_the_unit_verifies(installed):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    done = _run("systemd-analyze", "verify", str(UNIT), check=False)
    assert done.returncode == 0 and "twistreg" not in done.stdout, done.stdout


def test_the_service_serves_reloads_and_stops_as_systemd_would_run_it(installed, tmp_path):
    service = _unit_service_section(UNIT.read_text())
    assert service["Type"] == ["notify"] and service["KillMode"] == ["mixed"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    env = _unit_environment(service)
    # The shipped configuration, as the unit selects it: port 5000, storage in /var/lib.
    settings = _run(str(VENV / "bin/python"), "-c", (
        "import json; from twistreg.config import load_settings\n"
        "s = load_settings('/etc/twistreg/config.yml')\n"
        "print(json.dumps([s.server.endpoints(), s.storage, s.storage_path, s.server.workers]))"
    ), env=env).stdout
    assert json.loads(settings) == [["tcp:5000"], "local", str(STATE), None]

    # Loopback only, on a free port: the options file's variable the unit passes on.
    port = _free_port()
    env["TWISTREG_OPTS"] = f"--listen tcp:{port}:interface=127.0.0.1"
    manager = ServiceManager()
    env["NOTIFY_SOCKET"] = manager.address
    [user], [group] = service["User"], service["Group"]
    command = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups",
               "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
               *_exec_words(service["ExecStart"][0], env)]
    log = tmp_path / "service.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, cwd=service["WorkingDirectory"][0],
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            ready = manager.wait_for("READY", timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}; the service's output:\n{log.read_text()}") from None
        # The process pool is on by default.
        assert ready["STATUS"] == "serving (worker generation 0)", log.read_text()
        assert _uid_of(process.pid) == pwd.getpwnam(user).pw_uid
        registry = Client(port)
        _push_and_pull(registry)
        layer = STATE / "images" / BASE / "layer"
        assert layer.stat().st_uid == pwd.getpwnam(user).pw_uid

        load = Load(registry, fresh=2, keep_alive=1).start()
        try:
            wait_until(lambda: load.ok > 0, timeout=60)
            process.send_signal(signal.SIGHUP)
            assert "MONOTONIC_USEC" in manager.wait_for("RELOADING")
            assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 1)"
            served = load.ok
            wait_until(lambda: load.ok > served, timeout=60)  # the new generation answers
        finally:
            load.stop()
        assert load.failures == [] and load.ok > 0

        process.send_signal(signal.SIGTERM)
        assert manager.wait_for("STOPPING", timeout=30)["STOPPING"] == "1"
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        manager.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Journald gets one readable line per event, not JSON text sequences.
    lines = log.read_text().splitlines()
    assert any(f"twistreg serving local storage {STATE} on 127.0.0.1:{port}" in line
               for line in lines), lines
    assert not any(line.startswith(("\x1e", "{")) for line in lines), lines[:5]


def test_purge_leaves_nothing_but_the_system_user(installed):
    _run("dpkg", "--purge", PACKAGE)
    assert not _installed()
    found = _run("find", *SYSTEM_DIRS, "-name", "*twistreg*", check=False).stdout.split()
    left = [path for path in found if not Path(path).is_relative_to(ROOT)]
    assert left == []
    assert not STATE.exists() and not VENV.exists() and not Path("/etc/twistreg").exists()
    # What Debian policy keeps: the system user and its group (entries of /etc/passwd and
    # /etc/group), as files it owned elsewhere may remain.
    assert pwd.getpwnam("twistreg")


# -- helpers -------------------------------------------------------------------------------------


def _push_and_pull(registry: Client) -> None:
    """docker 1.x's push then pull of a two-layer image (docs/api.md)."""
    base_json = json.dumps({"id": BASE}).encode()
    child_json = json.dumps({"id": CHILD, "parent": BASE}).encode()
    base_layer = make_layer({"etc/hello.txt": b"hello world\n"})
    child_layer = make_layer({"etc/child.txt": b"child\n" * 1000})
    assert registry.request("GET", "/v1/_ping").status == 200
    r = registry.request("PUT", "/v1/repositories/foo/bar/", json.dumps(
        [{"id": BASE}, {"Tag": "latest", "id": CHILD}]).encode(), {"X-Docker-Token": "true"})
    assert r.status == 200
    push_image(registry, BASE, base_json, base_layer)
    push_image(registry, CHILD, child_json, child_layer)
    r = registry.request("PUT", "/v1/repositories/foo/bar/tags/latest", json.dumps(CHILD).encode())
    assert (r.status, r.body) == (200, b"true")
    checksums = [payload_checksum(base_json, base_layer), payload_checksum(child_json, child_layer)]
    r = registry.request("PUT", "/v1/repositories/foo/bar/images", json.dumps(
        [{"checksum": checksums[0], "id": BASE},
         {"Tag": "latest", "checksum": checksums[1], "id": CHILD}]).encode())
    assert r.status == 204

    r = registry.request("GET", "/v1/repositories/foo/bar/images",
                         headers={"X-Docker-Token": "true"})
    assert [i["id"] for i in r.json()] == [BASE, CHILD]
    assert registry.request("GET", "/v1/repositories/foo/bar/tags/latest").json() == CHILD
    assert registry.request("GET", f"/v1/images/{CHILD}/ancestry").json() == [CHILD, BASE]
    for image_id, image_json, layer in ((BASE, base_json, base_layer),
                                        (CHILD, child_json, child_layer)):
        assert registry.request("GET", f"/v1/images/{image_id}/json").body == image_json
        assert registry.request("GET", f"/v1/images/{image_id}/layer").body == layer


def _unit_service_section(text: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file, each key with its values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The environment systemd gives the service: its defaults, Environment=, then the files."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
    for value in service.get("Environment", []):
        env.update(word.split("=", 1) for word in shlex.split(value))
    for value in service.get("EnvironmentFile", []):
        path = Path(value.lstrip("-"))
        if not path.exists():
            assert value.startswith("-"), f"{path} is missing"
            continue
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith(("#", ";")):
                key, _, raw = line.partition("=")
                env[key.strip()] = " ".join(shlex.split(raw))
    return env


def _exec_words(command: str, env: dict[str, str]) -> list[str]:
    """An Exec line's words, with C{$NAME} split into words and C{${NAME}} kept one word."""
    words: list[str] = []
    for word in shlex.split(command.lstrip("-@:+!")):
        if re.fullmatch(r"\$\w+", word):
            words += env.get(word[1:], "").split()
        elif re.fullmatch(r"\$\{\w+\}", word):
            words.append(env.get(word[2:-1], ""))
        else:
            words.append(word)
    return words


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])
