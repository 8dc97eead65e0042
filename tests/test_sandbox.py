"""Sandbox security suite: hostile programs are contained, scored as failures, and the caller goes on.

Each case runs with the audit hook OFF (operating-system layers only) and ON. The cases and
their outcomes are reported in experiments/LOG.md (``python tests/test_sandbox.py``
prints the table).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from respo.tasks import Problem
from respo.tasks.code import CodeTask, extract_code, run_tests, stdout_matches
from respo.tasks.sandbox import Limits, isolation, run_python

FAST = Limits(cpu_s=2, wall_s=4.0, memory_bytes=256 << 20, nproc=16, fsize_bytes=1 << 20, nofile=32)
TOKEN = secrets.token_hex(6)
SECRET_VAR = "RESPO_TEST_SECRET"
SECRET = f"s3cr3t-{TOKEN}"


def _case_network(port: int, outside: Path) -> str:
    return (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            f"s.sendall(b'pwned')\nprint('ok')\n")


def _case_write(port: int, outside: Path) -> str:
    return ("import os\nn = 0\n"
            + "".join(f"try:\n    open({str(p)!r}, 'w').write('pwned')\n    n += 1\nexcept OSError:\n    pass\n"
                      for p in (outside / "pwned.txt", Path(f"/tmp/respo-pwned-{TOKEN}"),
                                Path(f"/var/tmp/respo-pwned-{TOKEN}")))
            + "print('ok' if n == 3 else 'no')\n")


def _case_env(port: int, outside: Path) -> str:
    return (f"import os\nfound = os.environ.get({SECRET_VAR!r}, '')\n"
            "for p in ('/proc/%d/environ' % os.getppid(), '/proc/1/environ', '/proc/self/environ'):\n"
            "    try:\n        found += open(p, 'rb').read().decode('latin-1')\n"
            "    except OSError:\n        pass\n"
            f"print('ok' if {SECRET!r} in found else 'no')\n")


def _case_fork(port: int, outside: Path) -> str:
    return "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def _case_alloc(port: int, outside: Path) -> str:
    return "x = []\nwhile True:\n    x.append(bytearray(10**7))\n"


def _case_loop(port: int, outside: Path) -> str:
    return "while True:\n    pass\n"


def _case_signal(port: int, outside: Path) -> str:
    extra = "    os.kill(-1, signal.SIGUSR1)\n" if isolation().fresh_uid else ""
    return ("import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGUSR1)\n" + extra
            + "    print('ok')\nexcept OSError:\n    pass\n")


def _case_bigoutput(port: int, outside: Path) -> str:
    return "while True:\n    print('x' * 10000)\n"


HUB_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hub" / "lcb_v6.jsonl"
IPC_KEY = 0x5E100000 + secrets.randbelow(1 << 20)


def _case_hostfile(port: int, outside: Path) -> str:  # the audit's reward hack needs this read
    return f"try:\n    open({str(HUB_FIXTURE)!r}).read(1)\n    print('ok')\nexcept OSError:\n    pass\n"


def _case_procs(port: int, outside: Path) -> str:
    return ("import os\npids = [d for d in os.listdir('/proc') if d.isdigit()]\n"
            "print('ok' if len(pids) > 1 else 'no')\n")


def _case_ipc(port: int, outside: Path) -> str:
    return ("import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
            f"print('created' if libc.shmget({IPC_KEY}, 4096, 0o1666) >= 0 else 'no')\n")  # see 'IPC left'



def _case_fill(port: int, outside: Path) -> str:
    return ("n = 0\nfor i in range(48):\n    try:\n        with open(f'f{i}', 'wb') as f:\n"
            "            f.write(b'x' * 1000000)\n        n += 1\n    except OSError:\n        break\n"
            "print('ok' if n == 48 else 'no')\n")


def _case_rows(port: int, outside: Path) -> str:
    return ("import os\nopen('results.jsonl', 'w').write('{\"i\": 1e999, \"status\": \"ok\", \"out\": \"ok\"}\\n'"
            " + '{\"i\": 0, \"status\": \"ok\", \"out\": ' + '[' * 100000 + ']' * 100000 + '}\\n')\nos._exit(0)\n")


CASES = {
    "network connection to the parent's loopback": _case_network,
    "write outside its folder (test dir, /tmp, /var/tmp)": _case_write,
    "read the parent's environment (env, /proc/ppid/environ)": _case_env,
    "fork without end": _case_fork,
    "allocate without end": _case_alloc,
    "loop forever": _case_loop,
    "signal its parent (SIGUSR1 to ppid, kill(-1))": _case_signal,
    "print without end": _case_bigoutput,
    "read a data set file on the host (reward hack)": _case_hostfile,
    "see other processes in /proc": _case_procs,
    "leave a System V shared-memory segment behind": _case_ipc,
    "fill its folder (48 files of 1 MB)": _case_fill,
    "write hostile result rows (1e999, 100k-deep nesting)": _case_rows,
}


REQUIRES = {  # the OS layers that contain a case when the audit hook is off
    "network connection to the parent's loopback": ("net_namespace",),
    "write outside its folder (test dir, /tmp, /var/tmp)": ("fresh_uid", "mount_namespace"),
    "read the parent's environment (env, /proc/ppid/environ)": ("fresh_uid",),
    "fork without end": ("fresh_uid",),
    "signal its parent (SIGUSR1 to ppid, kill(-1))": ("fresh_uid",),
    "read a data set file on the host (reward hack)": ("fresh_uid", "mount_namespace"),
    "see other processes in /proc": ("pid_namespace",),
    "leave a System V shared-memory segment behind": ("ipc_namespace",),
    "fill its folder (48 files of 1 MB)": ("mount_namespace",),
}


def _sysv_keys(kind: str) -> set[int]:
    path = Path(f"/proc/sysvipc/{kind}")
    return {int(ln.split()[0]) for ln in path.read_text().splitlines()[1:] if ln.strip()} if path.exists() else set()


def _remove_shm(key: int) -> None:
    """Remove a System V segment / queue with ``key`` if a failing run left one (IPC_RMID)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    for get, ctl in ((libc.shmget, libc.shmctl), (libc.msgget, libc.msgctl)):
        i = get(key, 0, 0)
        if i >= 0:
            ctl(i, 0, None)


def _leftover_sandbox_processes() -> list[int]:
    """Live processes owned by any sandbox uid (fresh uids are >= 10^9), zombies excluded."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                uid = d.stat().st_uid
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if uid >= 1_000_000_000 and state not in ("Z", "X"):
                out.append(int(d.name))
    return out


def run_case(name: str, tmp: Path, *, audit_hook: bool) -> dict[str, object]:
    """Run one hostile program as a stdin test whose expected output is ``ok``; observe effects."""
    received: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: received.append(s))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.05)
    os.environ[SECRET_VAR] = SECRET
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    ipc_before = _sysv_keys("shm")
    try:
        code = CASES[name](server.getsockname()[1], outside)
        t = time.monotonic()
        out = run_tests(code, [{"input": "", "output": "ok"}], limits=FAST, test_timeout_s=1.0,
                        audit_hook=audit_hook)
        wall = time.monotonic() - t
        try:
            conn, _ = server.accept()
            conn.close()
            connected = True
        except (TimeoutError, OSError):
            connected = False
        written = [str(p) for p in (outside / "pwned.txt", Path(f"/tmp/respo-pwned-{TOKEN}"),
                                    Path(f"/var/tmp/respo-pwned-{TOKEN}")) if p.exists()]
        return {"case": name, "audit_hook": audit_hook, "reward": out.passed / out.total,
                "status": out.statuses[0], "wall_s": round(wall, 2), "connected": connected,
                "written": written, "signalled": bool(received), "leftover": _leftover_sandbox_processes(),
                "ipc_left": _sysv_keys("shm") - ipc_before}
    finally:
        _remove_shm(IPC_KEY)
        del os.environ[SECRET_VAR]
        server.close()
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("audit_hook", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_program_contained(name, audit_hook, tmp_path):
    missing = [layer for layer in REQUIRES.get(name, ()) if not getattr(isolation(), layer)]
    if missing and not audit_hook:
        pytest.skip(f"this machine does not grant {missing}: only the audit hook contains this case")
    r = run_case(name, tmp_path, audit_hook=audit_hook)
    assert r["reward"] == 0.0, r
    assert not r["connected"], r
    assert not r["written"], r
    assert not r["signalled"], r
    assert not r["leftover"], r
    assert not r["ipc_left"], r
    assert r["wall_s"] < FAST.wall_s + 2.0, r


def test_caller_goes_on_and_scores_fractions():
    task = CodeTask(limits=FAST, test_timeout_s=0.5)
    p = Problem("sum", "add", "", {"tests": [{"input": "1 2\n", "output": "3\n"},
                                             {"input": "5 5", "output": "10"},
                                             {"input": "1 1", "output": "3"}]})
    assert task.reward(p, "```python\na, b = map(int, input().split())\nprint(a + b)\n```") == pytest.approx(2 / 3)
    assert task.reward(p, "no code here") == 0.0 and task.stats["no_code"] == 1
    assert task.reward(p, "```python\nwhile True: pass\n```") == 0.0
    assert task.reward(p, "```python\ndef (:\n```") == 0.0  # syntax error
    assert task.reward(p, "```python\nimport sys\nsys.exit(0)\n```") == 0.0
    f = Problem("fn", "f", "", {"fn_name": "twoSum", "tests": [
        {"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
        {"input": "[3,2,4]\n6", "output": "[1,2]", "testtype": "functional"}]})
    sol = ("```python\nclass Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
           "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
           "                return [seen[target - x], i]\n            seen[x] = i\n```")
    assert task.reward(f, sol) == 1.0


def test_state_does_not_leak_between_tests():
    code = "import builtins\nbuiltins.counter = getattr(builtins, 'counter', 0) + 1\nprint(1)\n"
    out = run_tests(code, [{"input": "", "output": "1"}] * 2, limits=FAST)
    assert out.passed == 2  # fresh namespace per test (builtins are shared: documented)


def test_environment_is_clean():
    os.environ[SECRET_VAR] = SECRET
    try:
        r = run_python(["-c", "import os; print(sorted(os.environ))"], files={}, limits=FAST)
    finally:
        del os.environ[SECRET_VAR]
    assert SECRET_VAR.encode() not in r.stdout
    assert r.stdout.strip() in (b"['HOME', 'LANG', 'PATH']", b"['HOME', 'LANG', 'LC_CTYPE', 'PATH']")


def test_compare_and_extract():
    assert stdout_matches("1 2  \n3\n\n", "1 2\n3")
    assert stdout_matches("0.50\n", "0.5")
    assert not stdout_matches("1 2", "1 3")
    assert extract_code("a\n```py\nx=1\n```\n```python\nx=2\n```\n```\ny\n```") == "x=2\n"
    assert extract_code("```\ny=1\n```") == "y=1\n"
    assert extract_code("none") is None


def test_isolation_report():
    iso = isolation()
    if os.getuid() == 0:
        assert iso.fresh_uid and iso.net_namespace and iso.mount_namespace, iso
        assert iso.ipc_namespace and iso.pid_namespace, iso



# --- the outside audit's cases (issue 16): host files, IPC, disk, /proc, hostile result rows ---

ORACLE = (  # solves nothing: looks the expected output up in a data set file on the host
    "import json, sys\nx = sys.stdin.read()\n"
    f"for line in open({str(HUB_FIXTURE)!r}):\n"
    "    for t in json.loads(json.loads(line)['public_test_cases']):\n"
    "        if t['input'] == x:\n            print(t['output'], end='')\n")
needs_root_layers = pytest.mark.skipif(os.getuid() != 0, reason="the minimal root and the PID and IPC "
                                       "namespaces need root (test_isolation_report checks root gets them)")


def test_host_file_oracle_works_outside_the_sandbox():
    import subprocess

    r = subprocess.run([sys.executable, "-c", ORACLE], input=b"3\n", capture_output=True, check=True)
    assert r.stdout == b"6\n"  # so the sandboxed test below can fail


@needs_root_layers
@pytest.mark.parametrize("audit_hook", [False, True])
def test_host_file_reward_hack_scores_zero(audit_hook):
    tests = [{"input": "3\n", "output": "6\n", "testtype": "stdin"}]
    p = Problem("abc001_a", "Double it", "", {"tests": tests, "heldout_tests": tests})
    response = f"```python\n{ORACLE}```"
    for key in ("tests", "heldout_tests"):
        assert CodeTask(tests_key=key, limits=FAST, audit_hook=audit_hook).reward(p, response) == 0.0


@needs_root_layers
def test_program_sees_only_its_folder_and_the_interpreter():
    repo = Path(__file__).resolve().parents[1]
    probe = ("import json, os\nseen = {}\n"
             f"for p in ({str(repo / 'README.md')!r}, {str(HUB_FIXTURE)!r}, '/etc/passwd', '/etc/hostname',"
             " '/root', '/home', '/proc/1/cmdline'):\n"
             "    try:\n        seen[p] = len(open(p, 'rb').read()) if not os.path.isdir(p) else os.listdir(p)\n"
             "    except OSError:\n        pass\n"
             "for p in ('/usr/pwned', '/pwned', '/etc/pwned'):\n"
             "    try:\n        open(p, 'w').write('x')\n        seen[p] = 'written'\n"
             "    except OSError:\n        pass\n"
             "print(json.dumps({'top': sorted(os.listdir('/')), 'cwd': os.getcwd(), 'seen': seen,"
             " 'pids': [d for d in os.listdir('/proc') if d.isdigit()]}))\n")
    r = run_python(["-c", probe], files={}, limits=FAST)
    import json

    got = json.loads(r.stdout)
    assert set(got["top"]) <= {"usr", "lib", "lib64", "bin", "etc", "dev", "proc", "tmp", "work"}, got
    assert got["cwd"] == "/work"
    assert set(got["seen"]) <= {"/proc/1/cmdline"}, got  # only its own process 1
    assert got["pids"] == ["1"], got


@needs_root_layers
def test_other_processes_are_invisible():
    import subprocess

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", TOKEN])
    try:
        probe = ("import os\nfound = False\nfor d in os.listdir('/proc'):\n    try:\n"
                 f"        found |= {TOKEN!r}.encode() in open('/proc/' + d + '/cmdline', 'rb').read()\n"
                 "    except OSError:\n        pass\nprint('ok' if found else 'no')\n")
        out = run_tests(probe, [{"input": "", "output": "ok"}], limits=FAST, audit_hook=False)
        assert out.passed == 0 and out.statuses == ("wrong",), out
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_root_layers
def test_ipc_objects_are_gone_after_the_run():
    key = 0x5E000000 + secrets.randbelow(1 << 20)
    probe = ("import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
             f"a = libc.shmget({key}, 4096, 0o1000 | 0o666)\nb = libc.msgget({key}, 0o1000 | 0o666)\n"
             "print('ok' if a >= 0 and b >= 0 else 'no')\n")
    try:
        out = run_tests(probe, [{"input": "", "output": "ok"}], limits=FAST, audit_hook=False)
        assert out.passed == 1, out  # the objects were created inside the run ...
        assert key not in _sysv_keys("shm") and key not in _sysv_keys("msg")  # ... and did not outlive it
    finally:
        _remove_shm(key)


@needs_root_layers
def test_work_folder_size_is_capped():
    from dataclasses import replace

    probe = ("n = 0\nfor i in range(48):\n    try:\n        with open(f'f{i}', 'wb') as f:\n"
             "            f.write(b'x' * 1000000)\n        n += 1\n    except OSError:\n        break\nprint(n)\n")
    r = run_python(["-c", probe], files={}, limits=replace(FAST, work_bytes=8 << 20))
    assert 1 <= int(r.stdout) <= 9, r  # 8 MiB, not 48 MB on the host's disk


def test_remove_tree_survives_a_deep_tree(tmp_path):
    from respo.tasks.sandbox import remove_tree

    top = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    fd = os.open(top, os.O_RDONLY)
    for i in range(1200):  # deeper than the recursion limit and PATH_MAX
        os.mkdir("d", dir_fd=fd)
        if i % 300 == 0:
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            os.symlink("/etc", "link", dir_fd=fd)  # must be unlinked, never followed
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    remove_tree(top)
    assert not top.exists() and Path("/etc/hostname").exists() == os.path.exists("/etc/hostname")


HOSTILE_ROWS = {
    "index 1e999": '{"i": 1e999, "status": "ok", "out": "6"}',
    "deep nesting": '{"i": 0, "status": "ok", "out": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "huge integer index": '{"i": ' + "9" * 5000 + ', "status": "ok", "out": "6"}',
    "non-string output": '{"i": 0, "status": "ok", "out": ' + "1" * 4000 + "}",
    "not an object": "[0, 1]",
}


@pytest.mark.parametrize("name", list(HOSTILE_ROWS))
def test_hostile_result_rows_score_zero(name):
    row = HOSTILE_ROWS[name]
    code = f"import os\nopen('results.jsonl', 'w').write({row!r} + '\\n')\nos._exit(0)\n"
    out = run_tests(code, [{"input": "3\n", "output": "6\n"}], limits=FAST)
    assert out.passed == 0 and out.statuses == ("missing",), out


def test_hostile_functional_values_compare_false():
    from respo.tasks.code import functional_matches

    assert not functional_matches("1e999", "5")
    assert not functional_matches("[" * 100_000 + "]" * 100_000, "[]")
    assert not functional_matches("1" + "0" * 400, "1.5")  # int beyond float range vs a float
    assert not functional_matches("9" * 5000, "9")  # beyond int parsing limit
    assert functional_matches("1" + "0" * 400, "1" + "0" * 400) and functional_matches("[1, 2.0]", "[1.0, 2]")
    assert not stdout_matches("1e999999999999", "1e999999999998") and stdout_matches("2.50", "2.5")

if __name__ == "__main__":  # the table for experiments/LOG.md
    print(isolation())
    print("| case | audit hook | reward | status | wall s | connected | wrote outside | signalled parent | "
          "leftover procs | IPC left |")
    print("|---|---|---:|---|---:|---|---|---|---|---|")
    for hook in (False, True):
        for n in CASES:
            with tempfile.TemporaryDirectory() as d:
                r = run_case(n, Path(d), audit_hook=hook)
            print(f"| {n} | {'on' if hook else 'off'} | {r['reward']} | {r['status']} | {r['wall_s']} | "
                  f"{r['connected']} | {bool(r['written'])} | {r['signalled']} | {len(r['leftover'])} | "
                  f"{len(r['ipc_left'])} |")
    sys.exit(0)
