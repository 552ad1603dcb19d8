"""The input-type contract, over every registered input type (and a dummy one registered here:
a new input type is one module and one `register` line, with no edit elsewhere)."""

import random

import helpers
import numpy as np
import pytest

from pizoo.data import Examples
from pizoo.inputs import INPUTS, input_type_for, register
from pizoo.inputs.base import InputType, tokenizer_of
from pizoo.models import ExpertModel

COLUMNS = {"text", "text_pair", "image", "boxes"}


def examples(reads, n: int = 4) -> Examples:
    rng = np.random.default_rng(0)
    texts = [" ".join(random.Random(i).sample(helpers.WORDS, 4)) for i in range(n)]
    return Examples(texts if "text" in reads else None, texts[::-1] if "text_pair" in reads else None,
                    ["neg", "pos"] * (n // 2),
                    [helpers.image_bytes("lr", i % 2, rng) for i in range(n)] if "image" in reads else None,
                    boxes=[[[0.0, 0.0, 8.0, 16.0], [8.0, 0.0, 8.0, 16.0]]] * n if "boxes" in reads else None)


@pytest.fixture(scope="module")
def models(tmp_path_factory, bert_dir):
    dual = helpers.tiny_dual(tmp_path_factory.mktemp("tiny-dual-inputs"))
    out = {}
    for name, base in (("text", bert_dir), ("image", dual)):
        zoo = helpers.new_zoo(tmp_path_factory.mktemp(f"inputs-{name}") / "zoo", base, "lora", "match")
        out[name] = ExpertModel(zoo.spec, ("neg", "pos"), head_seed=0)
    return out


def test_every_input_type_is_known_by_its_columns_and_reads_its_examples(models):
    assert INPUTS, "no input type registered"
    seen = set()
    for name, kind in INPUTS.items():
        assert kind.name == name and kind.reads and kind.reads <= COLUMNS, name
        assert kind.reads not in seen, f"{name}: two input types read the same columns"
        seen.add(kind.reads)
        assert kind.modality in ("text", "image") and isinstance(kind.template_key, str)
        assert input_type_for(kind.reads) == name
        ex = examples(kind.reads)
        assert ex.input_type == name
        em = models[kind.modality]
        feats = kind.features(em, ex)
        assert len(feats) == len(ex) and all(isinstance(f, dict) and f for f in feats), name
        rows = em.encode(ex, [0, 1] * (len(ex) // 2))
        assert em.class_scores(rows).shape == (len(ex), 2), name


def test_a_new_input_type_is_one_class_and_one_register_line(models):
    """A dummy type: the text read twice over, joined (as a module would declare it)."""

    @register
    class Doubled(InputType):
        name = "doubled-test"
        template_key = "template"
        reads = frozenset({"text_pair"})  # columns no other type reads alone

        def columns(self, ex):
            return (ex.pairs,)

        def features(self, em, ex):
            enc = tokenizer_of(em)([f"{p} {p}" for p in ex.pairs], truncation=True, max_length=em.max_length)
            return [{k: enc[k][i] for k in enc} for i in range(len(ex))]

        def prompt(self, template, text):
            return template.format(text=f"{text} {text}")

    try:
        assert input_type_for({"text_pair"}) == "doubled-test"
        ex = Examples(None, ["w1 w2", "w3 w4"], ["neg", "pos"])
        assert ex.input_type == "doubled-test"
        em = models["text"]
        rows = em.encode(ex, [0, 1])  # the heads read it through the registry, no edit elsewhere
        assert em.class_scores(rows).shape == (2, 2)
        test_every_input_type_is_known_by_its_columns_and_reads_its_examples(models)
    finally:
        del INPUTS["doubled-test"]
