"""The on-disk zoo: owns every path, the lock, and atomic writes.

Layout:  <root>/zoo.toml, <root>/<task>/{expert.safetensors, fisher.h5, task.json}.
A task folder is built under a hidden temporary name and renamed into place when complete,
so readers see a task whole or not at all. Changes happen under one file lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock

from pizoo.config import TaskManifest, ZooSpec
from pizoo.errors import CorruptFile, InvalidName, NotAZoo, PizooError, TaskExists, TaskNotFound, ZooExists

ZOO_FILE = "zoo.toml"
LOCK_FILE = ".pizoo.lock"
EXPERT = "expert.safetensors"
FISHER = "fisher.h5"
MANIFEST = "task.json"
TASK_FILES = (EXPERT, FISHER)
MAX_NAME = 100
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
# Top-level entries of a zoo folder that are not tasks but belong there.
_KNOWN_TOP = {ZOO_FILE, LOCK_FILE, "README.md", "recipes"}

Writer = Callable[[Path], None]


def check_name(name: str) -> str:
    """Refuse anything but a safe identifier: it becomes a folder name."""
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidName(
            f"invalid task name {shown!r}: use 1-{MAX_NAME} letters, digits, '-', '_' or '.', not starting with '.'",
            "pick a name such as 'sst2' or 'news-topic'",
        )
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str | Writer) -> None:
    """Write `path` via a temporary sibling and os.replace: the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Problem:
    """One finding of `verify`."""

    task: str
    file: str
    issue: str  # missing | corrupt | foreign | stale | unreadable

    def as_dict(self) -> dict:
        return {"task": self.task, "file": self.file, "issue": self.issue}


class Zoo:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._spec: ZooSpec | None = None

    # -- the zoo itself ------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, spec: ZooSpec) -> "Zoo":
        zoo = cls(root)
        zoo.root.mkdir(parents=True, exist_ok=True)
        with zoo.lock():
            if (zoo.root / ZOO_FILE).exists():
                raise ZooExists(f"{zoo.root} is already a zoo", "use it as is, or pick another --zoo folder")
            atomic_write(zoo.root / ZOO_FILE, spec.to_toml())
        zoo._spec = spec
        return zoo

    @property
    def spec(self) -> ZooSpec:
        if self._spec is None:
            path = self.root / ZOO_FILE
            if not path.is_file():
                raise NotAZoo(f"{self.root} is not a pizoo zoo (no {ZOO_FILE})", f"pizoo --zoo {self.root} init")
            self._spec = ZooSpec.from_toml(path.read_text(), where=str(path))
        return self._spec

    @contextmanager
    def lock(self, timeout: float = 600) -> Iterator[None]:
        """The one lock under which the zoo changes; also repairs what a crash left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / LOCK_FILE), timeout=timeout)
        try:
            lock.acquire()
        except filelock.Timeout as e:
            raise PizooError(f"another pizoo process holds {self.root / LOCK_FILE} for over {timeout:.0f}s",
                             "wait for it to finish") from e
        try:
            self._recover()
            yield
        finally:
            lock.release()

    def _recover(self) -> None:
        """Under the lock: finish or undo what a crashed writer left. Only we write hidden entries."""
        for entry in self.root.iterdir():
            if entry.name.startswith(".old-") and entry.is_dir():
                # A replace swapped the old folder aside and died before the new one was in place.
                name = entry.name[len(".old-"):].rsplit("-", 1)[0]
                target = self.root / name
                if target.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    os.rename(entry, target)
            elif entry.name.startswith((".tmp-", ".trash-")) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif ".tmp-" in entry.name and entry.name.startswith(".") and entry.is_file():
                entry.unlink(missing_ok=True)

    # -- tasks ---------------------------------------------------------------------------
    def task_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def task_names(self) -> list[str]:
        self.spec  # a folder that is not a zoo has no tasks: say so
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.match(p.name) and (p / MANIFEST).is_file())

    def has_task(self, name: str) -> bool:
        return (self.task_dir(name) / MANIFEST).is_file()

    def manifest(self, name: str) -> TaskManifest:
        self.spec
        path = self.task_dir(name) / MANIFEST
        if not path.is_file():
            raise TaskNotFound(f"no task {name!r} in {self.root}", "pizoo list")
        return TaskManifest.from_json(path.read_text(), where=str(path))

    def file(self, name: str, fname: str, *, check: bool = True) -> Path:
        """Path of one of a task's files, checked against the hash in its manifest."""
        manifest = self.manifest(name)
        path = self.task_dir(name) / fname
        if fname not in manifest.files:
            raise CorruptFile(f"task {name!r} has no {fname}", None)
        fix = f"pizoo embed {name}" if fname == FISHER else f"pizoo rm {name} --yes, then add the task again"
        if not path.is_file():
            raise CorruptFile(f"{path} is missing", fix)
        if check and sha256_file(path) != manifest.files[fname]:
            raise CorruptFile(f"{path} does not match the sha256 in its task.json (corrupt or changed)", fix)
        return path

    def write_task(self, manifest: TaskManifest, files: dict[str, Writer], *, replace: bool = False,
                   keep: tuple[str, ...] = ()) -> TaskManifest:
        """Build a task folder under a temporary name and move it into place in one rename.

        `files` maps a file name to a function writing it; `keep` names files of the existing
        task to carry over unchanged (with `replace=True`). Returns the manifest as written.
        """
        name = check_name(manifest.name)
        self.spec
        final = self.root / name
        with self.lock():
            exists = (final / MANIFEST).is_file()
            if exists and not replace:
                raise TaskExists(f"task {name!r} already exists in {self.root}",
                                 f"choose another name, or pizoo rm {name} --yes first")
            if replace and not exists:
                raise TaskNotFound(f"no task {name!r} in {self.root}", "pizoo list")
            tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                shas = {}
                for fname in keep:
                    if (final / fname).is_file():
                        (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(final / fname, tmp / fname)
                        shas[fname] = sha256_file(tmp / fname)
                for fname, writer in files.items():
                    (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
                    writer(tmp / fname)
                    with open(tmp / fname, "rb+") as f:
                        os.fsync(f.fileno())
                    shas[fname] = sha256_file(tmp / fname)
                manifest = manifest.replace(files=dict(sorted(shas.items())))
                atomic_write(tmp / MANIFEST, manifest.to_json())
                _fsync_dir(tmp)
                if exists:
                    old = self.root / f".old-{name}-{uuid.uuid4().hex[:8]}"
                    os.rename(final, old)
                    os.rename(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                elif final.exists():
                    # A folder without task.json: not ours to delete silently.
                    raise TaskExists(f"{final} exists but is not a task", f"move or delete {final} first")
                else:
                    os.rename(tmp, final)
                _fsync_dir(self.root)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return manifest

    def update_task(self, name: str, files: dict[str, Writer], change: Callable[[TaskManifest], TaskManifest]
                    ) -> TaskManifest:
        """Rewrite some files of a task (and its manifest) as one atomic swap."""
        new = change(self.manifest(name))
        keep = tuple(f for f in new.files if f not in files)
        return self.write_task(new, files, replace=True, keep=keep)

    def remove_task(self, name: str) -> None:
        self.spec
        with self.lock():
            path = self.task_dir(name)
            if not (path / MANIFEST).is_file():
                raise TaskNotFound(f"no task {name!r} in {self.root}", "pizoo list")
            trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(path, trash)
            _fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def verify(self) -> list[Problem]:
        """Re-hash every file; report missing, corrupt and foreign files.

        Runs under the lock, which first clears what a crashed writer left behind."""
        self.spec
        with self.lock():
            return self._problems()

    def _problems(self) -> list[Problem]:
        problems: list[Problem] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name in _KNOWN_TOP:
                continue
            if entry.name.startswith("."):
                if entry.name.startswith((".tmp-", ".old-", ".trash-")):
                    problems.append(Problem("", entry.name, "stale"))
                continue
            if not entry.is_dir() or not (entry / MANIFEST).is_file():
                problems.append(Problem("", entry.name, "foreign"))
                continue
            try:
                manifest = self.manifest(entry.name)
            except PizooError:
                problems.append(Problem(entry.name, MANIFEST, "unreadable"))
                continue
            for fname, digest in manifest.files.items():
                path = entry / fname
                if not path.is_file():
                    problems.append(Problem(entry.name, fname, "missing"))
                elif sha256_file(path) != digest:
                    problems.append(Problem(entry.name, fname, "corrupt"))
            for f in sorted(entry.rglob("*")):
                rel = f.relative_to(entry).as_posix()
                if f.is_file() and rel != MANIFEST and rel not in manifest.files:
                    problems.append(Problem(entry.name, rel, "foreign"))
        return problems
