"""Run untrusted Python programs in a contained child process.

Layers, from the operating system up (each one probed once per process; ``isolation()`` reports
which ones this machine grants, and a run never claims a layer it did not get):

1. **Resource limits** (``resource.setrlimit`` in the child before exec): CPU seconds, address
   space, number of processes, file size, open files; plus a **wall-clock timeout** in the parent
   after which every process of the run is killed.
2. **A fresh user id** (root only): the child drops to a random unused uid, so ``RLIMIT_NPROC``
   counts only its own processes (root is exempt from that limit), it cannot signal or ptrace
   the parent, cannot read root's files (e.g. the parent's ``/proc/<pid>/environ``) and cannot
   write where root can. On timeout a reaper with the same uid sends ``kill(-1, SIGKILL)``,
   which reaches forks that left the process group.
3. **A network namespace** (``unshare(CLONE_NEWNET)``): no interface but a down loopback.
4. **A mount namespace** with private ``tmpfs`` mounts over the world-writable folders
   (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``), so a write outside the run's folder
   lands nowhere or in a throw-away mount. The run's folder stays reachable as the cwd (the
   child changes into it before the mounts hide ``/tmp``).
5. **An audit hook** in the harness (``sys.addaudithook``, cannot be removed from Python):
   refuses sockets, ``os.kill``/``fork``/``exec``/``subprocess``, ``ctypes`` and writes outside
   the cwd. A last line, not a boundary (native code can bypass it); optional.

Always: a new session (``setsid``), its own temporary folder as cwd (removed afterwards), an
environment with only ``PATH``, ``LANG`` and ``HOME`` (nothing from the parent), ``python -I -B``
(isolated mode: no user site, no ``PYTHON*`` variables), stdin/stdout/stderr as files in the
folder (``RLIMIT_FSIZE`` caps what a print loop can write).

Without root (layers 2-4 unavailable) the run still gets 1 and 5 and a process-group kill; say
so when reporting results (``isolation()``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Defaults suit competitive-programming solutions."""

    cpu_s: int = 10
    """RLIMIT_CPU of the whole run (seconds of CPU time; SIGXCPU then SIGKILL)."""
    wall_s: float = 20.0
    """Wall-clock limit of the whole run; then every process of the run is killed."""
    memory_bytes: int = 1 << 30
    """RLIMIT_AS (address space) per process."""
    nproc: int = 16
    """RLIMIT_NPROC: processes (threads) of the run's uid; enforced only with a fresh uid or non-root."""
    fsize_bytes: int = 8 << 20
    """RLIMIT_FSIZE: largest file a process may write (stdout and stderr included)."""
    nofile: int = 64
    """RLIMIT_NOFILE: open file descriptors."""


@dataclass(frozen=True)
class Isolation:
    """Which layers this machine grants (``isolation()`` probes once)."""

    fresh_uid: bool
    net_namespace: bool
    mount_namespace: bool
    python: str
    """Interpreter the sandbox runs (one the fresh uid can execute)."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    wall_s: float
    files: Mapping[str, bytes] = field(default_factory=dict)
    """Files the program left in its folder that were asked for (``collect=``)."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _preexec(*, uid: int | None, net: bool, mounts: bool, limits: Limits) -> None:
    """Runs in the child between fork and exec (after ``chdir`` into the run's folder)."""
    os.setsid()
    libc = _libc()
    flags = (CLONE_NEWNET if net else 0) | (CLONE_NEWNS if mounts else 0)
    if flags and libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    if mounts:
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "making mounts private failed")
        for d in SCRATCH_DIRS:
            if os.path.isdir(d) and libc.mount(b"tmpfs", d.encode(), b"tmpfs", 0, b"size=4m,mode=1777") != 0:
                raise OSError(ctypes.get_errno(), f"tmpfs over {d} failed")
    cpu = max(1, int(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None or os.getuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _fresh_uid() -> int:
    # A random uid far above any real account; a collision between concurrent runs is ~1e-9.
    return 1_000_000_000 + secrets.randbelow(1_000_000_000)


def _reap(uid: int) -> None:
    """Kill every process of ``uid`` (kill(-1) from a process with that uid spares only itself)."""

    def pre() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        os.kill(-1, signal.SIGKILL)

    subprocess.run(["/bin/true"], preexec_fn=pre, check=False, env={}, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_ISOLATION: Isolation | None = None


def _try(python: str, *, uid: int | None, net: bool, mounts: bool, check: str) -> bool:
    d = tempfile.mkdtemp(prefix="respo-probe-")
    try:
        if uid is not None:
            os.chown(d, uid, uid)
        r = subprocess.run(
            [python, "-I", "-B", "-c", check], cwd=d, env={"PATH": "/usr/bin:/bin"},
            preexec_fn=lambda: _preexec(uid=uid, net=net, mounts=mounts, limits=Limits()),
            capture_output=True, timeout=30, check=False)
        return r.returncode == 0 and r.stdout.strip() == b"ok"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if uid is not None:
            _reap(uid)
        shutil.rmtree(d, ignore_errors=True)


def isolation(*, refresh: bool = False) -> Isolation:
    """Probe (once) which isolation layers this machine grants."""
    global _ISOLATION
    if _ISOLATION is not None and not refresh:
        return _ISOLATION
    notes: list[str] = []
    candidates = list(dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3",
                                     "/usr/local/bin/python3"]))
    candidates = [c for c in candidates if c and os.path.exists(c)]
    root = os.getuid() == 0
    python, fresh = candidates[0], False
    if root:
        for c in candidates:
            if _try(c, uid=_fresh_uid(), net=False, mounts=False, check="print('ok')"):
                python, fresh = c, True
                break
        if not fresh:
            notes.append("root, but no interpreter runs under a fresh uid")
    else:
        notes.append("not root: no fresh uid; RLIMIT_NPROC counts all of this user's processes")
    uid = _fresh_uid() if fresh else None
    net = root and _try(python, uid=uid, net=True, mounts=False,
                        check="import socket,sys\ntry:\n socket.create_connection(('1.1.1.1',53),timeout=1)\n"
                              "except OSError: print('ok')")
    mounts = root and _try(python, uid=uid, net=net, mounts=True,
                           check="import os\nprint('ok' if os.listdir('/tmp')==[] else 'no')")
    if not net:
        notes.append("no network namespace: only the audit hook blocks sockets")
    if not mounts:
        notes.append("no mount namespace: world-writable folders stay writable")
    _ISOLATION = Isolation(fresh, net, mounts, python, tuple(notes))
    return _ISOLATION


def run_python(
    argv: Sequence[str],
    *,
    files: Mapping[str, bytes | str],
    stdin: bytes = b"",
    limits: Limits | None = None,
    collect: Sequence[str] = (),
    output_cap: int = 4 << 20,
) -> RunResult:
    """Run ``python -I -B *argv`` in a fresh folder holding ``files``, under every granted layer.

    Returns exit status, captured output (at most ``output_cap`` bytes each), whether the wall
    clock ran out, and the contents of the ``collect`` files. Never raises for anything the
    program does; raises only if the sandbox itself cannot be set up.
    """
    limits = limits or Limits()
    iso = isolation()
    uid = _fresh_uid() if iso.fresh_uid else None
    work = Path(tempfile.mkdtemp(prefix="respo-sbx-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"file names must be plain, got {name!r}")
            (work / name).write_bytes(data.encode() if isinstance(data, str) else data)
            os.chmod(work / name, 0o644)
        (work / ".stdin").write_bytes(stdin)
        if uid is not None:
            os.chown(work, uid, uid)
        os.chmod(work, 0o700)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work)}
        t0 = time.monotonic()
        timed_out = False
        with open(work / ".stdin", "rb") as fin, open(work / ".stdout", "wb") as fout, \
                open(work / ".stderr", "wb") as ferr:
            proc = subprocess.Popen(
                [iso.python, "-I", "-B", *argv], cwd=work, env=env, stdin=fin, stdout=fout, stderr=ferr,
                close_fds=True,
                preexec_fn=lambda: _preexec(uid=uid, net=iso.net_namespace, mounts=iso.mount_namespace, limits=limits),
            )
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
        wall = time.monotonic() - t0

        def read(name: str) -> bytes:
            p = work / name
            if not p.is_file() or p.is_symlink():
                return b""
            with open(p, "rb") as f:
                return f.read(output_cap)

        # Kill the whole run before reading what it left: nothing may still be writing.
        _kill_all(proc, uid)
        return RunResult(proc.returncode if not timed_out else None, read(".stdout"), read(".stderr"),
                         timed_out, wall, {c: read(c) for c in collect})
    finally:
        if proc is not None:
            _kill_all(proc, uid)
        shutil.rmtree(work, ignore_errors=True)


def processes_of(uid: int) -> list[int]:
    """Live (non-zombie) processes whose owner is ``uid`` (from ``/proc``)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.stat().st_uid != uid:
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            out.append(int(d.name))
    return out


def _kill_all(proc: subprocess.Popen[bytes], uid: int | None, *, grace_s: float = 5.0) -> None:
    if uid is not None:
        # SIGKILL is delivered asynchronously: repeat until no process of the uid is left.
        deadline = time.monotonic() + grace_s
        _reap(uid)
        while processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.01)
            _reap(uid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
