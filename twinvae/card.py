"""The model card (``README.md``) of an exported model: what it is, its test figures (the run's
``results.json``), the ``train.py`` command that trains it again (rebuilt from ``config.json`` and
checked by parsing it back) and how to load it. YAML front matter, as the Hugging Face Hub reads it."""

from __future__ import annotations

import json
import shlex

from vaecore.settings.config import RunConfig
from vaecore.task import tasks

# train.py flags whose config field has another name (``vaecore.runner.options.resumed_config``'s table)
RENAMED = {"model": "kind", "loss": "objective", "mmd_kernel": "kernel", "mmd_bandwidth": "bandwidth",
           "mmd_estimator": "estimator", "adam_eps": "eps", "pretrain_ae_epochs": "pretrain_epochs"}
# where a run was written or run, not what it computes
NOT_RECORDED = {"workdir", "resume", "preset", "device", "sample", "interpolate", "help"}


def _flat(cfg: dict) -> dict:
    """Every field of a config dict by its own name (text sections last: their latent_dim wins)."""
    sections = ("model", "loss", "train", "text", "text_train")
    return {k: v for s in (cfg, *(cfg.get(name) or {} for name in sections)) for k, v in s.items()}


def _value(cfg: dict, dest: str):
    flat = _flat(cfg)
    if dest == "no_latent":
        return None if cfg.get("text") is None else not flat.get("use_latent", True)
    value = flat.get(RENAMED.get(dest, dest))
    return list(value) if isinstance(value, tuple) else value  # config.json holds lists


def _flag(action, value) -> list[str]:
    opt = action.option_strings[0]
    if isinstance(value, bool):
        if action.const is True:  # store_true
            return [opt] if value else []
        return [opt if value else f"--no-{opt.removeprefix('--')}"]  # --x / --no-x
    if isinstance(value, list | tuple):
        return [opt, ",".join(str(v) for v in value)]
    return [opt, str(value)]


def _comparable(cfg: dict) -> dict:
    """A config dict without what a command does not set (the vocabulary size comes from the corpus)."""
    d = json.loads(json.dumps(cfg))
    d["train"].pop("device", None)
    spec = tasks.task(d["task"])
    if spec.has_vocab and d.get(spec.model_section):
        d[spec.model_section].pop("vocab_size", None)
    return d


def training_command(cfg: dict) -> tuple[str, list[str]]:
    """The ``python train.py ...`` command with the flags whose value differs from the default of the
    run's task, and the config fields it does not reproduce (empty when parsing it back gives the
    run's config)."""
    from vaecore.runner import options
    from vaecore.settings.cli import build_parser

    parser = build_parser()
    base = ["--backend", cfg["backend"], "--task", cfg["task"]]
    default = options.config_from_args(parser.parse_args(base)).to_dict()
    argv = list(base)
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_RECORDED | {"backend", "task"}:
            continue
        value = _value(cfg, action.dest)
        if value is not None and value != _value(default, action.dest):
            argv += _flag(action, value)
    try:
        again = _comparable(options.config_from_args(parser.parse_args(argv)).to_dict())
        want = _comparable(RunConfig.from_dict(cfg).to_dict())
        differs = sorted(f"{section}.{k}" for section in want if isinstance(want[section], dict)
                         for k in want[section] if (again.get(section) or {}).get(k) != want[section][k])
        differs += sorted(k for k in want if not isinstance(want[k], dict) and again.get(k) != want[k])
    except (SystemExit, ValueError) as e:
        differs = [f"(the flags do not parse back: {e})"]
    return "python train.py " + " ".join(shlex.quote(a) for a in argv), differs


def _figures(results: dict | None, shown_keys: tuple[str, ...]) -> list[str]:
    if not results:
        return ["No test figures were recorded (the run had no `results.json`)."]
    lines = []
    for title, figures in (("end of training", results), ("evaluate.py", results.get("eval_test"))):
        if not figures:
            continue
        shown = [(k, figures[k]) for k in shown_keys if isinstance(figures.get(k), int | float)]
        if not shown:
            continue
        extra = f", K = {figures['k']}, {figures.get('examples', '?')} examples" if "k" in figures else ""
        lines += [f"Test split, {title} ({figures.get('units', 'nats')}{extra}):", "",
                  "| " + " | ".join(k for k, _ in shown) + " |", "|" + "---|" * len(shown),
                  "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for _, v in shown) + " |", ""]
    return lines or ["`results.json` holds no test figures."]


def model_card(cfg: dict, results: dict | None, step: int | None) -> str:
    """README.md of an exported model."""
    task = cfg["task"]
    spec = tasks.task(task)
    what, article = spec.title, spec.article
    objective = (cfg.get("loss") or {}).get("objective", "elbo")
    command, differs = training_command(cfg)
    note = ("" if not differs else
            f"\n(rebuilt from config.json; it does not reproduce: {', '.join(differs)})\n")
    data = cfg.get("data") or spec.default_data
    lines = [
        "---", "library_name: twinvae", "tags:", "- vae", f"- {task}", f"- {cfg['backend']}", "- safetensors",
        "---", "", f"# twinvae {what}", "",
        f"{article} {what} trained with the {cfg['backend']} backend of twinvae ({objective} objective"
        + (f", weights of step {step}" if step is not None else "") + f"; data: {data}).",
        ("`model.safetensors` holds the canonical, framework-neutral parameters (torch's names and layouts), "
         "so the model loads in JAX or PyTorch."), "", "## Test figures", "", *_figures(results, spec.shown),
        "## How it was trained", "", "```", command, "```", note,
        "## Use", "", "```python", "import twinvae", "",
        'model = twinvae.load("path/to/this/folder", backend="torch")  # or "jax", or "hf://owner/name"',
        "mean, logvar = model.encode(x)", "samples = model.sample(8, seed=0)", "```", ""]
    return "\n".join(lines)
