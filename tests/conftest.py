"""Shared test helpers."""
import os
import socket
import sys

import pytest


def gloo_on_loopback(mpatch: pytest.MonkeyPatch) -> None:
    """Skip unless torch.distributed's gloo backend can run here; point it at the loopback interface (gloo picks
    its interface from the host name unless told, and the loopback one always works)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if sys.platform == "win32":
        pytest.skip("gloo over TCP on 127.0.0.1 is not tested on Windows")
    loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
    if loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        mpatch.setenv("GLOO_SOCKET_IFNAME", loopback[0])


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, the README's test command) the tests that share a module-scoped
    fixture of ours (a trained run several tests read) go to one worker, which builds it once; every other test goes
    to whichever worker is free. (pytest's own wider fixtures, such as tmp_path_factory, have no baseid.)"""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = sorted(name for name, defs in (info.name2fixturedefs.items() if info else ())
                        if defs[-1].scope != "function" and defs[-1].baseid)
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}::{shared[0]}"))
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler hands out work in this order, so the long
        # parts (the groups, the tests marked slow) start first and the short tests fill in at the end
        items.sort(key=lambda i: not (i.get_closest_marker("xdist_group") or i.get_closest_marker("slow")))


@pytest.fixture(autouse=True)
def _teacher_stand_in(request, monkeypatch):
    """The ``umap-gmm`` teacher (``train.teacher``, on in preset ``cluster-vector``) is k-means on the inputs in every
    test but those marked ``real_teacher``: umap-learn is an optional extra (absent in CI) that compiles with numba for
    tens of seconds per process, and a test's outcome must not depend on whether it is installed. The teacher's
    plumbing is the same either way; UMAP → GMM itself is tested in test_baselines."""
    if request.node.get_closest_marker("real_teacher"):
        return
    from sklearn.cluster import KMeans

    from wae.training import teacher

    monkeypatch.setitem(teacher.TEACHERS, "umap-gmm",
                        lambda x, k, seed: KMeans(k, n_init=3, random_state=seed).fit_predict(x))


def pytest_configure(config):
    """An xdist worker computes with one thread (set before torch loads; its subprocesses inherit it): two workers
    with a thread per core each would run four threads on two cores, and torch's small ops slow down badly so."""
    if hasattr(config, "workerinput"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
