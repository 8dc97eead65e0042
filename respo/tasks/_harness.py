"""Test harness run INSIDE the sandbox (``python -I -B _harness.py``): never imported by respo.

Reads ``job.json`` (mode ``stdin`` or ``functional``, ``fn_name``, per-test time limit, whether
to install the audit hook) and ``inputs.json`` (the test inputs only: expected outputs stay with
the parent, so the program cannot read them), runs ``solution.py`` once per test in a fresh
namespace and appends one JSON line per test to ``results.jsonl``: ``{"i", "status", "out"}``.
The parent compares outputs. Uses only the standard library.
"""

import io
import json
import os
import signal
import sys


class _TestTimeout(BaseException):
    pass


class _CappedBuffer(io.BytesIO):
    """Captured stdout that refuses to grow past ``cap`` bytes (a print loop fails fast)."""

    def __init__(self, cap):
        super().__init__()
        self.cap = cap

    def write(self, b):
        if self.tell() + len(b) > self.cap:
            raise OSError("output limit exceeded")
        return super().write(b)


def _install_audit_hook(root):
    blocked = ("socket.", "os.kill", "os.killpg", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn",
               "os.spawn", "os.system", "subprocess.Popen", "pty.spawn", "ctypes.", "os.putenv", "os.unsetenv",
               "signal.pthread_kill", "os.symlink", "os.link", "os.chmod", "os.chown", "os.rename",
               "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, (str, bytes)):
                p = os.fsdecode(path)
                # other processes' /proc entries (environ, cmdline, mem) are off limits
                if p.startswith("/proc/") and not p.startswith(("/proc/self/", "/proc/thread-self/")):
                    raise PermissionError(f"sandbox: reading {p} is not allowed")
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and isinstance(path, (str, bytes)):
                p = os.path.realpath(os.fsdecode(path))
                if not (p == root or p.startswith(root + os.sep)):
                    raise PermissionError(f"sandbox: writing {p} is not allowed")

    sys.addaudithook(hook)


def _main():
    with open("job.json") as f:
        job = json.load(f)
    with open("inputs.json") as f:
        inputs = json.load(f)
    with open("solution.py") as f:
        source = f.read()
    results = open("results.jsonl", "a", buffering=1)
    real_stdout, real_stdin = sys.stdout, sys.stdin

    def on_alarm(signum, frame):
        raise _TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        code = compile(source, "solution.py", "exec")
    except BaseException as e:  # a syntax error fails every test
        for i in range(len(inputs)):
            results.write(json.dumps({"i": i, "status": "compile_error", "out": type(e).__name__}) + "\n")
        return
    if job.get("audit_hook", True):
        _install_audit_hook(os.path.realpath(os.getcwd()))
    cap = int(job.get("output_cap", 1 << 20))
    for i, text in enumerate(inputs):
        out_buf = _CappedBuffer(cap)
        out_text = io.TextIOWrapper(out_buf, encoding="utf-8", write_through=True)
        sys.stdout = out_text
        sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8")
        status, value = "ok", ""
        signal.setitimer(signal.ITIMER_REAL, float(job["test_timeout_s"]))
        try:
            ns = {"__name__": "__main__" if job["mode"] == "stdin" else "solution", "__builtins__": __builtins__}
            exec(code, ns)
            if job["mode"] == "functional":
                fn = job["fn_name"]
                target = ns.get("Solution")
                func = getattr(target(), fn) if target is not None and hasattr(target, fn) else ns.get(fn)
                if func is None:
                    raise NameError(f"no function {fn}")
                args = [json.loads(line) for line in text.split("\n") if line.strip()]
                value = json.dumps(func(*args))
        except SystemExit as e:
            if e.code not in (None, 0):
                status = "exit"
        except _TestTimeout:
            status = "timeout"
        except BaseException as e:
            status = "error:" + type(e).__name__
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stdin = real_stdout, real_stdin
        if job["mode"] == "stdin":
            try:
                out_text.flush()
            except BaseException:
                pass
            value = out_buf.getvalue()[:cap].decode("utf-8", "replace") if not out_buf.closed else ""
        results.write(json.dumps({"i": i, "status": status, "out": value[:cap]}) + "\n")


if __name__ == "__main__":
    _main()
