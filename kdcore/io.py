"""Safe writes under results_dir and work_dir.

- Atomic writes: a reader sees the old file or folder, or the whole new one
  (``atomic_path``, ``atomic_dir``, ``replaced_dir``). A disk error inside one of them
  (full, over quota, read-only, no permission) names the file it was writing, not the
  hidden temporary.
- Verified caches: a cached folder records every file's size and sha256 in
  ``manifest.json`` (``verified_dir``); ``verify_dir`` checks it on load and raises
  ``DamagedCacheError``; ``cached_dir`` builds a missing folder and rebuilds a damaged
  one, saying why. sha256 runs at about 1.2 GB/s here (crc32: 2.2 GB/s), so verifying
  even the paper profile's slice cache (about 0.7 GB) costs well under a second.
- One run per work_dir: ``run_lock``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from kdcore.errors import STORAGE_ERRORS, DamagedCacheError, RunLockedError

MANIFEST = "manifest.json"
LOCK_FILE = "run.lock"
_CHUNK = 1 << 20  # bytes read at a time when hashing


def _raise_named(err: OSError, target: Path, tmp: Path | None = None) -> NoReturn:
    """Raise ``err``; a disk error (full, read-only...) is raised again naming the path it
    was writing under ``target`` instead of a hidden temporary (``tmp``, or one being
    made beside ``target``)."""
    if err.errno not in STORAGE_ERRORS:
        raise err
    name = target
    if err.filename is not None:
        written = Path(err.filename)
        if tmp is not None and written.is_relative_to(tmp):
            name = target / written.relative_to(tmp)
        elif not written.name.startswith(f".{target.name}-"):
            raise err  # it names another path: already the right one
    raise OSError(err.errno, err.strerror, str(name)) from err


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffixes, so writers that pick a
    format by extension still work); rename it into place on success, delete it on error."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}-", suffix="".join(path.suffixes)
        )
    except OSError as err:
        _raise_named(err, path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _raise_named(err, path, Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _temp_dir_beside(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    except OSError as err:
        _raise_named(err, path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``, renamed to ``path`` when the block succeeds.

    If another process created ``path`` meanwhile, its copy is kept and ours discarded
    (both were built from the same inputs).
    """
    path = Path(path)
    tmp = _temp_dir_beside(path)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    except OSError as err:
        _raise_named(err, path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def replaced_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` that replaces ``path`` when the block
    succeeds (an older ``path`` is moved aside first, then deleted); on error, or when
    interrupted during the swap, ``path`` is left as it was."""
    path = Path(path)
    tmp = _temp_dir_beside(path)
    old = path.parent / f".{path.name}-old-{tmp.name}"
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as err:
        _raise_named(err, path, tmp)
    finally:
        if old.exists() and not path.exists():  # stopped between the two renames
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ---- verified caches ------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Record the size and sha256 of every file under ``folder`` in ``folder/manifest.json``.

    A subfolder with a manifest of its own (a cache inside the cache) is left out: it is
    verified on its own. Returns the manifest's path.
    """
    folder = Path(folder)
    files = {}
    for here, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not (Path(here) / d / MANIFEST).is_file())
        for name in sorted(names):
            path = Path(here) / name
            rel = path.relative_to(folder).as_posix()
            if rel != MANIFEST:
                files[rel] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    manifest = folder / MANIFEST
    write_text_atomic(manifest, json.dumps({"version": 1, "files": files}, indent=1))
    return manifest


def verify_dir(folder: str | Path, checksums: bool = True) -> None:
    """Check every file ``folder/manifest.json`` lists: present, of its size and (with
    ``checksums``) of its sha256. Files the manifest does not list are not checked.

    Raises DamagedCacheError naming the first damaged file and why.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise DamagedCacheError(folder, MANIFEST, "missing: written by an older version?")
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(rel, int(e["bytes"]), str(e["sha256"])) for rel, e in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedCacheError(folder, MANIFEST, "not a valid manifest") from None
    for rel, size, _ in entries:  # sizes first: cheap, and what truncation changes
        path = folder / rel
        if not path.is_file():
            raise DamagedCacheError(folder, rel, "missing")
        actual = path.stat().st_size
        if actual != size:
            raise DamagedCacheError(folder, rel, f"{actual:,} bytes, expected {size:,}")
    if checksums:
        for rel, _, sha in entries:
            if file_digest(folder / rel) != sha:
                raise DamagedCacheError(folder, rel, "its sha256 differs from the manifest's")


@contextmanager
def verified_dir(path: str | Path) -> Iterator[Path]:
    """``atomic_dir`` whose folder gets a manifest of every file the block wrote, before
    it is renamed into place."""
    with atomic_dir(path) as tmp:
        yield tmp
        write_manifest(tmp)


def discard_dir(path: str | Path) -> None:
    """Delete a folder: renamed aside first, so no reader finds it half deleted."""
    path = Path(path)
    aside = path.parent / f".{path.name}-damaged-{os.getpid()}-{time.time_ns()}"
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another process discarded it first
    shutil.rmtree(aside, ignore_errors=True)


def cached_dir(
    path: str | Path,
    build: Callable[[Path], None],
    log: Callable[[str], None] = print,
    checksums: bool = True,
) -> Path:
    """``path`` once it holds a verified cache: built by ``build(tmp)`` into a temporary
    folder (``verified_dir``) when missing; when damaged, logged as 'rebuilding <folder>:
    <file> is damaged (<why>)', discarded and built again. Returns ``path``."""
    path = Path(path)
    if path.exists():
        try:
            verify_dir(path, checksums)
            return path
        except DamagedCacheError as err:
            log(err.rebuild_message())
            discard_dir(path)
    with verified_dir(path) as tmp:
        build(tmp)
    return path


# ---- one run per work_dir -------------------------------------------------------------


@contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/run.lock`` for the block (``fcntl.flock``, not
    waiting); the file records the holder's pid and start time.

    Raises RunLockedError ('another run holds <lock> (pid N, started <time>): wait for it
    to finish, or use another work_dir') when another process holds it. The lock goes
    with the process: a killed run leaves no stale lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"another run holds {path} ({_lock_holder(path)}): wait for it to finish, "
                "or use another work_dir"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, json.dumps({"pid": os.getpid(), "started": started}).encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _lock_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"  # the holder has not written its details yet
