"""Shared set-up for the benchmarks: models built in-process from a config, saved to a temp dir."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

transformers.logging.set_verbosity_error()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import helpers  # noqa: E402  (tiny vocab and synthetic tasks)


def bert_like(path: Path, hidden: int = 384, layers: int = 6, heads: int = 12) -> Path:
    """A MiniLM-shaped BERT (the packaged default's width and depth), random weights."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(helpers.VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=256)
    BertModel(cfg).save_pretrained(path)
    BertTokenizer(vocab={w: i for i, w in enumerate(helpers.VOCAB)}).save_pretrained(path)
    return path


def llama_like(path: Path, hidden: int = 576, layers: int = 6, heads: int = 9) -> Path:
    """A SmolLM2-135M-wide Llama (hidden 576, 9 heads, 3 KV heads), fewer layers to fit a CPU run."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(helpers.VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=3, intermediate_size=1536,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(path)
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(helpers.VOCAB)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[CLS]",
                            eos_token="[SEP]").save_pretrained(path)
    return path


def texts(n: int, seed: int = 0, lo: int = 24, hi: int = 64) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(helpers.WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pizoo-bench-"))


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` wall times (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def put_block(tag: str, title: str, script: str, table: str) -> None:
    """Put `table`, with the command that made it (this invocation's, less --report-only), into
    BENCHMARKS.md between the <!-- tag:start/end --> markers; a new section `title` if none."""
    import re

    cmd = f"python benchmarks/{script} " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    block = f"<!-- {tag}:start -->\n```\n{cmd.strip()}\n```\n\n{table}\n<!-- {tag}:end -->"
    bench = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    md = bench.read_text()
    if f"<!-- {tag}:start -->" in md:
        md = re.sub(rf"<!-- {re.escape(tag)}:start -->.*<!-- {re.escape(tag)}:end -->", lambda _: block, md,
                    flags=re.DOTALL)
    else:
        md += f"\n## {title}\n\n" + block + "\n"
    bench.write_text(md)


def load_records(path: Path, key: tuple[str, ...], settings: dict | None = None) -> dict[tuple, dict]:
    """The finished runs of a JSON-lines record file, by the values of `key`; with `settings`, only the
    runs made with exactly those settings (a rerun measures what they lack)."""
    import json

    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if settings is None or rec["settings"] == settings:
                done[tuple(rec[k] for k in key)] = rec
    return done


def append_record(path: Path, rec: dict) -> None:
    """One finished run, appended as it finishes (a crash loses only the run in progress)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
