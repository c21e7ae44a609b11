#!/usr/bin/env python3
"""The host end of the Linux guest's hvc0 (linux_guest.sh).

console_peer.py SOCKET TOKEN LOG: connects to virtio-kvm's console socket
(retrying until it exists), waits for the guest's "GUEST-HELLO" line,
answers "HOST-REPLY TOKEN" and waits for "GUEST-ECHO TOKEN". Everything
received goes to LOG. Exit 0 when the echo came back, 1 otherwise.
"""
import socket
import sys
import time


def main() -> int:
    path, token, log_path = sys.argv[1:4]
    deadline = time.monotonic() + 360
    sock = None
    while sock is None:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            sock = s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.2)
    received = b""
    replied = False
    echo = f"GUEST-ECHO {token}".encode()
    with open(log_path, "wb") as log:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = sock.recv(4096)
            except socket.timeout:
                break
            if not data:
                break
            log.write(data)
            log.flush()
            received += data
            if not replied and b"GUEST-HELLO" in received:
                sock.sendall(f"HOST-REPLY {token}\n".encode())
                replied = True
            if echo in received:
                return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
