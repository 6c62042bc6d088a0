"""Run model-written Python in a separate, locked-down process.

    from llmlab.agents.sandbox import run_python, isolation
    result = run_python("print(6 * 7)", timeout_s=5, memory_mb=256)
    result.stdout, result.stderr, result.reason     # "42\\n", "", "ok"
    print(isolation().describe())                   # which layers are active on this machine

The program runs as `python -I -S -B main.py` in its own temporary directory, with a scrubbed
environment, under a launcher (`_sandbox_boot.py`) that applies, strongest first, whatever this
machine permits:

- namespaces via `unshare`: network (only a downed loopback: nothing outside is reachable), PID
  (the program cannot see or signal other processes; killing the launcher kills them all) and mount
  (every mount read-only except the work dir, a fresh /proc);
- when started as root: the program runs as `nobody`, so the rlimits bind and it holds no
  capabilities;
- rlimits: CPU seconds, address space, processes, file size, open files, no core dumps;
- no-new-privileges and a seccomp filter that makes socket() fail (libseccomp via ctypes), used
  with or without a network namespace;
- a wall-clock kill of the whole process group.

The exit reason is one of ok / timeout / memory / killed / error. Nothing here ever runs model code
in this process. The isolation actually in force is probed once (running `print('ok')` through
each configuration) and logged; `isolation()` returns it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("llmlab.agents.sandbox")

BOOT = Path(__file__).with_name("_sandbox_boot.py")
NOBODY = 65534
MAX_OUTPUT = 64 * 1024  # characters of stdout / stderr kept


@dataclass(frozen=True)
class Isolation:
    namespaces: tuple[str, ...]  # of "net", "pid", "mount" (empty: none)
    user: str  # "nobody" (dropped from root), "user-namespace root", or the caller's own
    seccomp: bool
    python: str  # the interpreter the program runs under
    notes: str = ""

    def describe(self) -> str:
        net = (
            "network namespace"
            if "net" in self.namespaces
            else ("seccomp socket() denial" if self.seccomp else "NONE (network reachable)")
        )
        fs = (
            "read-only except its work dir"
            if "mount" in self.namespaces
            else "writable wherever the user may write"
        )
        pid = "own PID namespace" if "pid" in self.namespaces else "shared PID space"
        seccomp = "on" if self.seccomp else "off"
        line = (
            f"sandbox: network={net}; filesystem={fs}; pids={pid}; user={self.user}; "
            f"seccomp={seccomp}; rlimits=on; python={self.python}"
        )
        return line + (f" ({self.notes})" if self.notes else "")


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    reason: str  # ok | timeout | memory | killed | error
    returncode: int | None  # the program's exit code (None when a signal ended it)
    signal: int | None
    seconds: float
    workdir: str  # where it ran (deleted afterwards)

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


def _world_executable(path: str) -> bool:
    """Can `nobody` run this interpreter (every directory above it searchable by others)?"""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


def _interpreter(drop_uid: bool) -> str | None:
    candidates = [sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]
    for path in candidates:
        if path and os.path.exists(path) and (not drop_uid or _world_executable(path)):
            return os.path.realpath(path)
    return None


def _configurations() -> list[tuple[list[str], Isolation, bool, int | None]]:
    """(launcher prefix, isolation, lock_fs, uid to drop to), strongest first."""
    unshare = shutil.which("unshare")
    root = os.geteuid() == 0
    options = []
    ns_flags = ["--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if unshare and root:
        python = _interpreter(drop_uid=True)
        if python:
            options.append(
                (
                    [unshare, *ns_flags],
                    Isolation(("net", "pid", "mount"), "nobody", True, python),
                    True,
                    NOBODY,
                )
            )
    if unshare:  # a user namespace: needs unprivileged user namespaces; no read-only remount
        options.append(
            (
                [unshare, "--user", "--map-root-user", *ns_flags],
                Isolation(
                    ("net", "pid"),
                    "user-namespace root (the caller's uid outside)",
                    True,
                    _interpreter(False) or sys.executable,
                    "no read-only filesystem: the program may write where the caller may",
                ),
                False,
                None,
            )
        )
    python = _interpreter(drop_uid=root) if root else sys.executable
    if root and python:
        options.append(([], Isolation((), "nobody", True, python, "no namespaces"), False, NOBODY))
    options.append(
        (
            [],
            Isolation((), f"uid {os.geteuid()}", True, sys.executable, "no namespaces"),
            False,
            None,
        )
    )
    return options


@lru_cache(maxsize=1)
def _setup() -> tuple[list[str], Isolation, bool, int | None]:
    """The strongest configuration that runs `print('ok')` here; logged once."""
    for prefix, iso, lock_fs, uid in _configurations():
        for seccomp in (True, False):
            iso_now = Isolation(iso.namespaces, iso.user, seccomp, iso.python, iso.notes)
            result = _run("print('ok')", 10.0, 128, prefix, iso_now, lock_fs, uid)
            if result.reason == "ok" and result.stdout.strip() == "ok":
                log.info(iso_now.describe())
                return prefix, iso_now, lock_fs, uid
    raise RuntimeError("no sandbox configuration can run Python on this machine")


def isolation() -> Isolation:
    """The isolation run_python uses on this machine (probed once)."""
    return _setup()[1]


def run_python(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 256,
    *,
    cpu_s: int | None = None,
    processes: int = 16,
    file_mb: int = 16,
    open_files: int = 64,
) -> SandboxResult:
    """Run `code` in the sandbox; never raises for anything the code does."""
    prefix, iso, lock_fs, uid = _setup()
    return _run(
        code, timeout_s, memory_mb, prefix, iso, lock_fs, uid, cpu_s, processes, file_mb, open_files
    )


def _run(
    code: str,
    timeout_s: float,
    memory_mb: int,
    prefix: list[str],
    iso: Isolation,
    lock_fs: bool,
    uid: int | None,
    cpu_s: int | None = None,
    processes: int = 16,
    file_mb: int = 16,
    open_files: int = 64,
) -> SandboxResult:
    private = tempfile.mkdtemp(prefix="llmlab-sandbox-io-")  # outputs + status: parent only
    workdir = tempfile.mkdtemp(prefix="llmlab-sandbox-")
    try:
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(Path(workdir, "main.py"), uid, uid)
        config = {
            "workdir": workdir,
            "python": iso.python,
            "lock_fs": lock_fs,
            "drop_uid": uid,
            "seccomp": iso.seccomp,
            "cpu_s": int(cpu_s or max(1, int(timeout_s) + 1)),
            "memory_mb": int(memory_mb),
            "file_mb": int(file_mb),
            "open_files": int(open_files),
            "processes": int(processes),
            "env": {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": workdir,
                "TMPDIR": workdir,
                "LANG": "C.UTF-8",
            },
        }
        out_path, err_path = Path(private, "stdout"), Path(private, "stderr")
        status_path = Path(private, "status")
        start = time.monotonic()
        timed_out = False
        with (
            open(out_path, "wb") as out,
            open(err_path, "wb") as err,
            open(status_path, "wb") as status,
        ):
            config["status_fd"] = status.fileno()
            argv = [*prefix, sys.executable, "-I", "-S", "-B", str(BOOT), json.dumps(config)]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,  # its own process group: one killpg ends them all
                pass_fds=(status.fileno(),),  # the launcher reports how the program ended
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
        seconds = time.monotonic() - start
        stdout = _read(out_path)
        stderr = _read(err_path)
        ended = status_path.read_text(errors="replace").split()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    returncode, sig = None, None
    if len(ended) == 2 and ended[0] == "exit":
        returncode = int(ended[1])
    elif len(ended) == 2 and ended[0] == "signal":
        sig = int(ended[1])
    reason = _reason(timed_out, returncode, sig, stderr)
    return SandboxResult(stdout, stderr, reason, returncode, sig, seconds, workdir)


def _kill_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGKILL the launcher's whole process group and wait until every member is gone.

    The launcher is pid 1 of the sandbox's PID namespace when there is one, and the kernel ends
    its exit only after every process in the namespace has died, so an empty group means an
    empty namespace. Killing is asynchronous: without the wait a process could linger briefly.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + grace_s
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _read(path: Path) -> str:
    with open(path, "rb") as handle:
        data = handle.read(MAX_OUTPUT * 4)
    text = data.decode("utf-8", errors="replace")
    return text[:MAX_OUTPUT] + ("\n[output truncated]" if len(text) > MAX_OUTPUT else "")


def _reason(timed_out: bool, returncode: int | None, sig: int | None, stderr: str) -> str:
    if timed_out or sig in (signal.SIGXCPU,):
        return "timeout"
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    if tail and tail[0].startswith("MemoryError"):
        return "memory"
    if sig is not None:
        return "killed"
    if returncode is None:  # the launcher died without a word: killed from outside
        return "killed"
    return "ok" if returncode == 0 else "error"
