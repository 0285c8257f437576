"""Data-parallel training (sgdnoise.distributed via sgdnoise.train) with 2 CPU processes
(gloo) gives the parameters of one process after the same steps."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from sgdnoise.distributed import DistContext
from sgdnoise.train import TrainConfig, train

pytestmark = pytest.mark.skipif(
    not tdist.is_available() or sys.platform == "win32", reason="needs torch.distributed (gloo)"
)


def _data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(52) % 4
    x = torch.randint(0, 256, (52, 3, 8, 8), generator=g).to(torch.uint8)
    return {"train_x": x[:36], "train_y": y[:36], "test_x": x[36:], "test_y": y[36:]}


def _cfg(norm, batch_size=10):
    # 36 examples, B = 10: steps of 10, 10, 10 and 6 examples; split 5/5 and 3/3 over 2 ranks.
    # B = 7 with drop_last: 5 steps of 7 per epoch, split 4/3, i.e. 2 and 1 micro-batches of
    # at most 3 on the two ranks
    return TrainConfig(model="cnn", width=4, norm=norm, batch_size=batch_size, epochs=2,
                       lr=0.1, momentum=0.9, augment=True, seed=3, eval_batch_size=7,
                       micro_batch_size=3, drop_last=batch_size == 7)


def _model(norm):
    from sgdnoise.models import build_model

    torch.manual_seed(3)
    return build_model("cnn", width=4, norm=norm, num_classes=4, in_shape=(3, 8, 8)).double()


def _worker(rank, world, init_file, out_file, norm, batch_size):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                             world_size=world)
    try:
        model = _model(norm)
        res = train(_cfg(norm, batch_size), _data(), model=model, progress=False)
        if rank == 0:
            torch.save({"params": [p.detach() for p in model.parameters()],
                        "history": res.history, "steps": res.steps}, out_file)
    finally:
        tdist.destroy_process_group()


@pytest.mark.parametrize("norm,batch_size,steps", [("group", 10, 8), ("group", 7, 10)])
def test_two_processes_match_one(tmp_path, norm, batch_size, steps):
    """DistributedDataParallel with no_sync micro-batches (uneven shares and micro-batch
    counts for B = 7) gives the single-process parameters and metrics."""
    torch.set_num_threads(1)
    model = _model(norm)
    single = train(_cfg(norm, batch_size), _data(), model=model, progress=False)
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out_file), norm, batch_size),
             nprocs=2, join=True)
    got = torch.load(out_file)
    assert got["steps"] == single.steps == steps
    for p, q in zip(got["params"], model.parameters(), strict=True):
        torch.testing.assert_close(p, q.detach(), rtol=1e-10, atol=1e-12)
    for a, b in zip(got["history"], single.history, strict=True):
        assert a["train_error"] == b["train_error"] and a["test_error"] == b["test_error"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)


def test_shard_slices_partition_the_batch():
    for n in (1, 5, 10, 11):
        for world in (1, 2, 3):
            parts = [DistContext(r, world).shard_slice(n) for r in range(world)]
            covered = [i for s in parts for i in range(n)[s]]
            assert covered == list(range(n))
            sizes = [len(range(n)[s]) for s in parts]
            assert max(sizes) - min(sizes) <= 1


def test_no_process_group_means_single_process():
    from sgdnoise.distributed import current, init_from_env

    assert current() is None
    env = os.environ.pop("WORLD_SIZE", None)
    try:
        assert init_from_env() is None
    finally:
        if env is not None:
            os.environ["WORLD_SIZE"] = env


def test_gradients_are_reduced_by_ddp_not_by_hand():
    from sgdnoise.distributed import DistContext

    assert not hasattr(DistContext, "all_reduce_gradients") and hasattr(DistContext, "wrap")
