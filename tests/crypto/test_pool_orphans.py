"""An obfuscator pool's processes end with the process that owns the pool, however it ends."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find processes")

OWNER = """
import sys, time
from hefl.crypto import ObfuscatorPool, generate_keypair

if __name__ == "__main__":
    pk, _ = generate_keypair(512, allow_insecure=True)
    pool = ObfuscatorPool(pk, capacity=64, chunk=8, workers=2)
    assert pool.wait(16, timeout=30)
    print("filled", flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)  # no close(): the pool is left to the interpreter's exit
    time.sleep(60)
"""


def _marked(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker`` (the owner's descendants)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["sigkill", "exit"])
def test_no_pool_process_outlives_its_owner(tmp_path, ending):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    marker = f"HEFL_POOL_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    owner = subprocess.Popen(
        [sys.executable, str(script), ending], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "filled"
        assert len(_marked(marker)) >= 3  # the owner, the forkserver, its workers
        if ending == "sigkill":
            owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=20)
        deadline = time.monotonic() + 5
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _marked(marker)
        assert not left, f"processes left 5 s after the owner ended ({ending}): {left}"
    finally:
        owner.kill()
        for pid in _marked(marker):
            os.kill(pid, signal.SIGKILL)
