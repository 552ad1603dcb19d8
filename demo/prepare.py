"""Turn the recipes in zoo/recipes/*.toml into task files (text,label csv) from packaged real data.

Each recipe names a pip package that carries the data, the file (or folder of .txt files) inside
it, the text and label columns, a mapping from source labels to task labels, and how many rows to
draw per label with which seed. Packages are located without importing them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import tomllib

RECIPES = Path(__file__).resolve().parent.parent / "zoo" / "recipes"


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


if __name__ == "__main__":
    main(*sys.argv[1:])
