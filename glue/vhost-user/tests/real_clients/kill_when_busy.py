#!/usr/bin/env python3
"""Helper of qemu_reconnect.sh (not a test): SIGKILLs a vhost-user-device
daemon at a moment when its queue 0 has requests in flight, as the daemon's
own inflight region says (the memfd it mapped at SET_INFLIGHT_FD, read
through /proc/PID/map_files). Polls for up to TIMEOUT seconds, then kills anyway.
Prints "busy" or "idle" (what the region said right before the kill).

usage: kill_when_busy.py PID packed|split TIMEOUT
"""
import mmap
import os
import signal
import struct
import sys
import time


def main():
    pid, layout, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    # The daemon keeps only the mapping (it closes the fd): open the mapped
    # memfd through /proc/PID/map_files (root).
    path = None
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if "vhost-user-inflight" in line:
                path = f"/proc/{pid}/map_files/{line.split()[0]}"
                break
    if path is None:
        os.kill(pid, signal.SIGKILL)
        print("idle (no inflight region)")
        return
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    size = struct.unpack_from("<H", m, 10)[0]
    # Split: desc[h].inflight at 16 + 16 h; packed: entry[id].inflight at
    # 64 + 16 id (inflight.h).
    start = 64 if layout == "packed" else 16
    deadline = time.monotonic() + timeout
    state = "idle"
    while time.monotonic() < deadline:
        if any(m[start:start + 16 * size:16]):
            state = "busy"
            break
    os.kill(pid, signal.SIGKILL)
    print(state)


if __name__ == "__main__":
    main()
