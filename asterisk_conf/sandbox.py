"""The Asterisk sandbox: Asterisk 22 from Debian sid in a chroot, bound to loopback.

Only Debian sid packages Asterisk 22 and its modules need sid's libc, so it runs in a
debootstrapped sid root. The root is built once into a cache outside the repository and
never modified afterwards; each instance runs on an overlay of it whose writable layer lives
in the hotline's data directory and is wiped on every start (no stale astdb, no old queue
members). Recordings and logs are bind-mounted from the data directory so they outlive it.

    cache_dir/asterisk-root/        read-only lower layer (debootstrap result)
    data_dir/pbx/{upper,work}/      overlay layers
    data_dir/pbx/root/              the merged root Asterisk is chrooted into
    data_dir/pbx/log/               -> root/var/log/asterisk
    storage.recordings_dir          -> root/<pbx.recordings_path_in_pbx>
    storage.prompts_dir             -> root/<pbx.prompts_path_in_pbx>
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asterisk_conf.render import TLS_CERT, TLS_KEY, write
from core import tls
from core.config import Settings
from core.errors import HotlineError

PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-wav",
            "asterisk-moh-opsound-wav")
STAMP = ".hotline-root"
STOP_SECONDS = 4.0  # Asterisk's own stop, before it is killed (hotline.stopping's bound)

log = logging.getLogger(__name__)
# Inside the chroot these belong to the `asterisk` uid, which root outside cannot always read.
_OWNED_BY_ASTERISK = ("etc/asterisk", "var/lib/asterisk", "var/spool/asterisk",
                      "var/log/asterisk", "var/cache/asterisk", "usr/share/asterisk")


class SandboxError(HotlineError):
    """The sandbox cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxStatus:
    running: bool
    pid: int | None
    root: Path
    cache_root: Path
    cached: bool
    version: str | None
    mounts: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"running": self.running, "pid": self.pid, "root": str(self.root),
                "cache_root": str(self.cache_root), "cached": self.cached,
                "version": self.version, "mounts": list(self.mounts)}


class Sandbox:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_dir = settings.pbx.cache_dir
        self.cache_root = self.cache_dir / "asterisk-root"
        self.instance = settings.storage.data_dir / "pbx"
        self.root = self.instance / "root"
        self.log_file = self.instance / "asterisk.out"
        self.pid_file = self.instance / "asterisk.pid"

    # ----------------------------------------------------------------- public operations

    def preflight(self) -> None:
        """Fail early, before any work, when the sandbox cannot run here."""
        if self.settings.pbx.mode != "sandbox":
            raise SandboxError("pbx: pbx.mode is 'external': this hotline uses an existing "
                               "Asterisk; write its configuration with 'hotline pbx render'")
        self._require_root()

    def up(self, config_files: dict[str, str]) -> str:
        """Start Asterisk with this configuration; if it runs already, reload it."""
        self.preflight()
        if self._running_pid() is not None:
            self.reload(config_files)
            return "already running; configuration reloaded"
        self._check_ports_free()
        self.ensure_root()
        started = time.monotonic()
        self._unmount_all()  # leftovers of a crash
        self._mount(config_files)
        try:
            self._wait_booted(self._start())
        except BaseException:
            self.down()
            raise
        return f"ready in {time.monotonic() - started:.1f} s"

    def down(self) -> str:
        """Stop Asterisk and undo every mount; safe to call when nothing runs."""
        self.preflight()
        pid = self._running_pid()
        if pid is not None:
            # SIGTERM is Asterisk's own "core stop now" (hang up every channel, unload),
            # without a console client that waited for a reply while calls were up
            began = time.monotonic()
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_SECONDS):
                _signal(pid, signal.SIGKILL)
                _wait_gone(pid, 2)
            log.info("pbx: Asterisk stopped in %.1f s", time.monotonic() - began)
        for other in self._processes_in_root():
            _signal(other, signal.SIGKILL)
            _wait_gone(other, 5)
        self.pid_file.unlink(missing_ok=True)
        self._unmount_all()
        return "stopped" if pid is not None else "was not running"

    def kill(self) -> None:
        """SIGKILL Asterisk and everything in its root, waiting for nothing (a stop that
        overran); the next `up` or `down` undoes the mounts it leaves."""
        pid = self._running_pid()
        for victim in ([pid] if pid is not None else []) + self._processes_in_root():
            _signal(victim, signal.SIGKILL)

    def running(self) -> bool:
        return self._running_pid() is not None

    def reload(self, config_files: dict[str, str]) -> None:
        write(config_files, self.root / "etc/asterisk")
        for command in ("module reload res_pjsip.so", "dialplan reload",
                        "module reload app_queue.so", "manager reload"):
            self.cli(command)

    def status(self) -> SandboxStatus:
        pid = self._running_pid()
        version = None
        if pid is not None:
            with contextlib.suppress(SandboxError):
                version = self.cli("core show version").split(" built ")[0].strip()
        return SandboxStatus(
            running=pid is not None, pid=pid, root=self.root, cache_root=self.cache_root,
            cached=bool(self._cached_packages()), version=version,
            mounts=tuple(self._our_mounts()),
        )

    def cli(self, command: str, timeout: float = 10) -> str:
        """Run one Asterisk CLI command through the control socket."""
        try:
            proc = subprocess.run(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command],
                capture_output=True, text=True, timeout=timeout, errors="replace",
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(f"pbx: Asterisk CLI '{command}' timed out") from None
        if proc.returncode != 0 or "Unable to connect" in proc.stdout:
            raise SandboxError(f"pbx: Asterisk CLI '{command}' failed: "
                               f"{(proc.stderr or proc.stdout).strip()[:200]}")
        return proc.stdout

    def ensure_root(self) -> str:
        """Build the cached sid root unless one with the wanted packages exists.

        sid moves daily and a build can fail: then an older cached root, if any, is used.
        """
        if self._cached_packages() == PACKAGES:
            return "cached"
        if shutil.which("debootstrap") is None:
            if self._cached_packages():
                return "cached (older package set; debootstrap missing)"
            raise SandboxError(
                f"pbx: no cached Asterisk root at {self.cache_root} and debootstrap is not "
                "installed (apt-get install debootstrap)")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._cache_lock():
            if self._cached_packages() == PACKAGES:  # built by another process meanwhile
                return "cached"
            try:
                self._build_root()
            except SandboxError:
                if self._cached_packages():
                    return "cached (rebuild failed, older root kept)"
                raise
        return "built"

    def _cached_packages(self) -> tuple[str, ...]:
        try:
            first = (self.cache_root / STAMP).read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return ()
        return tuple(first.removeprefix("packages: ").split(","))

    # ----------------------------------------------------------------- building the root

    def _build_root(self) -> None:
        building = self.cache_dir / "asterisk-root.building"
        log = self.cache_dir / "build.log"
        shutil.rmtree(building, ignore_errors=True)
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   "sid", str(building), self.settings.pbx.debian_mirror]
        with log.open("w") as out:
            try:
                proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=1200)
            except subprocess.TimeoutExpired:
                proc = None
        if proc is None or proc.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            last = _last_line(log)
            raise SandboxError(
                f"pbx: cannot build the Asterisk root from {self.settings.pbx.debian_mirror} "
                f"(debootstrap {'timed out' if proc is None else f'exit {proc.returncode}'}: "
                f"{last}) and no cached root exists at {self.cache_root}; full log: {log}")
        policy = building / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for rel in _OWNED_BY_ASTERISK:
            _chown_tree(building / rel)
        for rel in ("etc/asterisk", "usr/share/asterisk"):
            subprocess.run(["chmod", "-R", "a+rX", str(building / rel)], check=True)
        (building / "var/lib/asterisk/astdb.sqlite3").unlink(missing_ok=True)
        version = subprocess.run(["chroot", str(building), "/usr/sbin/asterisk", "-V"],
                                 capture_output=True, text=True).stdout.strip()
        (building / STAMP).write_text(
            f"packages: {','.join(PACKAGES)}\n{version}\nbuilt {time.strftime('%F %T %z')}\n")
        old = self.cache_dir / "asterisk-root.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.cache_root.exists():
            self.cache_root.rename(old)  # a running overlay keeps using its lower dir
        building.rename(self.cache_root)
        shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        with open(self.cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ----------------------------------------------------------------- mounts and process

    def _binds(self) -> list[tuple[Path, Path]]:
        pbx, storage = self.settings.pbx, self.settings.storage
        return [
            (self.instance / "log", self.root / "var/log/asterisk"),
            (storage.recordings_dir, self.root / pbx.recordings_path_in_pbx.lstrip("/")),
            (storage.prompts_dir, self.root / pbx.prompts_path_in_pbx.lstrip("/")),
        ]

    def _mount(self, config_files: dict[str, str]) -> None:
        upper, work = self.instance / "upper", self.instance / "work"
        for layer in (upper, work):
            shutil.rmtree(layer, ignore_errors=True)
            layer.mkdir(parents=True)
        self.root.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "overlay", "hotline-asterisk", "-o",
              f"lowerdir={self.cache_root},upperdir={upper},workdir={work}", str(self.root)],
             "mount the overlay root")
        for source, target in self._binds():
            source.mkdir(parents=True, exist_ok=True)
            target.mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", str(source), str(target)], f"bind-mount {source}")
        (self.root / "run/asterisk").mkdir(parents=True, exist_ok=True)
        # The debootstrapped root has no /etc/hosts. Asterisk looks up its host name and
        # A.ROOT-SERVERS.NET (to find its own address) for every new channel, on a SIP
        # thread: a DNS server that takes seconds to answer stalls the whole PBX. The
        # sandbox lives on loopback, so both answers are known.
        hosts = self.root / "etc/hosts"
        hosts.write_text(f"127.0.0.1 localhost {socket.gethostname()}\n"
                         "127.0.0.1 A.ROOT-SERVERS.NET\n", encoding="utf-8")
        hosts.chmod(0o644)
        etc = self.root / "etc/asterisk"
        shutil.rmtree(etc)  # no stock sample config is ever read
        write(config_files, etc)
        cert, key = self.ensure_certificate()
        for source, inside in ((cert, TLS_CERT), (key, TLS_KEY)):
            target = self.root / inside.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o600)

    def ensure_certificate(self) -> tuple[Path, Path]:
        """The HTTPS server's certificate (the softphone's WSS): the web's own (core.tls),
        so a browser that trusts the desk page's certificate trusts its softphone's too;
        with web.tls off, the generated one all the same (WSS needs TLS)."""
        return tls.certificate_files(self.settings) or tls.generated_certificate(self.settings)

    def _our_mounts(self) -> list[str]:
        prefix = str(self.root)
        found = []
        with open("/proc/self/mountinfo") as info:
            for line in info:
                point = line.split()[4].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
        return found

    def _unmount_all(self) -> None:
        for point in sorted(self._our_mounts(), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        if self._our_mounts():
            raise SandboxError(f"pbx: could not unmount {', '.join(self._our_mounts())}")

    def _start(self) -> subprocess.Popen[bytes]:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-n",
                 "-U", "root", "-G", "root"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _wait_booted(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.settings.pbx.boot_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(
                    f"pbx: Asterisk exited during start-up: {_last_line(self.log_file)} "
                    f"(log: {self.log_file})")
            with contextlib.suppress(SandboxError):
                self.cli("core waitfullybooted", timeout=5)
                return
            time.sleep(0.2)
        raise SandboxError(f"pbx: Asterisk did not finish booting within "
                           f"{self.settings.pbx.boot_timeout} s (log: {self.log_file})")

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) and _root_of(pid) == self.root.resolve() else None

    def _processes_in_root(self) -> list[int]:
        root = self.root.resolve()
        return [int(p) for p in os.listdir("/proc")
                if p.isdigit() and int(p) != os.getpid() and _root_of(int(p)) == root]

    def _check_ports_free(self) -> None:
        pbx = self.settings.pbx
        for kind, port, key in ((socket.SOCK_DGRAM, pbx.sip_port, "pbx.sip_port"),
                                (socket.SOCK_STREAM, pbx.ami_port, "pbx.ami_port"),
                                (socket.SOCK_STREAM, pbx.webrtc_port, "pbx.webrtc_port")):
            with socket.socket(socket.AF_INET, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((pbx.bind_address, port))
                except OSError as exc:
                    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                    raise SandboxError(
                        f"pbx: port {pbx.bind_address}:{port}/{proto} ({key}) is already in use "
                        f"({exc.strerror}); stop what holds it or choose another port"
                    ) from None

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise SandboxError(
                f"pbx: the Asterisk sandbox needs root for chroot and mounts (running as uid "
                f"{os.geteuid()}); run it as root, or use 'hotline pbx render --out DIR' for "
                "an existing Asterisk")


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"pbx: cannot {what}: {proc.stderr.strip() or proc.returncode}")


def _chown_tree(path: Path) -> None:
    if path.exists():
        subprocess.run(["chown", "-R", "--no-dereference", "0:0", str(path)], check=True)


def _root_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/root"))
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Running and not a zombie; a zombie child of ours (the `up` that started it) is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    if fields[0] != "Z":
        return True
    if int(fields[1]) == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return False


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no log"
    return lines[-1][:300] if lines else "empty log"
