"""Tiny models and synthetic tasks built in-process: no downloads, a few seconds at most."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(60)]
EXTRA = ["answer", ":", "yes", "no", "pos", "neg", "red", "blue", "green"]
VOCAB = SPECIALS + WORDS + EXTRA
# Two labelling rules over disjoint keyword sets: tasks built on different rules are unrelated.
RULES = {
    "a": (WORDS[0:8], WORDS[8:16]),
    "b": (WORDS[16:24], WORDS[24:32]),
}


# Weights drawn at std 0.2 (not 0.02): at 0.02 a random 2-layer model maps every input to nearly
# the same [CLS] vector, and only LoRA can learn anything; at 0.2 every expert kind can.
def tiny_bert(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.2)
    BertModel(cfg).save_pretrained(path)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    assert tok.tokenize("w3 w17") == ["w3", "w17"], "the tiny tokenizer lost its vocabulary"
    tok.save_pretrained(path)
    return path


def tiny_llama(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
                      initializer_range=0.2)
    model = LlamaForCausalLM(cfg)
    # At init std 0.02 the 32-wide random LM head caps every logit near 0.6, so no expert could
    # make a label token likely; a unit-scale head gives the tiny model a usable output layer.
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    model.save_pretrained(path)
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                  bos_token="[CLS]", eos_token="[SEP]")
    assert tok("w3 w17", add_special_tokens=False)["input_ids"] == [VOCAB.index("w3"), VOCAB.index("w17")]
    tok.save_pretrained(path)
    return path


T5_VOCAB = ["<pad>", "</s>", "<unk>"] + WORDS + EXTRA


def tiny_t5(path: Path) -> Path:
    """An encoder-decoder (T5) from a config, with a word-level tokenizer that appends </s> as T5's does."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(T5_VOCAB), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=2, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                   initializer_factor=1.0, tie_word_embeddings=False)
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(path)
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(T5_VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                           special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    assert tok("w3 w17")["input_ids"] == [T5_VOCAB.index("w3"), T5_VOCAB.index("w17"), 1]
    tok.save_pretrained(path)
    return path


def make_rows(rule: str, n: int, seed: int, labels=("pos", "neg"), length: int = 8) -> list[dict]:
    """Bag-of-words task: label 0 if the text has more of the rule's first keyword set, else 1."""
    first, second = RULES[rule]
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        words = [rng.choice(WORDS) for _ in range(length)]
        score = sum(w in first for w in words) - sum(w in second for w in words)
        if score == 0:
            continue
        label = labels[0] if score > 0 else labels[1]
        if sum(r["label"] == label for r in rows) >= (n + 1) // 2:
            continue  # keep the classes balanced
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        raise ValueError(path)
    return path


def peft_lora_adapter(base: Path, out: Path, *, r: int = 8, num_labels: int = 2, seed: int = 1,
                      task_type: str = "SEQ_CLS") -> Path:
    """A PEFT LoRA adapter made the way a user would, with non-zero B so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    peft_model = get_peft_model(model, LoraConfig(task_type=task_type, r=r))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(out)
    return out


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: to assert that a failed command changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".pizoo.lock"}


CLASS_LABELS = ("neg", "pos")
LM_LABELS = ("no", "yes")
# Every registered head on the tiny backbone it reads: encoders for match and classification, a
# decoder for causal-lm, an encoder-decoder for seq2seq.
HEAD_BASE = {"match": "bert", "classification": "bert", "causal-lm": "llama", "seq2seq": "t5"}


def labels_for(head: str) -> tuple[str, str]:
    return CLASS_LABELS if HEAD_BASE[head] == "bert" else LM_LABELS


def ex(texts, pairs=None):
    """Examples to encode (labels go to encode separately)."""
    from pizoo.data import Examples

    return Examples(list(texts), list(pairs) if pairs is not None else None, ["?"] * len(texts))


def task_files(tmp: Path, rule: str, head: str, n: int = 300, seed: int = 0, n_eval: int = 100,
               name: str | None = None) -> tuple[Path, Path]:
    """A train file and a fixed eval file for a synthetic task."""
    name = name or f"{rule}{seed}"
    labels = labels_for(head)
    train = write_rows(make_rows(rule, n, seed, labels=labels), tmp / f"{name}-{head}.csv")
    held = write_rows(make_rows(rule, n_eval, seed + 1000, labels=labels), tmp / f"{name}-{head}-eval.csv")
    return train, held


def new_zoo(root: Path, base: Path, kind: str = "lora", head: str | None = "classification", **options):
    from pizoo.tasks import init_zoo

    return init_zoo(root, base_model=str(base), kind=kind, head=head, options=options)


def train(zoo, name: str, train_file: Path, eval_file: Path | None = None, *, epochs: int = 20,
          seed: int = 0, shots: int | None = None, embed: bool = True, lr: float | None = None, columns=None):
    """add-task's library call, quietly."""
    import contextlib
    import io

    from pizoo.data import Columns
    from pizoo.experts import get_kind
    from pizoo.tasks import DataArgs, train_task
    from pizoo.train import TrainConfig

    cfg = TrainConfig(epochs=epochs, seed=seed, lr=lr or get_kind(zoo.spec.kind).default_lr, device="cpu")
    args = DataArgs(data=str(train_file), eval_data=str(eval_file) if eval_file else None, columns=columns or Columns(),
                    shots=shots, seed=seed)
    with contextlib.redirect_stderr(io.StringIO()):
        return train_task(zoo, name, args, cfg, embed=embed)


def primary_output(model, inputs: dict, head: str):
    """What a backbone returns that its head reads: logits, or the hidden states for `match`.
    An encoder-decoder gets the first decoder positions (its inputs shifted by hand)."""
    if head == "seq2seq":
        inputs = {**inputs, "decoder_input_ids": inputs["input_ids"][:, :4]}
    out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def auto_model(head_name: str, path, **kwargs):
    """The plain transformers model a head loads (what a user without pizoo would load)."""
    import transformers

    from pizoo.heads import get_head

    return getattr(transformers, get_head(head_name).auto_class).from_pretrained(path, **kwargs)


def ctrl_c_while_training(zoo_root: Path, *args: str) -> tuple[int, str]:
    """Run `pizoo --zoo ROOT ARGS...`, press Ctrl-C once its training loop has started; return the
    exit code and stderr."""
    import signal
    import subprocess
    import sys
    import time

    # Ctrl-C's default action, as in a terminal: a test run started in the background (`make test &`)
    # inherits SIGINT ignored from its shell, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "pizoo", "--zoo", str(zoo_root), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in proc.stderr:  # wait until the training loop announces itself
            lines.append(line)
            if "steps over" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, "".join(lines) + err
    finally:
        if proc.poll() is None:
            proc.kill()


# -- image side: tiny dual encoders and synthetic image tasks --------------------------------------
IMAGE_SIZE = 16


def _image_processor(cls_name: str):
    import transformers

    cls = getattr(transformers, cls_name + "Pil", None) or getattr(transformers, cls_name)  # no torchvision here
    return cls(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_resize=True,
                                           do_center_crop=False, do_normalize=True,
                                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def tiny_clip(path: Path) -> Path:
    """A CLIP (text and vision towers, projections) from a config, with the word-level tokenizer of
    tiny_bert ([SEP] ends every text: CLIP pools the text at its end token)."""
    import torch
    from transformers import BertTokenizer, CLIPConfig, CLIPModel

    torch.manual_seed(0)
    sep = VOCAB.index("[SEP]")
    cfg = CLIPConfig(text_config=dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=64, eos_token_id=sep,
                                      bos_token_id=VOCAB.index("[CLS]"), pad_token_id=0, initializer_range=0.2),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=IMAGE_SIZE, patch_size=4, initializer_range=0.2),
                     projection_dim=32)
    CLIPModel(cfg).save_pretrained(path)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(path)
    _image_processor("CLIPImageProcessor").save_pretrained(path)
    return path


def tiny_dual(path: Path) -> Path:
    """The shape of pizoo's packaged multimodal default: a VisionTextDualEncoderModel built from a
    DINOv2 image tower and a BERT text tower (mean pooling, as a sentence-transformers tower)."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        Dinov2Config,
        Dinov2Model,
        VisionTextDualEncoderModel,
    )

    torch.manual_seed(0)
    vision = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      image_size=IMAGE_SIZE, patch_size=4, initializer_range=0.2))
    text = BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0, initializer_range=0.2))
    model = VisionTextDualEncoderModel(vision_model=vision, text_model=text)
    model.config.projection_dim = 32
    model.visual_projection = torch.nn.Linear(32, 32, bias=False)
    model.text_projection = torch.nn.Linear(32, 32, bias=False)
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(32))
        torch.nn.init.orthogonal_(model.visual_projection.weight)
    model.save_pretrained(path)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(path)
    _image_processor("BitImageProcessor").save_pretrained(path)
    return path


def tiny_vit(path: Path) -> Path:
    """An image encoder alone (DINOv2), no text side: image-only zoos with per-task heads."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=IMAGE_SIZE, patch_size=4, initializer_range=0.2)).save_pretrained(path)
    _image_processor("BitImageProcessor").save_pretrained(path)
    return path


# Image rules: which half of a noisy image is brighter (left/right, or top/bottom).
IMAGE_RULES = {"lr": 1, "tb": 0}


def image_bytes(rule: str, label_index: int, rng) -> bytes:
    import io

    from PIL import Image

    px = rng.uniform(0, 0.5, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    half = IMAGE_SIZE // 2
    axis = IMAGE_RULES[rule]
    sl = [slice(None), slice(None)]
    sl[axis] = slice(0, half) if label_index == 0 else slice(half, None)
    px[tuple(sl)] += 0.5
    buf = io.BytesIO()
    Image.fromarray((px * 255).clip(0, 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def image_columns():
    from pizoo.data import Columns

    return Columns(text=None, image="image")


def image_task(folder: Path, rule: str, n: int, seed: int, labels=CLASS_LABELS, name: str | None = None) -> Path:
    """A csv of image paths (relative to it) and labels, the PNG files beside it."""
    import numpy as np

    name = name or f"{rule}{seed}"
    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        y = i % 2
        (folder / name / f"{i}.png").write_bytes(image_bytes(rule, y, rng))
        rows.append({"image": f"{name}/{i}.png", "label": labels[y]})
    return write_rows(rows, folder / f"{name}.csv")


def caption_task(folder: Path, n: int, seed: int, name: str = "fit") -> Path:
    """An image-text task: does the caption ("red": the left half is bright, "blue": the right
    half) fit the image? Labels yes/no."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        side, says = int(rng.integers(2)), int(rng.integers(2))
        (folder / name / f"{i}.png").write_bytes(image_bytes("lr", side, rng))
        rows.append({"image": f"{name}/{i}.png", "caption": ["red", "blue"][says],
                     "label": "yes" if says == side else "no"})
    return write_rows(rows, folder / f"{name}.csv")
