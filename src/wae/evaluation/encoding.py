"""``wae encode``'s work: a model's codes (and, for mixture models, q(k|x) and the clusters) of every example of a
data set, written chunk by chunk to ``.npz``, ``.csv`` or ``.parquet``, with the clusters' agreement with the
labels when the data have them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.source import batches
from ..errors import WAEError
from ..files import NpzWriter, TableWriter, parquet_available
from .clustering import hungarian_accuracy, nmi

__all__ = ["ENCODE_FORMATS", "encode_dataset", "encode_format"]

ENCODE_FORMATS = ("npz", "csv", "parquet")


def encode_format(out: str | Path) -> str:
    """The format of ``out`` by its ending (``npz``, ``csv``, ``parquet``); one line when there is none or Parquet
    has no writer here."""
    fmt = str(out).lower().rsplit(".", 1)[-1] if "." in Path(out).name else ""
    if fmt not in ENCODE_FORMATS:
        raise WAEError(f"--out {out}: the file name must end in .npz, .csv or .parquet")
    if fmt == "parquet" and not parquet_available():
        raise WAEError(f"--out {out}: Parquet needs pyarrow (pip install pyarrow); or write .csv / .npz")
    return fmt


def encode_dataset(model, ds, out: str | Path, batch_size: int = 500, depth: int | None = None,
                   progress=None, what: str = "the model") -> dict:
    """Write the codes of every example of ``ds`` (``depth``: of that latent layer, hierarchical models) to ``out``,
    batch by batch (memory holds one batch of codes; streamed data are read in DataLoader workers): columns
    ``cluster``, ``label``, ``p0…`` (q(k|x)) and ``z0…`` in a table, arrays ``z``, ``probs``, ``cluster``, ``label``
    in an ``.npz``. Non-finite codes stop it with nothing written. ``progress(i, n)`` is called after each batch; ``what`` names the model in
    messages.
    Returns ``n``, ``dim``, ``components`` (0 without a discrete latent), ``used`` (components with members) and, with
    labels, ``acc_hungarian`` and ``nmi``."""
    fmt = encode_format(out)
    y = ds.y.numpy() if ds.y is not None else None
    if depth is not None:
        model.check_depth(depth, allow_zero=False)
        encode = lambda t: model.encode_layers(t, depth)[-1]
    else:
        encode = model.encode
    n, K = len(ds), (model.num_components if model.has_discrete_latent else 0)
    assign = np.empty(n, dtype=np.int64) if K else None
    i, writer, dim = 0, None, 0
    try:
        with torch.no_grad():
            for xb in batches(ds.x, batch_size):
                z = encode(xb).flatten(1).numpy().astype(np.float32)
                probs = model.cluster_probs(xb).numpy().astype(np.float32) if K else None
                if not np.isfinite(z).all() or (probs is not None and not np.isfinite(probs).all()):
                    raise WAEError(f"{what} produced non-finite codes (NaN or infinity); nothing written")
                if writer is None:  # the code's size is known now
                    dim = z.shape[1]
                    header = (["cluster"] if K else []) + (["label"] if y is not None else []) + \
                        [f"p{k}" for k in range(K)] + [f"z{j}" for j in range(dim)]
                    writer = NpzWriter(out, n) if fmt == "npz" else TableWriter(out, header, fmt)
                j = i + len(z)
                cl = probs.argmax(1).astype(np.int64) if K else None
                if K:
                    assign[i:j] = cl
                if fmt == "npz":
                    writer.write(z=z, **({"probs": probs, "cluster": cl} if K else {}))
                else:
                    writer.write(([cl] if K else []) + ([y[i:j]] if y is not None else [])
                                 + ([*probs.T] if K else []) + [*z.T])
                i = j
                if progress is not None:
                    progress(i, n)
        if fmt == "npz" and y is not None:
            writer.write(label=y)
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    out_d: dict = {"n": n, "dim": dim, "components": K}
    if K:
        out_d["used"] = int((np.bincount(assign, minlength=K) > 0).sum())
        if y is not None:
            out_d.update(acc_hungarian=float(hungarian_accuracy(assign, y)[0]), nmi=float(nmi(assign, y)))
    return out_d
