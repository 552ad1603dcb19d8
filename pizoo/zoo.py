"""The on-disk zoo: owns every path, the lock, and atomic writes.

Layout:  <root>/zoo.toml, <root>/<task>/{expert.safetensors, fisher.h5, task.json}.
A task folder is built under a hidden temporary name and renamed into place when complete,
so readers see a task whole or not at all. Changes happen under one file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
import h5py
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from pizoo.basemodel import base_problem
from pizoo.config import TaskManifest, ZooSpec
from pizoo.errors import (
    CorruptFile,
    DataError,
    InvalidName,
    NotAZoo,
    PizooError,
    SchemaError,
    TaskExists,
    TaskNotFound,
    ZooExists,
)
from pizoo.index import INDEX, Index, sketches_of
from pizoo.inputs.image import decode
from pizoo.progress import log

ZOO_FILE = "zoo.toml"
LOCK_FILE = ".pizoo.lock"
EXPERT = "expert.safetensors"
FISHER = "fisher.h5"
MANIFEST = "task.json"
# The split each task was trained and evaluated on, kept inside its folder (hashed like every file),
# so that a copied or moved zoo evaluates, embeds and interpolates without the original files.
TRAIN_SPLIT = "data/train.parquet"
EVAL_SPLIT = "data/eval.parquet"
TASK_FILES = (EXPERT, FISHER)
PARTS = {"expert": EXPERT, "embedding": FISHER, "train": TRAIN_SPLIT, "eval": EVAL_SPLIT}  # a task's files by role
MAX_NAME = 100
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
# Top-level entries of a zoo folder that are not tasks but belong there; no task may take their names.
_KNOWN_TOP = {ZOO_FILE, LOCK_FILE, "README.md", "recipes", "index.h5"}
# The zoo's internal folders (names start with '_') and the record in each that hashes its files.
INTERNAL = {"_hyper": "hyper.json"}
_RESERVED = {n.lower() for n in _KNOWN_TOP}

Writer = Callable[[Path], None]


@dataclass(frozen=True)
class TaskFiles:
    """What a new task folder holds, as writers (each writes its file at the path it is given):
    the expert, the train and eval splits it was made on, and its task embedding. The zoo alone
    knows what each file is called."""
    expert: Writer
    train: Writer | None = None
    eval: Writer | None = None
    embedding: Writer | None = None

    def named(self) -> dict[str, Writer]:
        files = {EXPERT: self.expert, TRAIN_SPLIT: self.train, EVAL_SPLIT: self.eval, FISHER: self.embedding}
        return {k: w for k, w in files.items() if w is not None}


def check_name(name: str) -> str:
    """Refuse anything but a safe identifier: it becomes a folder name. Names of the zoo's own
    entries (zoo.toml, README.md, recipes, ...) and names starting with '_' (kept for the zoo's
    internals, such as _hyper) are reserved."""
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidName(
            f"invalid task name {shown!r}: use 1-{MAX_NAME} letters, digits, '-', '_' or '.', not starting with '.'",
            "pick a name such as 'sst2' or 'news-topic'",
        )
    if name.lower() in _RESERVED or name.startswith("_"):
        raise InvalidName(f"task name {name!r} is reserved for the zoo's own files",
                          "pick a name such as 'sst2' or 'news-topic'")
    return name


def safe_relative(fname: str) -> bool:
    """A file name recorded in a task.json: a plain relative path that stays inside the task folder."""
    parts = fname.split("/")
    return bool(fname) and not fname.startswith("/") and "\\" not in fname and all(
        p not in ("", ".", "..") and not p.startswith(".") for p in parts)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_created(path: Path) -> None:
    """One mode for every file pizoo writes: what open() gives under the user's umask. Some writers
    (safetensors) create through a private temporary file (0600), which would hide experts from the
    other users of a shared zoo."""
    os.chmod(path, 0o666 & ~_umask())


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
        _as_created(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


EXPERT_LIMIT = 1e6


def check_content(path: Path) -> str | None:
    """What is wrong inside a file whose hash matches (it may have been rewritten with its hash):
    an unreadable file, an expert or embedding that is not finite, a kept image that does not
    decode. Reads with numpy (and PIL for images) only."""
    try:
        if path.suffix == ".safetensors":
            tensors = load_file(str(path))
        elif path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                tensors = {f"{g}/{n}": np.asarray(ds[()]) for g in f for n, ds in f[g].items()}
        elif path.suffix == ".parquet":
            return _split_issue(path)
        else:
            return None
    except Exception:  # any reader's failure means the same thing here
        return "unreadable"
    return _tensor_issue(path, tensors)


def _split_issue(path: Path) -> str | None:
    """A kept split whose images do not decode."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "image" in table.column_names:
        try:
            for data in table.column("image").to_pylist():
                decode(data)
        except (DataError, TypeError):
            return "an image does not decode"
    return None


def _tensor_issue(path: Path, tensors: dict) -> str | None:
    """Tensors that are not what pizoo writes: not finite, a negative Fisher, an expert that is not
    float32 or is out of range."""
    for value in tensors.values():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            return "not finite"
        if path.suffix == ".h5" and np.any(value < 0):
            return "negative"
        if path.name == EXPERT:  # a task's expert (the hypernetwork's file holds integer tables too)
            if value.dtype != np.float32:  # pizoo writes experts in float32; another dtype was written by hand
                return f"not float32 ({value.dtype})"
            # a trained expert's parameters are of order 1; past EXPERT_LIMIT its product with the
            # hidden states saturates every softmax or overflows float32 a few layers on
            if value.size and float(np.abs(value).max()) > EXPERT_LIMIT:
                return f"out of range (|x| > {EXPERT_LIMIT:g})"
    return None


def check_pair(expert: Path, fisher: Path) -> str | None:
    """The embedding covers exactly the expert's tensors, shape for shape."""
    with safe_open(str(expert), "numpy") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith("head.")}
    with h5py.File(fisher, "r") as f:
        for group in f:
            got = {n: tuple(ds.shape) for n, ds in f[group].items()}
            if got != shapes:
                return "mismatch"
    return None


@dataclass(frozen=True)
class Problem:
    """One finding of `verify`."""

    task: str
    file: str
    issue: str  # missing | corrupt | foreign | stale | unreadable | not finite | negative | mismatch | outside | symlink

    def as_dict(self) -> dict:
        return {"task": self.task, "file": self.file, "issue": self.issue}


def write_files(folder: Path, files: dict[str, Writer]) -> dict[str, str]:
    """Run each writer into `folder`, flush it to disk; return every file's sha256."""
    shas = {}
    for fname, writer in files.items():
        (folder / fname).parent.mkdir(parents=True, exist_ok=True)
        writer(folder / fname)
        with open(folder / fname, "rb+") as f:
            os.fsync(f.fileno())
        _as_created(folder / fname)
        shas[fname] = sha256_file(folder / fname)
    return shas


def replace_dir(new: Path, final: Path, aside: Path) -> None:
    """Move the finished folder `new` to `final`; an existing `final` is renamed to `aside` first
    and removed after (a crash in between is undone by Zoo._recover for zoo folders)."""
    if final.exists():
        os.rename(final, aside)
        os.rename(new, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(new, final)


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
            if self.root.exists() and not self.root.is_dir():
                raise NotAZoo(f"{self.root} is a file, not a zoo folder", "point --zoo at a folder")
            if not path.is_file():
                raise NotAZoo(f"{self.root} is not a pizoo zoo (no {ZOO_FILE})", f"pizoo --zoo {self.root} init")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise SchemaError(f"{path} is not a text file (not written by pizoo?)",
                                  "restore it, or make a new zoo: pizoo --zoo NEW init") from e
            self._spec = ZooSpec.from_toml(text, where=str(path))
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
    def check_writable(self) -> None:
        """Refuse early, before any training, a zoo this process cannot write to."""
        probe = self.root / f".tmp-writable-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
        except OSError as e:
            raise NotAZoo(f"cannot write to the zoo {self.root} ({e.strerror or e}): nothing was trained",
                          "check the folder's permissions, or pass --zoo a zoo you can write to") from e
        finally:
            probe.unlink(missing_ok=True)

    def task_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def task_names(self) -> list[str]:
        self.spec  # a folder that is not a zoo has no tasks: say so
        # os.scandir reads each entry's type from the directory itself: one stat per task, for its
        # task.json (a zoo of 10,000 tasks is listed in tens of milliseconds)
        with os.scandir(self.root) as entries:
            return sorted(e.name for e in entries
                          if e.is_dir(follow_symlinks=False) and _NAME.match(e.name)
                          and e.name.lower() not in _RESERVED and not e.name.startswith("_")
                          and os.path.isfile(os.path.join(e.path, MANIFEST)))

    def has_task(self, name: str) -> bool:
        path = self.task_dir(name)
        return not path.is_symlink() and (path / MANIFEST).is_file()

    def manifest(self, name: str) -> TaskManifest:
        self.spec
        path = self.task_dir(name) / MANIFEST
        if not path.is_file():
            raise TaskNotFound(f"no task {name!r} in {self.root}", "pizoo list")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SchemaError(f"{path} is not a text file", f"pizoo verify; pizoo rm {name} --yes") from e
        manifest = TaskManifest.from_json(text, where=str(path))
        if manifest.name != name:
            raise SchemaError(f"{path} names task {manifest.name!r}, not {name!r} (a copied or renamed folder?)",
                              f"pizoo rm {name} --yes, or rename the folder back")
        return manifest

    def file(self, name: str, fname: str, *, check: bool = True) -> Path:
        """Path of one of a task's files, checked against the hash in its manifest."""
        manifest = self.manifest(name)
        path = self.task_dir(name) / fname
        if not safe_relative(fname):
            raise CorruptFile(f"task {name!r} names the file {fname!r}, which is outside its folder", "pizoo verify")
        if fname not in manifest.files:
            raise CorruptFile(f"task {name!r} has no {fname}", None)
        fix = f"pizoo embed {name}" if fname == FISHER else f"pizoo rm {name} --yes, then add the task again"
        if not path.is_file():
            raise CorruptFile(f"{path} is missing", fix)
        if check and sha256_file(path) != manifest.files[fname]:
            raise CorruptFile(f"{path} does not match the sha256 in its task.json (corrupt or changed)", fix)
        return path

    # -- a task's files, by what they are ----------------------------------------------------------
    def expert_file(self, name: str, *, check: bool = True) -> Path:
        """The task's expert (safetensors), checked against its hash."""
        return self.file(name, EXPERT, check=check)

    def embedding_file(self, name: str, *, check: bool = True) -> Path:
        """The task's embedding (HDF5: the diagonal Fisher), checked against its hash."""
        return self.file(name, FISHER, check=check)

    def split_file(self, name: str, which: str) -> Path:
        """The kept `train` or `eval` split (parquet), checked against its hash."""
        return self.file(name, PARTS[which])

    @staticmethod
    def has_embedding(manifest: TaskManifest) -> bool:
        return FISHER in manifest.files

    @staticmethod
    def has_splits(manifest: TaskManifest) -> bool:
        return TRAIN_SPLIT in manifest.files

    @staticmethod
    def sha(manifest: TaskManifest, part: str) -> str | None:
        """The recorded sha256 of one part of a task (expert, embedding, train, eval), or None."""
        return manifest.files.get(PARTS[part])

    @staticmethod
    def embedding_entry(manifest: TaskManifest) -> dict[str, str | None]:
        """{embedding file name: its sha256}, as `pizoo embed --json` reports it."""
        return {FISHER: manifest.files.get(FISHER)}

    def unchecked_expert(self, name: str) -> Path | None:
        """Where the task's expert is, without reading it (None if the manifest names none or it is
        missing): for header-only checks that must not fail on a corrupt file."""
        path = self.task_dir(name) / EXPERT
        return path if EXPERT in self.manifest(name).files and path.is_file() else None

    def save_task(self, manifest: TaskManifest, files: TaskFiles) -> TaskManifest:
        """Write a new task (add-task, an import, interpolate, hyper generate): one folder, moved into
        place in one rename under the lock. Returns the manifest as written."""
        return self.write_task(manifest, files.named())

    def save_embedding(self, name: str, embedding: Writer) -> TaskManifest:
        """Swap in a task's (re)computed embedding, its other files carried over unchanged."""
        return self.update_task(name, {FISHER: embedding}, lambda m: m)

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
                shas.update(write_files(tmp, files))
                manifest = manifest.replace(files=dict(sorted(shas.items())))
                atomic_write(tmp / MANIFEST, manifest.to_json())
                _fsync_dir(tmp)
                if not exists and final.exists():
                    # A folder without task.json: not ours to delete silently.
                    raise TaskExists(f"{final} exists but is not a task", f"move or delete {final} first")
                replace_dir(tmp, final, self.root / f".old-{name}-{uuid.uuid4().hex[:8]}")
                _fsync_dir(self.root)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            self._reindex(name, manifest)
        return manifest

    def write_internal(self, dirname: str, files: dict[str, Writer], record_name: str, record: dict) -> None:
        """Replace one of the zoo's internal folders (INTERNAL) as write_task replaces a task: built
        under a temporary name, its record written last with every file's sha256, moved into place
        in one rename under the lock."""
        if INTERNAL.get(dirname) != record_name:
            raise ValueError(f"{dirname}/{record_name} is not an internal folder of the zoo")
        self.spec
        final = self.root / dirname
        with self.lock():
            tmp = self.root / f".tmp-{dirname}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                shas = write_files(tmp, files)
                atomic_write(tmp / record_name, json.dumps({**record, "sha256": shas}, indent=2, sort_keys=True) + "\n")
                _fsync_dir(tmp)
                replace_dir(tmp, final, self.root / f".old-{dirname}-{uuid.uuid4().hex[:8]}")
                _fsync_dir(self.root)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)

    def read_internal(self, dirname: str, record_name: str) -> dict | None:
        """An internal folder's record, its files checked against their hashes (None: no such folder)."""
        path = self.root / dirname / record_name
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            shas = record["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptFile(f"{path} is not a readable record ({e})", "pizoo verify") from e
        for fname, digest in shas.items():
            f = path.parent / fname
            if not safe_relative(fname) or not f.is_file() or sha256_file(f) != digest:
                raise CorruptFile(f"{f} is missing or does not match its recorded sha256", "pizoo verify")
        return record

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
            self._reindex(name, None)

    # -- the embedding index (derived data: rebuilt from the task folders whenever in doubt) ------
    def _reindex(self, name: str, manifest: TaskManifest | None) -> None:
        """Under the lock, after a task changed: its rows of the index follow its embedding."""
        path = self.root / INDEX
        try:
            idx = Index.read(path)
            if idx is None:
                idx = self.build_index()
            elif manifest is not None and FISHER in manifest.files:
                idx = idx.with_task(name, manifest.files[FISHER], sketches_of(self.root / name / FISHER))
            else:
                idx = idx.without(name)
            atomic_write(path, idx.covering(self.task_names()).write)
        except Exception as e:  # the task itself is in place; a stale index is what verify repairs
            log.warning(f"warning: could not update {path} ({type(e).__name__}: {e}); pizoo verify rebuilds it")

    def build_index(self):
        """The index of every task with a readable embedding, from the task folders."""
        rows = []
        for name in self.task_names():
            try:
                manifest = self.manifest(name)
                if FISHER in manifest.files:
                    rows.append((name, manifest.files[FISHER], sketches_of(self.task_dir(name) / FISHER)))
            except PizooError:
                continue  # verify names the broken task itself
        return Index.of(rows)

    def index_is_current(self) -> bool:
        idx = Index.read(self.root / INDEX, keys=[])
        want = {}
        for name in self.task_names():
            try:
                manifest = self.manifest(name)
            except PizooError:
                continue
            if FISHER in manifest.files:
                want[name] = manifest.files[FISHER]
        if idx is None:
            return not want and not (self.root / INDEX).exists()
        return dict(zip(idx.names, idx.sha)) == want and sorted(idx.tasks) == self.task_names()

    def verify(self, quick: bool = False) -> list[Problem]:
        """Re-hash every file and check its content; report missing, corrupt, foreign and
        non-finite files, and a stale index. `quick` checks presence and the index only.

        Runs under the lock, which first clears what a crashed writer left behind; a stale index
        is rebuilt from the task folders (and reported). On a zoo it cannot write (a read-only
        mount) it only reports: crash leftovers as stale, the index as stale."""
        self.spec
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.lock())
                locked = True
            except OSError:  # cannot create or take the lock: a read-only zoo, checked as it is
                locked = False
            problems = self._problems(quick)
            if not quick:  # every eval would fail on a base model that is not the zoo's

                wrong = base_problem(self.spec)
                if wrong:
                    problems.insert(0, Problem("", ZOO_FILE, wrong))
            if not self.index_is_current():
                problems.append(Problem("", INDEX, "stale (rebuilt)" if locked else "stale"))
                if locked:
                    atomic_write(self.root / INDEX, self.build_index().covering(self.task_names()).write)
            return problems

    def _internal_problems(self, entry: Path, quick: bool) -> list[Problem]:
        record_name = INTERNAL[entry.name]
        try:
            shas = json.loads((entry / record_name).read_text())["sha256"]
            assert isinstance(shas, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            return [Problem(entry.name, record_name, "unreadable")]
        problems = []
        for fname, digest in shas.items():
            path = entry / fname
            if not safe_relative(fname):
                problems.append(Problem(entry.name, fname, "outside"))
            elif path.is_symlink() or not path.is_file():
                problems.append(Problem(entry.name, fname, "missing"))
            elif not quick and sha256_file(path) != digest:
                problems.append(Problem(entry.name, fname, "corrupt"))
            elif not quick and check_content(path):
                problems.append(Problem(entry.name, fname, check_content(path)))
        for f in sorted(entry.rglob("*")):
            rel = f.relative_to(entry).as_posix()
            if (f.is_file() or f.is_symlink()) and rel != record_name and rel not in shas:
                problems.append(Problem(entry.name, rel, "foreign"))
        return problems

    def _problems(self, quick: bool = False) -> list[Problem]:
        problems: list[Problem] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name in _KNOWN_TOP:
                continue
            if entry.name.startswith("."):
                if entry.name.startswith((".tmp-", ".old-", ".trash-")):
                    problems.append(Problem("", entry.name, "stale"))
                elif not entry.name.startswith(f"{LOCK_FILE}"):
                    problems.append(Problem("", entry.name, "foreign"))
            elif entry.is_symlink():
                problems.append(Problem("", entry.name, "symlink"))
            elif entry.name in INTERNAL and entry.is_dir():
                problems += self._internal_problems(entry, quick)
            elif not entry.is_dir() or not (entry / MANIFEST).is_file() or entry.name.startswith("_"):
                problems.append(Problem("", entry.name, "foreign"))
            else:
                problems += self._task_problems(entry, quick)
        return problems

    def _task_problems(self, entry: Path, quick: bool) -> list[Problem]:
        """What is wrong in one task folder: its manifest, each listed file (present, hash, content),
        the expert/embedding pair, and files it does not list."""
        problems: list[Problem] = []
        try:
            manifest = self.manifest(entry.name)
        except PizooError:
            return [Problem(entry.name, MANIFEST, "unreadable")]
        for fname, digest in manifest.files.items():
            path = entry / fname
            if not safe_relative(fname):
                problems.append(Problem(entry.name, fname, "outside"))
            elif path.is_symlink() or not path.is_file():
                problems.append(Problem(entry.name, fname, "missing"))
            elif quick:
                continue
            elif sha256_file(path) != digest:
                problems.append(Problem(entry.name, fname, "corrupt"))
            else:  # the hash matches: is the content what pizoo writes?
                issue = check_content(path)
                if issue:
                    problems.append(Problem(entry.name, fname, issue))
        if not quick and EXPERT in manifest.files and FISHER in manifest.files and not any(
                p.task == entry.name for p in problems):
            issue = check_pair(entry / EXPERT, entry / FISHER)
            if issue:
                problems.append(Problem(entry.name, FISHER, issue))
        for f in sorted(entry.rglob("*")):
            rel = f.relative_to(entry).as_posix()
            if (f.is_file() or f.is_symlink()) and rel != MANIFEST and rel not in manifest.files:
                problems.append(Problem(entry.name, rel, "foreign"))
        return problems
