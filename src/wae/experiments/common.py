"""Helpers shared by the reproductions."""
from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from ..config import list_presets
from ..data import load_dataset
from ..errors import ConfigError, WAEError
from ..files import atomic_write_text
from ..presets import resolve_config
from ..reports import metrics_table, write_html_report
from ..serialization import load_model
from ..training.run import load_data_for, train

SHARED_MNIST_TEST = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist-test"


def default_mnist(quick: bool) -> tuple[str, str | None, str | None]:
    """(train data, eval data, eval dir): full MNIST if present, else mnist-5k; the official test set when found."""

    train = "mnist-5k"
    if not quick:
        try:
            load_dataset("mnist", "train", download=False)
            train = "mnist"
        except (WAEError, TypeError):
            train = "mnist-5k"
    for cand in (Path("../shared/data/mnist-test"), SHARED_MNIST_TEST):
        if (cand / "t10k-images-idx3-ubyte.gz").exists() or (cand / "t10k-images-idx3-ubyte").exists():
            return train, "mnist:test", str(cand.resolve())
    return train, None, None


def split_sets(sets) -> tuple[dict[str, str], list[str]]:
    """``exp.KEY=VALUE`` entries (returned as a dict) apart from the config overrides (returned as a list)."""

    exp: dict[str, str] = {}
    rest: list[str] = []
    for s in sets or []:
        if isinstance(s, str) and s.strip().startswith("exp."):
            key, eq, val = s.strip()[4:].partition("=")
            if not eq or not key:
                raise ConfigError(f"experiment option {s!r} must look like exp.KEY=VALUE")
            exp[key.strip()] = val.strip()
        else:
            rest.append(s)
    return exp, rest


def no_leftovers(exp: dict, known: str) -> None:

    if exp:
        raise ConfigError(f"unknown experiment option(s) {', '.join('exp.' + k for k in sorted(exp))}; known: {known}")


def load_trained(run_dir: str, model_names: tuple[str, ...]):
    """(model, metrics dict) of a finished run of one of ``model_names``, or a clear error."""

    model = load_model(run_dir)
    if model.registry_name not in model_names:
        raise ConfigError(f"{run_dir} holds a {model.registry_name!r} model; this reproduction needs "
                          f"{' or '.join(model_names)}")
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise WAEError(f"{run_dir}/metrics.json is missing or corrupt ({type(e).__name__})") from None
    return model, metrics


def base_config(model: str, preset: str, sets: list[str]):
    return resolve_config(model, preset if preset in list_presets() else None, None, None, sets)


_QUIET: ContextVar[bool] = ContextVar("wae_experiment_quiet", default=True)


@contextmanager
def progress(show: bool):
    """Within it, an experiment's training runs print their progress as ``wae train`` does (``show``) or nothing."""
    token = _QUIET.set(not show)
    try:
        yield
    finally:
        _QUIET.reset(token)


def train_run(cfg, out: Path, callbacks=None, init_state=None):
    """Train one of an experiment's runs into ``out``: (metrics, model, the judged split's data); its progress shows
    inside ``progress(True)`` (``wae reproduce`` without ``--quiet``)."""
    quiet = _QUIET.get()
    if not quiet:
        print(f"training {cfg.model} → {out}", flush=True)
    metrics, model = train(cfg, out, quiet=quiet, callbacks=callbacks, init_state=init_state, return_model=True)
    _, eval_ds = load_data_for(cfg).held_out
    return metrics, model, eval_ds


def embed_2d(z: np.ndarray) -> tuple[np.ndarray, str]:
    """UMAP when umap-learn is installed, else PCA."""
    if z.shape[1] <= 2:
        return z[:, :2], "raw"
    try:
        import umap  # type: ignore

        return umap.UMAP(n_components=2, random_state=0).fit_transform(z), "umap"
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(n_components=2).fit_transform(z), "pca"


def finish_report(out: Path, title: str, cfg, metrics: dict, paper: dict, notes: list[str], quick: bool) -> Path:


    quick_text = ("**Quick run** (`--quick`): a few minutes on a CPU with small networks; numbers are not comparable "
                  "to the paper's. Run without `--quick` for the paper's budget.")
    lines = [f"# {title}", ""]
    if quick:
        lines += [quick_text, ""]
    lines += notes and [*(f"- {n}" for n in notes), ""] or []
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    write_html_report(out, title, flat, paper, cfg.to_yaml(), ([quick_text.replace("**", "")] if quick else [])
                      + list(notes), sorted((out / "figures").glob("*.png")))
    lines += ["## Metrics (ours beside the paper's)", "", metrics_table(flat, paper), "", "## Figures", ""]
    for f in sorted((out / "figures").glob("*.png")):
        lines += [f"### {f.stem}", "", f"![{f.stem}](figures/{f.name})", ""]
    lines += ["## Config", "", "```yaml", cfg.to_yaml().rstrip(), "```", ""]
    return atomic_write_text(out / "report.md", "\n".join(lines))
