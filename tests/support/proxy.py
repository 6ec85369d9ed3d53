"""A TCP forwarder that can silently blackhole traffic, as a pulled cable would.

    proxy = BlackholeProxy("127.0.0.1", broker.port).start()   # kiosk -> proxy.port
    proxy.cut()       # from now on every byte, both ways, is dropped; nothing is closed
    proxy.restore()   # new connections flow again

During a cut no FIN or RST reaches either side: each end must notice by
itself (keepalive). A connection that lived through a cut stays dead after it
(the bytes it lost would corrupt its stream, as if a NAT entry had been
lost); its closes are passed on again once the cut is over. A connection
opened during the cut is accepted and then hears nothing.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Pair:
    """One proxied connection: the client side and the upstream side."""

    client: socket.socket
    upstream: socket.socket | None
    severed: bool = False
    closed_sides: set[socket.socket] = field(default_factory=set)

    def other(self, s: socket.socket) -> socket.socket | None:
        return self.upstream if s is self.client else self.client

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class BlackholeProxy:
    """Forwards a loopback port to target; cut() drops everything without closing anything."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._cut = False
        self._closing = False
        self._pairs: dict[socket.socket, _Pair] = {}
        self.accepted = 0
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)

    def start(self) -> BlackholeProxy:
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()
        return self

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Drop all traffic from now on, in both directions, closing nothing."""
        with self._lock:
            self._cut = True
            for pair in set(self._pairs.values()):
                pair.severed = True
        self._poke()

    def restore(self) -> None:
        """Let new connections through again; connections cut earlier stay dead."""
        with self._lock:
            self._cut = False
        self._poke()

    def close(self) -> None:
        self._closing = True
        self._poke()
        self._thread.join(5)
        for s in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> BlackholeProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the forwarding thread ---

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=None):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if s is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    self._after_restore()
                elif s is self._listener:
                    self._accept()
                elif s in self._pairs:
                    self._relay(s)
        for pair in set(self._pairs.values()):
            self._close_pair(pair)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        self.accepted += 1
        with self._lock:
            cut = self._cut
        upstream = None
        if not cut:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the target is down: the client sees its connection closed
                return
        pair = _Pair(client, upstream, severed=cut)
        for s in pair.sockets():
            s.setblocking(True)
            self._pairs[s] = pair
            self._sel.register(s, selectors.EVENT_READ)

    def _relay(self, s: socket.socket) -> None:
        pair = self._pairs[s]
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            cut = self._cut
            if cut:
                pair.severed = True
        if not data:
            if cut:
                # A close must not cross a cut: stop reading this side, keep the other open.
                pair.closed_sides.add(s)
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
            else:
                self._close_pair(pair)
            return
        other = pair.other(s)
        if pair.severed or other is None:
            self.dropped_bytes += len(data)
            return
        try:
            other.sendall(data)
        except OSError:
            self._close_pair(pair)

    def _after_restore(self) -> None:
        with self._lock:
            if self._cut:
                return
        for pair in set(self._pairs.values()):
            if pair.closed_sides:
                self._close_pair(pair)

    def _close_pair(self, pair: _Pair) -> None:
        for s in pair.sockets():
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            with contextlib.suppress(OSError):
                s.close()
