#!/usr/bin/python3
"""A libzmq peer for the Lorica ZMTP tests, driven over stdin/stdout.

Each stdin line is a JSON command; each command gets exactly one JSON line
back on stdout. Frames travel hex-encoded. Run with /usr/bin/python3 (Debian's
python3-zmq, libzmq 4.3).
"""

import errno
import hashlib
import json
import sys
import time

import zmq

CONTEXT = zmq.Context()
SOCKETS = {}

OPTIONS = {
    "probe_router": zmq.PROBE_ROUTER,
    "router_mandatory": zmq.ROUTER_MANDATORY,
    "heartbeat_ivl": zmq.HEARTBEAT_IVL,
    "heartbeat_timeout": zmq.HEARTBEAT_TIMEOUT,
    "heartbeat_ttl": zmq.HEARTBEAT_TTL,
    "maxmsgsize": zmq.MAXMSGSIZE,
    "reconnect_ivl": zmq.RECONNECT_IVL,
}


def pattern(size, seed):
    """Deterministic bytes the Deno side can rebuild: (i + seed) mod 256."""
    block = bytes((i + seed) % 256 for i in range(256))
    return (block * (size // 256 + 1))[:size]


def receive(sock, timeout):
    """One message as Frame objects, or None after `timeout` ms."""
    if not sock.poll(timeout, zmq.POLLIN):
        return None
    return sock.recv_multipart(copy=False)


def peer_address(frames):
    try:
        return frames[-1].get("Peer-Address")
    except zmq.ZMQError:
        return None


def op_socket(cmd):
    sock = CONTEXT.socket(getattr(zmq, cmd["type"]))
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, cmd.get("sndtimeo", 5000))
    for name, value in cmd.get("options", {}).items():
        sock.setsockopt(OPTIONS[name], value)
    if "routing_id" in cmd:
        sock.setsockopt(zmq.ROUTING_ID, bytes.fromhex(cmd["routing_id"]))
    try:
        if "bind" in cmd:
            sock.bind(cmd["bind"])
        if "connect" in cmd:
            sock.connect(cmd["connect"])
    except zmq.ZMQError:
        sock.close(linger=0)  # so that a caller may simply try again
        raise
    SOCKETS[cmd["name"]] = sock
    return {"endpoint": sock.getsockopt_string(zmq.LAST_ENDPOINT)}


def op_send(cmd):
    frames = [bytes.fromhex(f) for f in cmd["frames"]]
    if "big" in cmd:
        frames.append(pattern(cmd["big"], cmd.get("seed", 0)))
    SOCKETS[cmd["name"]].send_multipart(frames)
    return {}


def op_recv(cmd):
    frames = receive(SOCKETS[cmd["name"]], cmd.get("timeout", 5000))
    if frames is None:
        return {"ok": False, "error": "timeout"}
    return {
        "frames": [f.bytes.hex() for f in frames],
        "peerAddress": peer_address(frames),
    }


def op_echo(cmd):
    """Receive one message, send it back unchanged (unless "reply" is false),
    report sizes and digests."""
    sock = SOCKETS[cmd["name"]]
    frames = receive(sock, cmd.get("timeout", 5000))
    if frames is None:
        return {"ok": False, "error": "timeout"}
    if cmd.get("reply", True):
        sock.send_multipart([f.bytes for f in frames])
    return {
        "sizes": [len(f.bytes) for f in frames],
        "sha256": [hashlib.sha256(f.bytes).hexdigest() for f in frames],
        "peerAddress": peer_address(frames),
    }


def op_close(cmd):
    SOCKETS.pop(cmd["name"]).close(linger=0)
    return {}


def op_sleep(cmd):
    time.sleep(cmd["ms"] / 1000)
    return {}


def op_swarm(cmd):
    """`count` DEALERs each send ["", "peer-N"] and expect the probe, then the
    reply ["", "reply-N"]; reports how many got exactly that."""
    count = cmd["count"]
    socks = []
    for i in range(count):
        sock = CONTEXT.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cmd["endpoint"])
        socks.append(sock)
    for i, sock in enumerate(socks):
        sock.send_multipart([b"", b"peer-%d" % i])
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    seen = [[] for _ in socks]
    index = {sock: i for i, sock in enumerate(socks)}
    deadline = time.monotonic() + cmd.get("timeout", 10000) / 1000
    done = 0
    while done < count and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            i = index[sock]
            while sock.poll(0, zmq.POLLIN):
                seen[i].append(sock.recv_multipart())
                if len(seen[i]) == 2:
                    done += 1
    good = sum(
        1 for i, msgs in enumerate(seen)
        if msgs == [[b""], [b"", b"reply-%d" % i]]
    )
    for sock in socks:
        sock.close(linger=0)
    return {"good": good, "sample": [[f.hex() for f in m] for m in seen[0]]}


OPS = {
    "socket": op_socket,
    "send": op_send,
    "recv": op_recv,
    "echo": op_echo,
    "close": op_close,
    "sleep": op_sleep,
    "swarm": op_swarm,
}


def main():
    print(json.dumps({"ok": True, "version": zmq.zmq_version()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            reply = {"ok": True}
            reply.update(OPS[cmd["op"]](cmd))
        except zmq.ZMQError as error:
            reply = {"ok": False, "error": zmq.strerror(error.errno),
                     "code": errno.errorcode.get(error.errno, "")}
        print(json.dumps(reply), flush=True)
    for sock in SOCKETS.values():
        sock.close(linger=0)
    CONTEXT.term()


if __name__ == "__main__":
    main()
