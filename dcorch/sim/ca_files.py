"""The simulated System Controller's CA files on disk, as a real one keeps them.

A StarlingX System Controller keeps each installed ``ssl_ca`` certificate in a file named by
its signature, and the ``openstack_ca`` one in a file of a fixed name that the next install
replaces. dcorch reads that directory (``master.ca_cert_dir``) when the audit must install a CA
on a subcloud (docs/behaviour.md#platform-driver), so the simulated master writes it too.

Handlers are synchronous and must not block the event loop, so they only *stage* changes; the
router flushes them in a worker thread before the answer is sent, so a client that got its 200
finds the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import trio

OPENSTACK_CA_FILE: Final = "openstack-ca-cert.pem"
"""The fixed-name file of the ``openstack_ca`` certificate (one at a time, as on StarlingX)."""


class CaFiles:
    """Staged writes and removals of CA files under one directory (none when it is empty)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._staged: list[tuple[str, str | None]] = []
        self._lock = trio.Lock()

    def file_name(self, mode: str, signature: str) -> str:
        """Where the certificate of ``mode`` with ``signature`` is kept."""
        return OPENSTACK_CA_FILE if mode == "openstack_ca" else signature

    def stage_write(self, mode: str, signature: str, pem: str) -> None:
        if self.directory:
            self._staged.append((self.file_name(mode, signature), pem))

    def stage_remove(self, mode: str, signature: str) -> None:
        if self.directory and mode != "openstack_ca":  # the next install replaces that one
            self._staged.append((self.file_name(mode, signature), None))

    async def flush(self) -> None:
        """Apply the staged changes, in order, off the event loop."""
        if not self._staged:
            return
        batch, self._staged = self._staged, []
        async with self._lock:  # FIFO: batches land in the order they were staged
            await trio.to_thread.run_sync(self._apply, batch)

    def _apply(self, batch: list[tuple[str, str | None]]) -> None:
        root = Path(self.directory)
        root.mkdir(parents=True, exist_ok=True)
        for name, pem in batch:
            path = root / name
            if pem is None:
                path.unlink(missing_ok=True)
            else:
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_text(pem)
                tmp.replace(path)  # a reader never sees half a file
