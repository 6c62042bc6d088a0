"""The sandbox's trusted launcher (pid 1 of the sandbox when a PID namespace is active).

Run by `sandbox.run_python` as `python -I -S _sandbox_boot.py CONFIG_JSON`, never imported: it
locks the filesystem down (read-only everywhere except the work dir) when it has its own mount
namespace, forks the model's program, and in that child sets rlimits, no-new-privileges and a
seccomp filter denying socket(), drops to an unprivileged uid when started as root, scrubs the
environment and execs `python -I -S -B main.py`. It then reaps children until the program exits
and writes "exit N" or "signal N" to the status fd (a file the parent reads), so the parent learns how the
program ended even though it only sees the launcher. Standard library only (it runs under -S).
"""

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
PR_SET_NO_NEW_PRIVS = 38
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EACCES = 0x00050000 | 13


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return path.encode().decode("unicode_escape") if "\\" in path else path


def lock_filesystem(libc, workdir: str) -> None:
    """Every mount read-only except the work dir (bound onto itself so it stays writable)."""
    if libc.mount(workdir.encode(), workdir.encode(), None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "bind mount of the work dir failed")
    with open("/proc/self/mountinfo") as handle:
        points = [_unescape(line.split()[4]) for line in handle]
    for point in points:
        if point == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        if libc.mount(None, point.encode(), None, flags, None) != 0 and point == "/":
            raise OSError(ctypes.get_errno(), "read-only remount of / failed")


def deny_sockets() -> bool:
    """A seccomp filter: socket() fails with EACCES. False when libseccomp is missing."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return False
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    number = lib.seccomp_syscall_resolve_name(b"socket")
    if not ctx or lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO_EACCES, number, 0) != 0:
        return False
    return lib.seccomp_load(ctx) == 0


def limit(config: dict) -> None:
    mb = 1024 * 1024
    limits = {
        resource.RLIMIT_CPU: (config["cpu_s"], config["cpu_s"] + 1),
        resource.RLIMIT_AS: (config["memory_mb"] * mb, config["memory_mb"] * mb),
        resource.RLIMIT_FSIZE: (config["file_mb"] * mb, config["file_mb"] * mb),
        resource.RLIMIT_NOFILE: (config["open_files"], config["open_files"]),
        resource.RLIMIT_NPROC: (config["processes"], config["processes"]),
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)


def child(config: dict, libc) -> None:
    """Runs in the forked child: never returns (execs the program or exits 126)."""
    try:
        os.chdir(config["workdir"])
        limit(config)
        if config["drop_uid"] is not None:
            uid = config["drop_uid"]
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if config["seccomp"] and not deny_sockets():
            raise OSError("seccomp filter could not be loaded")
        python = config["python"]
        os.execve(python, [python, "-I", "-S", "-B", "main.py"], config["env"])
    except BaseException as exc:  # noqa: BLE001 - report any set-up failure, never run unconfined
        os.write(2, f"sandbox set-up failed: {exc}\n".encode())
        os._exit(126)


def main() -> None:
    config = json.loads(sys.argv[1])
    os.set_inheritable(config["status_fd"], False)  # the program must not get it
    status = os.fdopen(config["status_fd"], "w")
    libc = ctypes.CDLL(None, use_errno=True)
    if config["lock_fs"]:
        lock_filesystem(libc, config["workdir"])
    pid = os.fork()
    if pid == 0:
        child(config, libc)
    while True:  # reap everything (we may be pid 1) until the program itself ends
        done, code = os.waitpid(-1, 0)
        if done == pid:
            break
    if os.WIFSIGNALED(code):
        status.write(f"signal {os.WTERMSIG(code)}")
    else:
        status.write(f"exit {os.WEXITSTATUS(code)}")
    status.close()


if __name__ == "__main__":
    main()
