"""The check `pizoo verify` makes that needs the base model: every stored expert has the tensors of
the zoo's kind (the zoo's own checks, pizoo.zoo, need no model)."""

from __future__ import annotations

from safetensors import safe_open

from pizoo.errors import PizooError
from pizoo.models import HEAD_PREFIX, ExpertModel
from pizoo.progress import log
from pizoo.zoo import Problem, Zoo


def expert_tensor_problems(zoo: Zoo) -> list:
    """Every stored expert has exactly the tensors (names and shapes) of the zoo's kind on its base
    model, read from the safetensors headers. Needs the base model; without it, nothing is checked
    (and the log says so)."""
    try:
        em = ExpertModel(zoo.spec, ())
    except PizooError as e:
        log.warning(f"note: expert tensor names not checked: {e.message}")
        return []
    want = {n: tuple(p.shape) for n, p in em.expert.items()}
    head_names = set(em.head)  # a per-task head's tensors: their shapes follow each task's labels
    problems = []
    for name in zoo.task_names():
        try:
            path = zoo.unchecked_expert(name)  # reads the manifest
        except PizooError:
            continue  # reported by the zoo's own checks
        if path is None:
            continue
        try:
            with safe_open(str(path), "numpy") as f:
                got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception:  # unreadable: reported by the content check
            continue
        expert = {k: v for k, v in got.items() if not k.startswith(HEAD_PREFIX)}
        if expert != want or set(got) - set(expert) != head_names:
            problems.append(Problem(name, path.name, "wrong tensors"))
    return problems
