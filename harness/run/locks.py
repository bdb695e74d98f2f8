"""A per-cell lock, so two schedulers on one workdir never run the same cell at once.

Local and NFS workdirs (CellLock): the lock is created with O_CREAT | O_EXCL (atomic on local and NFSv3+
filesystems) and holds the owner's host, pid, boot id and a random token; its holder renews a heartbeat
(the file's mtime) every LEASE_S / 4. A lock is stale, and taken over, when its owner is on this host and
no longer alive (its scheduler was killed), when it was taken on this host before the machine last booted
(a container or VM restarted under the same name), or when its heartbeat is older than LEASE_S whatever
host holds it (a pod restarted on new VMs leaves locks whose pids may exist on the new machines).

Object-store workdirs, gs:// or s3:// (ObjectStoreLock): a bucket has no exclusive create and no mtime
to touch, so the lock is a lease held in the object's content. To take it, a scheduler reads the object;
if it is absent, unreadable or stale it writes its own token (host, pid, boot id, a random token and the
heartbeat time), waits SETTLE_S, reads the object back and holds the lease only if its own token is still
there. Writes to one object are serialised and reads are strongly consistent (GCS, S3), so of several
contenders that raced the last writer wins and every other one reads another token back and gives up.
The rule is safe as long as no contender takes longer than SETTLE_S between reading the object and
writing its token (one request each). The holder renews the lease by rewriting the object with a new
heartbeat time every LEASE_S / 4, after checking that it is still its own; release deletes it if so. A
lease is stale when its heartbeat time is older than LEASE_S by the reader's clock (hosts' clocks are
assumed to agree to well within LEASE_S), or when its owner is on this host and no longer alive.

open_lock(path) picks the kind the path needs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from results.paths import AnyPath, as_path, is_remote, write_object

# A lock whose heartbeat is older than this is stale on any host (its holder renews it every LEASE_S / 4).
LEASE_S = 600.0
# ObjectStoreLock: the wait between writing a token and reading it back; longer than any contender's gap
# between its read of the object and its write.
SETTLE_S = 2.0


def boot_id() -> str:
    """This machine's boot id (Linux), so a lock left before a reboot under the same host name is known
    stale; '' where the system does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    token: str
    boot: str = ""

    def alive(self) -> bool:
        """False only when we can tell: same host and no such process, same host name but another boot,
        or our own pid with another token (left by an earlier process that had this pid, as after a
        container restart). Other hosts: see CellLock._live (the heartbeat)."""
        if self.host != socket.gethostname():
            return True
        if self.boot and boot_id() and self.boot != boot_id():
            return False
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


# The holder of a lock file that is empty or garbled: its creator died between creating and writing
# it (one small write), or is writing it right now. It counts as live until UNREADABLE_GRACE_S old.
UNREADABLE = LockOwner("?", 0, "unreadable")
UNREADABLE_GRACE_S = 10.0


class _Held:
    """What both kinds of lock share: the owner this process writes, a heartbeat thread that renews the
    lock while it is held and still ours, and release. Subclasses say how to read and renew."""

    def __init__(self, path: AnyPath):
        self.path = path
        self.me = LockOwner(socket.gethostname(), os.getpid(), secrets.token_hex(8), boot_id())
        self.held = False
        self._stop = threading.Event()

    def owner(self) -> LockOwner | None:
        raise NotImplementedError

    def acquire(self) -> bool:
        raise NotImplementedError

    def _renew(self) -> None:
        raise NotImplementedError

    def _hold(self) -> None:
        """Mark the lock held and renew it every LEASE_S / 4 until release."""
        self.held = True
        self._stop.clear()
        threading.Thread(target=self._heartbeat, name=f"lock {self.path}", daemon=True).start()

    def _heartbeat(self) -> None:
        """Renew the lock while it is held and still ours, so other hosts see its holder is alive."""
        while not self._stop.wait(LEASE_S / 4):
            try:
                if self.owner() == self.me:
                    self._renew()
            except OSError:
                pass

    def clear_if_stale(self) -> None:
        """Remove the lock if its holder is dead: a scheduler killed after writing a finished cell's
        record but before releasing the cell's lock leaves one behind. A live holder's lock stays."""
        if self.acquire():
            self.release()

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        self._stop.set()
        if self.held and self.owner() == self.me:
            self.path.unlink(missing_ok=True)
        self.held = False


class CellLock(_Held):
    """acquire() -> True when this process now holds the lock; release() gives it back."""

    def __init__(self, path: str | Path):
        super().__init__(Path(path))

    def owner(self) -> LockOwner | None:
        """The current holder, or None when there is no lock (or it is being written right now)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LockOwner(str(data["host"]), int(data["pid"]), str(data["token"]), str(data.get("boot", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return UNREADABLE

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"host": self.me.host, "pid": self.me.pid, "token": self.me.token, "boot": self.me.boot,
                       "started": time.time()}, f)
        self._hold()
        return True

    def _renew(self) -> None:
        os.utime(self.path)  # the heartbeat is the file's mtime

    def _live(self, owner: LockOwner) -> bool:
        """A live holder: alive as far as this host can tell, and its heartbeat fresher than LEASE_S."""
        try:
            fresh = time.time() - self.path.stat().st_mtime <= LEASE_S
        except FileNotFoundError:
            return False
        return fresh and owner.alive()

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        owner = self.owner()
        if owner is None:  # released between our attempt and the read
            return self._create()
        if owner == UNREADABLE:
            try:
                stale = time.time() - self.path.stat().st_mtime > UNREADABLE_GRACE_S
            except FileNotFoundError:
                return self._create()
            return self._take_over(owner) if stale else False
        if self._live(owner):
            return False
        return self._take_over(owner)

    def _take_over(self, stale: LockOwner) -> bool:
        """Move the stale lock aside atomically, check that it was the stale one, then create ours.

        Two schedulers may both see the same stale lock; os.rename lets only one of them move it.
        If what we moved is not the lock we judged stale (someone took it over in between), we put it
        back with os.link, which fails rather than overwrite a lock created meanwhile.
        """
        aside = self.path.with_name(f"{self.path.name}.stale-{self.me.host}-{self.me.pid}-{self.me.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._create()
        try:
            moved = CellLock(aside).owner()
            if moved != stale:
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                return False
        finally:
            aside.unlink(missing_ok=True)
        return self._create()

class ObjectStoreLock(_Held):
    """The lease of the module docstring on an object store: acquire() -> True when this process now
    holds it; release() gives it back. Same interface as CellLock."""

    def __init__(self, path: str | AnyPath):
        super().__init__(as_path(path))

    def _read(self) -> tuple[LockOwner, float] | None:
        """(holder, heartbeat time) of the lease object; None when there is none, UNREADABLE with a
        heartbeat of 0 (stale) for content that is not a lease (an object is never seen half-written)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            owner = LockOwner(str(data["host"]), int(data["pid"]), str(data["token"]), str(data.get("boot", "")))
            return owner, float(data["beat"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return UNREADABLE, 0.0

    def owner(self) -> LockOwner | None:
        """The current holder, or None when there is no lease."""
        found = self._read()
        return None if found is None else found[0]

    def _live(self, found: tuple[LockOwner, float] | None) -> bool:
        if found is None or found[0] == UNREADABLE:
            return False
        owner, beat = found
        return time.time() - beat <= LEASE_S and owner.alive()

    def _write(self) -> None:
        token = {"host": self.me.host, "pid": self.me.pid, "token": self.me.token, "boot": self.me.boot,
                 "beat": time.time()}
        write_object(self.path, json.dumps(token).encode("utf-8"))

    def acquire(self) -> bool:
        if self._live(self._read()):
            return False
        self._write()
        time.sleep(SETTLE_S)
        if self.owner() != self.me:  # another contender wrote after us: theirs
            return False
        self._hold()
        return True

    def _renew(self) -> None:
        self._write()  # a new heartbeat time in the lease


def open_lock(path: str | AnyPath) -> CellLock | ObjectStoreLock:
    """The lock for `path`: a lock file on a local or NFS workdir, a lease on an object store."""
    return ObjectStoreLock(path) if is_remote(path) else CellLock(path)
