"""Task data through `datasets`: local csv/tsv/json/jsonl/parquet files, or a hub dataset by name.

A task's data becomes a list of (text, text_pair, image, label) examples, a label set, a seeded
stratified held-out evaluation split and, with --shots, N training examples per class. Images are
read once, checked, and kept as their encoded bytes (a task folder never points at image files)."""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pizoo.candidates import gold_box_position, gold_position, parse_boxes, parse_choices, positions
from pizoo.errors import DataError, UsageError
from pizoo.inputs import input_type_for
from pizoo.inputs.image import image_size, read_image
from pizoo.progress import log

PICKLES = (".p", ".pkl", ".pickle")
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text, the second text, the image and the label, and how a data label
    becomes the label text the head reads: an optional verbalizer (the word each data label is
    renamed to) and an optional template around it ('a review that is {label}').

    An image task has `image` set and `text` None (or a text beside the image)."""

    text: str | None = "text"
    text_pair: str | None = None
    label: str = "label"
    verbalizer: tuple[tuple[str, str], ...] = ()
    label_template: str | None = None
    image: str | None = None
    choices: str | None = None  # a column of each example's own candidate answers (pizoo.candidates)
    boxes: str | None = None  # a column of each example's candidate boxes in its image (referring expressions)

    def __post_init__(self):
        if self.text is None and self.image is None:
            raise UsageError("a task needs a --text or an --image column")
        own = "--choices" if self.choices is not None else "--boxes" if self.boxes is not None else None
        if own and (self.verbalizer or self.label_template):
            raise UsageError(f"{own} gives every example its own candidates: --verbalizer and --label-template "
                             "rename a fixed label set, and there is none")
        if self.choices is not None and self.boxes is not None:
            raise UsageError("give --choices (answer texts) or --boxes (regions of the image), not both")
        if self.boxes is not None and (self.image is None or self.text is None):
            raise UsageError("--boxes are regions of each example's image, named by its expression: give --image "
                             "and --text too", "e.g. --image image --text expression --boxes boxes --label gold")
        if self.text_pair is not None and self.text is None:
            raise UsageError("--text-pair needs --text as well")
        if self.label_template is not None:
            if "{label}" not in self.label_template:
                raise UsageError(f"--label-template {self.label_template!r} must contain {{label}}",
                                 "e.g. --label-template 'a review that is {label}'")
            try:  # any other field ({other}, a stray brace) would fail on the first label
                self.label_template.format(label="x")
            except (KeyError, IndexError, ValueError) as e:
                raise UsageError(f"--label-template {self.label_template!r} may name only {{label}} ({e!r}); "
                                 "write a literal brace as {{ or }}", "e.g. --label-template 'a review that is {label}'"
                                 ) from None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Columns":
        """From the `columns` record of a task.json `source`."""
        record = dict(record)
        record["verbalizer"] = tuple((str(k), str(v)) for k, v in (record.get("verbalizer") or {}).items())
        return cls(**record)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "text_pair": self.text_pair, "label": self.label}
        if self.verbalizer:
            out["verbalizer"] = dict(self.verbalizer)
        if self.label_template:
            out["label_template"] = self.label_template
        if self.image:
            out["image"] = self.image
        if self.choices:
            out["choices"] = self.choices
        if self.boxes:
            out["boxes"] = self.boxes
        return out


def parse_verbalizer(spec: str | None) -> tuple[tuple[str, str], ...]:
    """`pos=great,neg=terrible` -> (("pos", "great"), ("neg", "terrible")). A label or word holding
    `,` `=` or `\\` escapes it with a backslash (`a\\,b=both`); `@FILE` reads a JSON object
    {"label": "word", ...} (any characters, no escaping)."""
    if not spec:
        return ()
    if spec.startswith("@"):
        pairs = _verbalizer_file(Path(spec[1:]))
    else:
        pairs = []
        for item in _split_escaped(spec, ","):
            parts = _split_escaped(item, "=")
            label, word = (_unescape(parts[0]).strip(), _unescape("=".join(parts[1:])).strip()) if len(parts) == 2 \
                else ("", "")
            if not label or not word:
                raise UsageError(f"--verbalizer item {item.strip()!r} is not LABEL=WORD",
                                 "e.g. --verbalizer 'pos=great,neg=terrible'; escape a ',' or '=' in a label as "
                                 "'\\,' or '\\=', or give a JSON file: --verbalizer @labels.json")
            pairs.append((label, word))
    labels, words = [p[0] for p in pairs], [p[1] for p in pairs]
    for what, xs in (("label", labels), ("word", words)):
        dup = sorted({x for x in xs if xs.count(x) > 1})
        if dup:
            raise UsageError(f"--verbalizer names the {what} {dup[0]!r} twice: each label needs its own word")
    return tuple(pairs)


def _split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` where no backslash escapes it (escapes are kept, for _unescape)."""
    out, cur, i = [], "", 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i: i + 2]
            i += 2
            continue
        if c == sep:
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return [*out, cur]


def escape_verbalizer(label: str) -> str:
    """A label as --verbalizer reads it back (`,` `=` and backslashes escaped)."""
    return "".join("\\" + c if c in ",=\\" else c for c in label)


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def _verbalizer_file(path: Path) -> list[tuple[str, str]]:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--verbalizer @{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise UsageError(f"--verbalizer @{path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not doc or not all(isinstance(k, str) and isinstance(v, str) and k.strip()
                                                       and v.strip() for k, v in doc.items()):
        raise UsageError(f"--verbalizer @{path} must be a JSON object of label texts: {{\"label\": \"word\", ...}}")
    return [(k.strip(), v.strip()) for k, v in doc.items()]


@dataclass(frozen=True)
class Examples:
    """A task's examples. With `choices`, each example brings its own candidate answers and its
    label is the gold candidate's position ("0", "1", ...): a fixed label set is the special case
    where every example has the same candidates (pizoo.candidates)."""
    texts: list[str] | None
    pairs: list[str] | None
    labels: list[str]
    images: list[bytes] | None = None  # encoded image files (png, jpeg, ...), as read
    choices: list[list[str]] | None = None  # each example's candidate texts
    boxes: list[list[list[float]]] | None = None  # each example's candidate boxes [x, y, w, h] in its image

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def candidates(self) -> list[list] | None:
        """Each example's own candidates (texts or boxes), or None for a fixed label set."""
        return self.choices if self.choices is not None else self.boxes

    @property
    def input_type(self) -> str:
        """The registered input type these examples' columns make (pizoo.inputs.input_type_for)."""
        return input_type_for(k for k, v in (("text", self.texts), ("text_pair", self.pairs), ("image", self.images),
                                             ("boxes", self.boxes)) if v is not None)

    def to_frame(self):
        import pandas as pd

        cols = {"text": self.texts, "text_pair": self.pairs, "image": self.images, "choices": self.choices,
                "boxes": self.boxes, "label": self.labels}
        return pd.DataFrame({k: v for k, v in cols.items() if v is not None})

    @classmethod
    def from_frame(cls, df, where: str) -> "Examples":
        if "label" not in df.columns or not {"text", "image"} & set(df.columns):
            raise DataError(f"{where} lacks the text (or image) or the label column", "pizoo verify")
        col = (lambda c, f: [f(x) for x in df[c]] if c in df.columns else None)
        return cls(col("text", str), col("text_pair", str), [str(x) for x in df["label"]], col("image", bytes),
                   col("choices", lambda xs: [str(x) for x in xs]),
                   col("boxes", lambda bs: [[float(v) for v in b] for b in bs]))

    def subset(self, idx: list[int]) -> "Examples":
        pick = (lambda xs: [xs[i] for i in idx] if xs is not None else None)
        return Examples(pick(self.texts), pick(self.pairs), pick(self.labels), pick(self.images), pick(self.choices),
                        pick(self.boxes))


@dataclass(frozen=True)
class TaskData:
    train: Examples
    eval: Examples
    labels: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def label_ids(self, ex: Examples) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        missing = sorted({lab for lab in ex.labels if lab not in index})
        if missing:
            raise DataError(f"labels {missing[:5]} are not in the task's label set {list(self.labels)}")
        return [index[lab] for lab in ex.labels]


def load_rows(path: str | Path | None = None, *, dataset: str | None = None, config: str | None = None,
              split: str | None = None):
    """One `datasets.Dataset` from a local file or a dataset name (hub id or local dataset folder)."""
    import datasets

    datasets.disable_progress_bars()
    if (path is None) == (dataset is None):
        raise UsageError("give exactly one of --data FILE or --dataset NAME")
    try:
        if path is not None:
            path = Path(path)
            fmt, kwargs = _file_format(path)
            with _quiet_datasets():
                return datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
        with _quiet_datasets():
            return datasets.load_dataset(dataset, config, split=split or "train")
    except DataError:
        raise
    except Exception as e:  # datasets and pyarrow raise many types for unreadable input
        what = path if path is not None else dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {what}: {first[:200]}") from e


def _file_format(path: Path) -> tuple[str, dict]:
    """The `datasets` loader and its options for a data file, after the checks that make a bad file
    one clear line (a folder, a missing or empty file, a pickle, an unknown suffix, ragged rows)."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file", "pass --data a csv, tsv, json, jsonl or "
                        "parquet file")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", "check the --data path")
    if path.suffix.lower() in PICKLES:
        raise DataError(f"{path} is a pickle, and pizoo never unpickles data (loading a pickle runs code)",
                        "convert it where you trust it, e.g. the refer toolkit's refs(*).p to json: python -c "
                        "\"import json, pickle; json.dump(pickle.load(open('refs.p', 'rb')), open('refs.json', "
                        "'w'))\"")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format of {path}: use .csv, .tsv, .json, .jsonl or .parquet")
    kwargs: dict = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    if fmt == "csv":  # read cells as written: "NA", "null", "None", "nan" are labels and texts, not missing
        kwargs["keep_default_na"] = False
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    if fmt == "csv":
        check_csv_rows(path, kwargs.get("delimiter", ","))
    elif fmt == "json" and path.suffix.lower() == ".jsonl":
        check_jsonl_rows(path)
    return fmt, kwargs


@contextmanager
def _quiet_datasets():
    """`datasets` logs its own tracebacks for unreadable files; pizoo reports them in one line."""
    logger = logging.getLogger("datasets")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def check_jsonl_rows(path: Path) -> None:
    """Every line of a jsonl file is one JSON object: name the first that is not (datasets says only
    that an error occurred while generating the dataset)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError as e:
                raise DataError(f"{path} line {n} is not valid JSON ({e.msg})", "fix that line: one JSON object "
                                "per line") from None
            if not ok:
                raise DataError(f"{path} line {n} is not a JSON object", "one JSON object per line")


def check_csv_rows(path: Path, delimiter: str) -> None:
    """Every row has as many fields as the header: a row with more would shift the columns
    (pandas reads the surplus as an index) and be silently misread."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"data file {path} is empty")
        rows = 0
        for row in reader:
            if row and len(row) != len(header):
                raise DataError(f"{path} line {reader.line_num} has {len(row)} fields, the header has {len(header)}",
                                "quote fields that contain the delimiter, or fix that line")
            rows += bool(row)
        if not rows:
            raise DataError(f"{path} has a header ({', '.join(header)}) and no rows", "add the examples below the header")


def read_examples(ds, cols: Columns, where: str, base_dir: Path | None = None) -> Examples:
    """The examples of a dataset; image paths are relative to `base_dir` (the data file's folder)."""
    names = list(ds.column_names)
    for flag, col in (("--text", cols.text), ("--text-pair", cols.text_pair), ("--image", cols.image),
                      ("--choices", cols.choices), ("--boxes", cols.boxes), ("--label", cols.label)):
        if col is not None and col not in names:
            raise DataError(f"column {col!r} is not in {where}; its columns are: {', '.join(names)}",
                            f"pass {flag} COLUMN")
    out: dict[str, list] = {k: [] for k in ("text", "text_pair", "image", "choices", "boxes", "label")}
    dropped = 0
    for i, row in enumerate(ds):
        example = _read_row(row, cols, f"{where} row {i + 1}", base_dir)
        if example is None:
            dropped += 1  # rows without input or label teach nothing
            continue
        for k, v in example.items():
            out[k].append(v)
    labels = _renamed(out["label"], cols, where)
    if not labels:
        raise DataError(f"{where} has no rows with both {'an image' if cols.image and not cols.text else 'text'} "
                        "and label")
    if dropped:
        log.warning(f"warning: {where}: skipped {dropped} of {dropped + len(labels)} rows with an empty input or label")
    kept = (lambda key, column: out[key] if column else None)
    return Examples(kept("text", cols.text), kept("text_pair", cols.text_pair), labels, kept("image", cols.image),
                    kept("choices", cols.choices), kept("boxes", cols.boxes))


def _read_row(row: dict, cols: Columns, where: str, base_dir: Path | None) -> dict[str, Any] | None:
    """One example of a data row, checked (None: the row has no input or no label)."""
    text = row[cols.text] if cols.text else ""
    label = row[cols.label]
    pair = row[cols.text_pair] if cols.text_pair else ""
    image = row[cols.image] if cols.image else b""
    own = cols.choices or cols.boxes  # the label names one of the row's own candidates: it may be a box
    for flag, col, value in (("--text", cols.text, text), ("--text-pair", cols.text_pair, pair),
                             ("--label", cols.label, label)):
        if col and isinstance(value, (dict, list, tuple)) and not (flag == "--label" and own):
            raise DataError(f"{where}: column {col!r} holds a {type(value).__name__}, not a "  # never stored as its repr
                            f"{'label' if flag == '--label' else 'text'}", f"pass {flag} a column of plain values")
    if (text is None or label is None or (isinstance(text, str) and cols.text and not text.strip())
            or (isinstance(label, str) and not label.strip()) or pair is None or image is None):
        return None
    out: dict[str, Any] = {"text": str(text), "text_pair": str(pair)}
    if cols.choices:
        out["choices"] = parse_choices(row[cols.choices], where, cols.choices)
        label = gold_position(label, out["choices"], where, cols.label)
    if cols.image:
        out["image"] = read_image(image, base_dir, where)
    if cols.boxes:
        out["boxes"] = parse_boxes(row[cols.boxes], image_size(out["image"]), where, cols.boxes)
        label = gold_box_position(label, out["boxes"], where, cols.label)
    out["label"] = _label_str(label)
    return out


def _renamed(labels: list[str], cols: Columns, where: str) -> list[str]:
    """The data labels as the head reads them: through the verbalizer, then the label template."""
    if cols.verbalizer:
        words = dict(cols.verbalizer)
        missing = sorted(set(labels) - words.keys())
        if missing:
            raise DataError(f"label {missing[0]!r} of {where} has no word in the verbalizer "
                            f"({', '.join(f'{k}={v}' for k, v in cols.verbalizer)})",
                            f"add {escape_verbalizer(missing[0])}=WORD to --verbalizer (or give a JSON file: "
                            "--verbalizer @labels.json)")
        labels = [words[lab] for lab in labels]
    if cols.label_template:
        labels = [cols.label_template.format(label=lab) for lab in labels]
    return labels


def _label_str(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def candidate_positions(*parts: Examples) -> tuple[str, ...]:
    """The label set of a candidate task: every position its largest example has ("0", "1", ...)."""
    return positions(max(len(c) for ex in parts for c in ex.candidates or [[]]))


def label_set_of(ex: Examples) -> tuple[str, ...]:
    """The label set examples make: their candidates' positions, or their labels in order."""
    return candidate_positions(ex) if ex.candidates is not None else sorted_labels(ex.labels)


def sorted_labels(labels) -> tuple[str, ...]:
    uniq = set(labels)
    try:  # numeric labels in numeric order (0, 1, ..., 10), others alphabetically
        return tuple(sorted(uniq, key=lambda s: (0, float(s), s)))
    except ValueError:
        return tuple(sorted(uniq))


def by_class(ex: Examples) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(ex.labels):
        groups[lab].append(i)
    return groups


def stratified_split(ex: Examples, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded per-class split: `fraction` of each class (at least one) is held out."""
    rng = random.Random(seed)
    train, held = [], []
    for label, idx in sorted(by_class(ex).items()):
        if len(idx) < 2:
            raise DataError(f"class {label!r} has {len(idx)} example: need 2 or more to hold one out",
                            "add examples, or pass --eval-data FILE")
        idx = idx[:]
        rng.shuffle(idx)
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(held)


def draw_shots(ex: Examples, shots: int, seed: int, held_out: float | None = None) -> list[int]:
    """Exactly `shots` examples per class, drawn with the seed (`held_out`: the fraction of the
    data already held out for evaluation, named in the error)."""
    if shots < 1:
        raise UsageError(f"--shots must be at least 1, got {shots}")
    rng = random.Random(seed)
    out = []
    for label, idx in sorted(by_class(ex).items()):
        if len(idx) < shots:
            why = (f" after {held_out:.0%} of each class was held out for evaluation" if held_out else "")
            hint = f"use --shots {len(idx)} or fewer" + (", or give the evaluation data with --eval-data FILE "
                                                        "so that every row can train" if held_out else "")
            raise DataError(f"--shots {shots} is more than class {label!r} has ({len(idx)} training examples"
                            f"{why})", hint)
        out += rng.sample(idx, shots)
    return sorted(out)


def prepare(data: str | Path | None, cols: Columns, *, eval_data: str | Path | None = None,
            dataset: str | None = None, dataset_config: str | None = None, split: str | None = None,
            shots: int | None = None, seed: int = 0, eval_fraction: float = 0.2,
            labels: tuple[str, ...] | None = None) -> TaskData:
    """Read, check and split a task's data; `labels` pins the label set (e.g. an existing task's)."""
    where = str(data) if data is not None else f"dataset {dataset}"
    full = read_examples(load_rows(data, dataset=dataset, config=dataset_config, split=split), cols, where,
                         Path(data).parent if data is not None else None)
    if eval_data is not None:
        train, held = full, read_examples(load_rows(eval_data), cols, str(eval_data), Path(eval_data).parent)
    else:
        tr, ev = stratified_split(full, eval_fraction, seed)
        train, held = full.subset(tr), full.subset(ev)
    label_set = labels or (candidate_positions(full, held) if full.candidates is not None else label_set_of(full))
    if len(label_set) < 2:
        raise DataError(f"{where} has one class only ({label_set[0]!r}): a classifier needs two or more")
    if shots is not None:
        train = train.subset(draw_shots(train, shots, seed, None if eval_data is not None else eval_fraction))
    source: dict[str, Any] = {"columns": cols.record(),
                              "seed": seed, "shots": shots, "n_train": len(train), "n_eval": len(held)}
    if data is not None:
        source["data"] = str(Path(data).resolve())
    else:
        source.update(dataset=dataset, dataset_config=dataset_config, split=split)
    if eval_data is not None:
        source["eval_data"] = str(Path(eval_data).resolve())
    else:
        source["eval_fraction"] = eval_fraction
    return TaskData(train, held, label_set, source)
