"""Run untrusted Python programs in a contained child process.

Layers, from the operating system up (each one probed once per process; ``isolation()`` reports
which ones this machine grants, and a run never claims a layer it did not get):

1. **Resource limits** (``resource.setrlimit`` in the child before exec): CPU seconds, address
   space, number of processes, file size, open files; plus a **wall-clock timeout** in the parent
   after which every process of the run is killed.
2. **A fresh user id** (root only): the child drops to a random unused uid, so ``RLIMIT_NPROC``
   counts only its own processes (root is exempt from that limit), it cannot signal or ptrace
   the parent and cannot write where root can. On timeout a reaper with the same uid sends
   ``kill(-1, SIGKILL)``, which reaches forks that left the process group.
3. **Namespaces** (``unshare``): a network namespace (no interface but a down loopback); an IPC
   namespace (System V shared memory, semaphores and message queues vanish with the run); a PID
   namespace (the program is process 1 of its own tree, sees only its own processes in its own
   ``/proc``, and the whole tree dies with it).
4. **A minimal read-only root** (a mount namespace, then ``chroot``): the new ``/`` is an empty
   ``tmpfs`` holding, bind-mounted read-only, only the interpreter, its standard library and the
   shared libraries it loads (found once by asking the interpreter, ``_root_plan``), the symbolic
   links on the way to them, ``/dev/{null,zero,random,urandom}``, plus a fresh ``/proc``, a
   4 MiB ``/tmp`` and the run's folder ``/work``: a ``tmpfs`` capped at ``Limits.work_bytes``
   into which the parent's files are copied. No host file outside these is reachable: not the
   repository, not prepared data sets, not other users' homes. The files asked for with
   ``collect=`` are single host files bind-mounted into ``/work`` (their size capped by
   ``RLIMIT_FSIZE``); everything else the program writes vanishes with the namespace.
5. **An audit hook** in the harness (``sys.addaudithook``): refuses sockets, ``os.kill``/``fork``/
   ``exec``/``subprocess``, ``ctypes`` and writes outside the cwd. Not a layer: Python code can
   switch it off (e.g. by replacing the hook function's ``__code__``, found through ``gc``, or the
   ``os.path`` helpers it calls), and native code bypasses it. It only makes accidents fail early.

Always: a new session (``setsid``), its own temporary folder (removed afterwards, iteratively, so a
deep tree cannot break the removal), an environment with only ``PATH``, ``LANG`` and ``HOME``
(nothing from the parent), ``python -I -B`` (isolated mode: no user site, no ``PYTHON*``
variables), stdin/stdout/stderr as host files (``RLIMIT_FSIZE`` caps what a print loop can write).

Without root (layers 2-4 unavailable) the run still gets 1 and the hook and a process-group kill;
say so when reporting results (``isolation()``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG = 1
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
WORK = "/work"
"""The run's folder inside the minimal root."""


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
    work_bytes: int = 32 << 20
    """Size of the run's folder beyond the files given to it (a ``tmpfs``; minimal root only)."""


@dataclass(frozen=True)
class Isolation:
    """Which layers this machine grants (``isolation()`` probes once)."""

    fresh_uid: bool
    net_namespace: bool
    mount_namespace: bool
    """The minimal read-only root (a mount namespace, bind mounts, ``chroot``)."""
    python: str
    """Interpreter the sandbox runs (one the fresh uid can execute; its real path)."""
    notes: tuple[str, ...] = ()
    ipc_namespace: bool = False
    pid_namespace: bool = False


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    wall_s: float
    files: Mapping[str, bytes] = field(default_factory=dict)
    """Files the program left in its folder that were asked for (``collect=``)."""


@dataclass(frozen=True)
class _Root:
    """What the minimal root holds: read-only binds (real paths) and symbolic links to recreate."""

    binds: tuple[str, ...]
    links: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Layers:
    uid: int | None
    net: bool = False
    ipc: bool = False
    pid: bool = False
    root: _Root | None = None
    base: str = ""
    """Host folder of the run: ``in/`` (files to copy), ``out/`` (collected files), ``root/``."""


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    """libc, loaded once in the parent (``find_library`` runs ``ldconfig``: not in a forked child)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _LIBC


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), what)


def _mount(libc: ctypes.CDLL, src: str, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(src.encode(), dst.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {src} on {dst}")


def _bind_ro(libc: ctypes.CDLL, src: str, dst: str, *, device: bool = False) -> None:
    _mount(libc, src, dst, None, MS_BIND | MS_REC)
    _mount(libc, src, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if device else MS_NODEV))


def _placeholder(path: str, like: str) -> None:
    """An empty directory or file at ``path`` to mount ``like`` on."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(like):
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        open(path, "wb").close()


def _build_root(libc: ctypes.CDLL, layers: _Layers, limits: Limits) -> None:
    """Mount the minimal root under ``base/root`` and ``chroot`` into it (child, still root)."""
    assert layers.root is not None
    base, new = layers.base, os.path.join(layers.base, "root")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path, target in layers.root.links:
        os.makedirs(os.path.dirname(new + path), exist_ok=True)
        os.symlink(target, new + path)
    for path in (*layers.root.binds, *DEVICES):
        _placeholder(new + path, path)
        _bind_ro(libc, path, new + path, device=path in DEVICES)
    os.makedirs(new + "/tmp")
    _mount(libc, "tmpfs", new + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777")
    if layers.pid:
        os.makedirs(new + "/proc", exist_ok=True)
        _mount(libc, "proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    work, given = new + WORK, os.path.join(base, "in")
    os.makedirs(work, exist_ok=True)
    size = limits.work_bytes + sum(os.path.getsize(os.path.join(given, n)) for n in os.listdir(given)) + (1 << 16)
    owner = f",uid={layers.uid},gid={layers.uid}" if layers.uid is not None else ""
    _mount(libc, "tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700{owner}")
    for name in os.listdir(given):
        shutil.copyfile(os.path.join(given, name), os.path.join(work, name))
        os.chmod(os.path.join(work, name), 0o644)
    out = os.path.join(base, "out")
    for name in os.listdir(out):
        _placeholder(os.path.join(work, name), os.path.join(out, name))
        _mount(libc, os.path.join(out, name), os.path.join(work, name), None, MS_BIND)
    _mount(libc, new, new, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(new)
    os.chdir(WORK)


def _wait_and_exit(child: int) -> None:
    """The process outside the PID namespace: wait for its init, then exit as it did."""
    os.closerange(0, 1 << 16)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _preexec(layers: _Layers, limits: Limits) -> None:
    """Runs in the child between fork and exec (after ``chdir`` into the run's host folder)."""
    os.setsid()
    libc = _libc()
    flags = ((CLONE_NEWNET if layers.net else 0) | (CLONE_NEWIPC if layers.ipc else 0)
             | (CLONE_NEWPID if layers.pid else 0) | (CLONE_NEWNS if layers.root else 0))
    if flags:
        _check(libc.unshare(flags), "unshare failed")
    if layers.pid:
        # A new PID namespace takes effect for children: fork once; the outer process waits.
        child = libc.fork()
        if child < 0:
            raise OSError(ctypes.get_errno(), "fork into the PID namespace failed")
        if child > 0:
            _wait_and_exit(child)
    if layers.root is not None:
        _build_root(libc, layers, limits)
    cpu = max(1, int(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if layers.uid is not None or os.getuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
    if layers.uid is not None:
        os.setgroups([])
        os.setgid(layers.uid)
        os.setuid(layers.uid)
    if layers.pid:  # after the uid change, which clears it: the tree dies with the outer process
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


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


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a folder however deep its tree (``shutil.rmtree`` recurses and uses full paths).

    Walks with directory descriptors, at most two open at a time, never following symbolic
    links; skips what cannot be removed (a run's folder must never make the caller fail). Call it
    only once nothing writes into the tree any more.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        cur = os.open(path, flags)
    except OSError:
        return
    names: list[str] = []  # the path from ``path`` down to ``cur``
    stuck: set[tuple[int, int]] = set()  # folders that could not be removed: not entered again
    while True:
        sub = None
        try:
            with os.scandir(cur) as it:
                for e in it:
                    try:
                        if not e.is_dir(follow_symlinks=False):
                            os.unlink(e.name, dir_fd=cur)
                        elif (e.inode(), os.stat(e.name, dir_fd=cur, follow_symlinks=False).st_dev) not in stuck:
                            sub = e.name
                            break
                    except OSError:
                        pass
        except OSError:
            pass
        if sub is not None:
            try:
                nxt = os.open(sub, flags, dir_fd=cur)
            except OSError:
                st = os.stat(sub, dir_fd=cur, follow_symlinks=False)
                stuck.add((st.st_ino, st.st_dev))
                continue
            os.close(cur)
            cur = nxt
            names.append(sub)
            continue
        if not names:
            os.close(cur)
            try:
                os.rmdir(path)
            except OSError:
                pass
            return
        up = os.open("..", flags, dir_fd=cur)
        os.close(cur)
        cur, name = up, names.pop()
        try:
            os.rmdir(name, dir_fd=cur)
        except OSError:
            st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            stuck.add((st.st_ino, st.st_dev))


def _needed_paths(python: str) -> list[str]:
    """Real paths the interpreter needs: itself, its standard library, the files it maps."""
    probe = ("import sys, sysconfig, json, math, decimal, fractions, hashlib, random, heapq, bisect, "
             "collections, itertools, functools, re, statistics, array, struct, datetime, string, io\n"
             "p = sysconfig.get_paths()\n"
             "maps = {l.split()[-1] for l in open('/proc/self/maps') if '/' in l.split()[-1]}\n"
             "print(json.dumps([p['stdlib'], p['platstdlib'], *sorted(maps)]))")
    r = subprocess.run([python, "-I", "-B", "-c", probe], env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                       capture_output=True, timeout=30, check=True)
    paths = [os.path.realpath(python), "/etc/ld.so.cache"]
    for p in json.loads(r.stdout):
        real = os.path.realpath(p)
        paths.append(real if os.path.isdir(real) or real == os.path.realpath(python) else os.path.dirname(real))
    return [p for p in dict.fromkeys(paths) if os.path.exists(p)]


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """The real path of ``path``, recording every symbolic link met on the way in ``links``."""
    if depth > 40:
        raise OSError(f"too many symbolic links resolving {path}")
    cur = "/"
    parts = Path(os.path.normpath(path)).parts[1:]
    for k, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            links[nxt] = target
            real = _resolve(os.path.normpath(os.path.join(cur, target)), links, depth + 1)
            rest = parts[k + 1:]
            return _resolve(os.path.join(real, *rest), links, depth + 1) if rest else real
        cur = nxt
    return cur


def _root_plan(python: str) -> _Root:
    """Which host paths the minimal root binds read-only and which links it recreates."""
    links: dict[str, str] = {}
    reals = [_resolve(p, links) for p in (*_needed_paths(python), python, "/lib64/ld-linux-x86-64.so.2")
             if os.path.lexists(p)]
    binds = sorted(set(reals), key=len)
    kept: list[str] = []
    for b in binds:
        if not any(b == k or b.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(b)

    def under_bind(p: str) -> bool:
        return any(p.startswith(k.rstrip("/") + "/") for k in kept)

    kept_links = tuple(sorted((p, t) for p, t in links.items() if not under_bind(p)))
    return _Root(tuple(kept), kept_links)


_ISOLATION: Isolation | None = None
_ROOT: _Root | None = None


def _new_base(files: Mapping[str, bytes | str], collect: Sequence[str], uid: int | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix="respo-sbx-"))
    for sub in ("in", "out", "root"):
        (base / sub).mkdir()
    for name, data in files.items():
        if "/" in name or name.startswith(".") or name in ("", ".."):
            raise ValueError(f"file names must be plain, got {name!r}")
        (base / "in" / name).write_bytes(data.encode() if isinstance(data, str) else data)
    for name in collect:
        if "/" in name or name.startswith(".") or name in files:
            raise ValueError(f"collected file names must be plain and new, got {name!r}")
        (base / "out" / name).touch(mode=0o600)
        if uid is not None:
            os.chown(base / "out" / name, uid, uid)
    return base


def _popen(python: str, argv: Sequence[str], layers: _Layers, limits: Limits, *, cwd: Path,
           stdin: int | None, stdout: int | None, stderr: int | None) -> subprocess.Popen[bytes]:
    home = WORK if layers.root is not None else str(cwd)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}
    return subprocess.Popen([python, "-I", "-B", *argv], cwd=cwd, env=env, stdin=stdin, stdout=stdout,
                            stderr=stderr, close_fds=True, preexec_fn=lambda: _preexec(layers, limits))


def _try(python: str, layers: _Layers, check: str) -> bool:
    base = _new_base({}, (), layers.uid)
    layers = _Layers(layers.uid, layers.net, layers.ipc, layers.pid, layers.root, str(base))
    try:
        if layers.uid is not None:
            os.chown(base / "in", layers.uid, layers.uid)
        proc = _popen(python, ["-c", check], layers, Limits(), cwd=base / "in", stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        return proc.returncode == 0 and out.strip() == b"ok"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if layers.uid is not None:
            _reap(layers.uid)
        remove_tree(base)


def isolation(*, refresh: bool = False) -> Isolation:
    """Probe (once) which isolation layers this machine grants."""
    global _ISOLATION, _ROOT
    if _ISOLATION is not None and not refresh:
        return _ISOLATION
    _libc()
    notes: list[str] = []
    candidates = list(dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3",
                                     "/usr/local/bin/python3"]))
    candidates = [os.path.realpath(c) for c in candidates if c and os.path.exists(c)]
    root = os.getuid() == 0
    python, fresh = candidates[0], False
    if root:
        for c in candidates:
            if _try(c, _Layers(_fresh_uid()), "print('ok')"):
                python, fresh = c, True
                break
        if not fresh:
            notes.append("root, but no interpreter runs under a fresh uid")
    else:
        notes.append("not root: no fresh uid; RLIMIT_NPROC counts all of this user's processes")
    uid = _fresh_uid() if fresh else None
    net = root and _try(python, _Layers(uid, net=True),
                        "import socket,sys\ntry:\n socket.create_connection(('1.1.1.1',53),timeout=1)\n"
                        "except OSError: print('ok')")
    ipc = root and _try(python, _Layers(uid, ipc=True), "print('ok')")
    pid = root and _try(python, _Layers(uid, pid=True), "import os\nprint('ok' if os.getpid() == 1 else 'no')")
    plan: _Root | None = None
    if root:
        try:
            plan = _root_plan(python)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            notes.append(f"no minimal root: the interpreter's files could not be listed ({e})")
    mounts = plan is not None and _try(
        python, _Layers(uid, pid=pid, root=plan),
        "import os, json, decimal\nprint('ok' if os.getcwd() == '/work' and os.listdir('/tmp') == [] else 'no')")
    if not net:
        notes.append("no network namespace: only the audit hook blocks sockets")
    if not ipc:
        notes.append("no IPC namespace: System V IPC objects can outlive a run")
    if not pid:
        notes.append("no PID namespace: other processes are visible in /proc")
    if not mounts:
        notes.append("no minimal root: the host filesystem stays readable")
    _ROOT = plan if mounts else None
    _ISOLATION = Isolation(fresh, net, mounts, python, tuple(notes), ipc_namespace=ipc, pid_namespace=pid)
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
    base = _new_base(files, collect, uid)
    layers = _Layers(uid, iso.net_namespace, iso.ipc_namespace, iso.pid_namespace, _ROOT, str(base))
    # Without the minimal root the program runs in the host folder itself: files and collected
    # files side by side.
    work = base / "in"
    if _ROOT is None:
        for name in collect:
            os.replace(base / "out" / name, work / name)
    proc: subprocess.Popen[bytes] | None = None
    try:
        for p in work.iterdir():
            os.chmod(p, 0o644 if p.name not in collect else 0o600)
        if uid is not None:
            os.chown(work, uid, uid)
        os.chmod(work, 0o700)
        (base / ".stdin").write_bytes(stdin)
        t0 = time.monotonic()
        timed_out = False
        with open(base / ".stdin", "rb") as fin, open(base / ".stdout", "wb") as fout, \
                open(base / ".stderr", "wb") as ferr:
            proc = _popen(iso.python, argv, layers, limits, cwd=work, stdin=fin.fileno(), stdout=fout.fileno(),
                          stderr=ferr.fileno())
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
        wall = time.monotonic() - t0

        def read(p: Path) -> bytes:
            try:
                st = os.lstat(p)
            except OSError:
                return b""
            if not stat.S_ISREG(st.st_mode):
                return b""
            with open(p, "rb") as f:
                return f.read(output_cap)

        # Kill the whole run before reading what it left: nothing may still be writing.
        _kill_all(proc, uid)
        got = {c: read((work if _ROOT is None else base / "out") / c) for c in collect}
        return RunResult(proc.returncode if not timed_out else None, read(base / ".stdout"),
                         read(base / ".stderr"), timed_out, wall, got)
    finally:
        if proc is not None:
            _kill_all(proc, uid)
        remove_tree(base)


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
