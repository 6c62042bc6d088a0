"""Adversarial tests of llmlab.agents.sandbox: each attack is contained and ends with the right reason.

    PYTHONPATH=src python -m pytest tests/test_agents_sandbox.py -q

The parent (this pytest process) must survive every one; no file may appear outside the sandbox's
own directory; a socket listener on loopback must never see a connection; secrets in this process's
environment must never reach the program's output. The payloads include the published escapes of
in-process Python sandboxes (class-hierarchy walks to os/subprocess as in CVE-2025-9959, getattr on
frames and builtins as in CVE-2025-5120 against smolagents' local executor): they succeed inside the
sandbox's interpreter — there is nothing in-process to escape — and still reach nothing outside it.
"""

import os
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from llmlab.agents.sandbox import isolation, run_python

SECRET = "llmlab-secret-" + uuid.uuid4().hex


@pytest.fixture
def targets(tmp_path, monkeypatch):
    """Paths the program must not be able to create, and a secret in our environment."""
    monkeypatch.setenv("LLMLAB_TEST_SECRET", SECRET)
    name = "escape-" + uuid.uuid4().hex
    paths = [tmp_path / name, Path("/tmp") / name, Path("/dev/shm") / name, Path.cwd() / name]
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def run(code: str, **kw):
    return run_python(textwrap.dedent(code), **kw)


def assert_contained(result, paths):
    assert not any(p.exists() for p in paths), [str(p) for p in paths if p.exists()]
    assert SECRET not in result.stdout + result.stderr
    assert not _survivors(result.workdir), "a sandboxed process outlived run_python"


def _survivors(workdir: str) -> list[int]:
    """Processes whose working directory is (was) the sandbox's."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(workdir):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_isolation_is_reported_and_plain_code_runs():
    assert "sandbox: network=" in isolation().describe()
    result = run_python("print(sum(range(10)))")
    assert (result.stdout, result.reason, result.returncode) == ("45\n", "ok", 0)


def test_infinite_loop_times_out(targets):
    result = run("while True:\n    pass\n", timeout_s=1.5)
    assert result.reason == "timeout" and result.seconds < 10
    assert_contained(result, targets)


def test_sleeping_program_is_killed_by_the_wall_clock(targets):
    result = run("import time\nprint('start', flush=True)\ntime.sleep(60)\n", timeout_s=1.0)
    assert result.reason == "timeout" and result.stdout == "start\n" and result.seconds < 10


def test_fork_bomb_is_contained(targets):
    code = """
    import os, time
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    """
    result = run(code, timeout_s=2.0, processes=16)
    assert result.reason == "timeout"
    assert_contained(result, targets)


def test_memory_bomb_ends_with_memory(targets):
    result = run(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n", memory_mb=128
    )
    assert result.reason == "memory", result.stderr
    result = run("x = bytearray(4 << 30)\n", memory_mb=128)
    assert result.reason == "memory", result.stderr
    assert_contained(result, targets)


def test_writing_outside_its_directory_fails(targets):
    lines = [f"open({str(p)!r}, 'w').write('x')" for p in targets]
    code = "import os\nok = []\n"
    for line in lines + ["open('../escape-rel-%s' % os.getpid(), 'w')", "os.mkdir('/escape-dir')"]:
        code += f"try:\n    {line}\n    ok.append({line!r})\nexcept OSError:\n    pass\n"
    code += "open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read(), ok)\n"
    result = run(code)
    assert result.reason == "ok" and result.stdout == "fine []\n", result
    assert not Path("/escape-dir").exists()
    assert_contained(result, targets)


def test_parent_environment_secrets_are_unreachable(targets):
    code = """
    import os
    seen = [repr(dict(os.environ))]
    for pid in os.listdir('/proc'):
        for name in ('environ', 'cmdline'):
            try:
                seen.append(open(f'/proc/{pid}/{name}', 'rb').read().decode(errors='replace'))
            except OSError:
                pass
    print('\\n'.join(seen))
    """
    result = run(code)
    assert result.reason == "ok" and "PATH" in result.stdout
    assert_contained(result, targets)


def test_no_connection_reaches_a_loopback_listener(targets):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = f"""
    import socket
    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hello')
    """
    try:
        result = run(code)
        ctypes_result = run(
            f"""
            import ctypes, struct
            libc = ctypes.CDLL(None)
            fd = libc.socket(2, 1, 0)
            addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))
            print(fd, libc.connect(fd, addr, 16) if fd >= 0 else -1)
            """
        )
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert result.reason == "error" and "Error" in result.stderr
    assert ctypes_result.reason == "ok" and ctypes_result.stdout.split()[1] == "-1"
    assert_contained(result, targets)


def test_subprocess_and_os_system_reach_nothing_outside(targets):
    shell = "; ".join(f"echo pwned > {p}" for p in targets) + "; env; cat /proc/*/environ"
    code = f"""
    import os, subprocess
    done = subprocess.run(['sh', '-c', {shell!r}], capture_output=True, text=True)
    print(done.stdout, os.system({shell!r}))
    """
    result = run(code)
    assert result.reason == "ok", result.stderr
    assert_contained(result, targets)


def test_ctypes_cannot_escape_and_a_segfault_is_killed(targets):
    touch = "; ".join(f"touch {p}" for p in targets)
    result = run(f"import ctypes\nprint(ctypes.CDLL(None).system({touch.encode()!r}))\n")
    assert result.reason == "ok"
    assert_contained(result, targets)
    crash = run("import ctypes\nctypes.string_at(0)\n")
    assert crash.reason == "killed" and crash.signal == 11


def test_subclasses_walk_cve_2025_9959_style(targets):
    # The class-hierarchy walk that reached subprocess.Popen / os.system past smolagents' AST
    # executor: from a tuple up to object, down to the import machinery, to posix.system.
    commands = "; ".join(f"touch {p}" for p in targets)
    code = f"""
    classes = ().__class__.__base__.__subclasses__()
    importer = [c for c in classes if c.__name__ == 'BuiltinImporter'][0]
    posix = importer.load_module('posix')
    print(posix.system({commands!r}), posix.environ)
    """
    result = run(code)
    assert result.reason == "ok", result.stderr
    assert_contained(result, targets)


def test_getattr_on_frames_and_builtins_cve_2025_5120_style(targets):
    # getattr chains through a generator's frame to the real builtins, then __import__.
    path = str(targets[1])  # /tmp: writable by anyone outside the sandbox
    code = f"""
    gen = (x for x in [1])
    frame = getattr(gen, 'gi_frame')
    builtins = getattr(frame, 'f_builtins')
    os = builtins['__import__']('os')
    fd = os.open({path!r}, os.O_CREAT | os.O_WRONLY)
    """
    result = run(code)
    assert result.reason == "error" and "Read-only file system" in result.stderr
    assert_contained(result, targets)
