"""A rate-limited TCP proxy on loopback: a slow WAN link between a sender and the bridge.

Bytes from the client to the server are passed on at most ``bytes_per_second`` (in small slices,
so they arrive as a steady trickle, not in bursts); replies go back at once. With
``stall_after_bytes`` the link stops reading from the client after that many: a PACS that hangs. Threads, bounded:
``close`` stops the listener and every connection.
"""

from __future__ import annotations

import socket
import threading
import time

SLICE_BYTES = 8 * 1024
RECEIVE_WINDOW_BYTES = 64 * 1024


class SlowLink:
    def __init__(self, target_port: int, bytes_per_second: float, stall_after_bytes: int | None = None) -> None:
        self.target_port = target_port
        self.bytes_per_second = bytes_per_second
        self.stall_after_bytes = stall_after_bytes  # then stop reading from the client: a peer that hangs
        self._listener = socket.create_server(("127.0.0.1", 0))
        # a WAN-like window: loopback would otherwise buffer megabytes the "link" has not carried yet
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_WINDOW_BYTES)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.forwarded = 0  # client -> server bytes so far
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            server.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for source, sink, limited in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, limited), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, limited: bool) -> None:
        free_at = time.monotonic()  # when the link can take the next byte (no credit saved up while idle)
        try:
            while not self._closing.is_set():
                if limited and self.stall_after_bytes is not None and self.forwarded >= self.stall_after_bytes:
                    self._closing.wait()  # read nothing more until the link is closed
                    break
                data = source.recv(SLICE_BYTES)
                if not data:
                    break
                if limited:
                    free_at = max(free_at, time.monotonic()) + len(data) / self.bytes_per_second
                    delay = free_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # the link's speed, not a synchronisation
                sink.sendall(data)
                if limited:
                    self.forwarded += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):  # one side gone: the link drops, as a real one would
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
