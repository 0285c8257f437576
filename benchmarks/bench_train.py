"""Benchmark: training throughput of the engine (sgdnoise.train: data on the device,
vectorised crop/flip, channels_last) vs a plain torchvision Dataset + DataLoader loop
(PIL images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize per
image, contiguous NCHW), with the same model, batch size, optimizer and data.

Both sides are measured in this one run, on the same machine, each after one warm-up epoch;
the number is images per second over the timed training steps (evaluation excluded for the
engine, none for the loop). Run as ``python benchmarks/bench_train.py [--model cnn]
[--width 16] [--batch-size 128] [--n 1024] [--threads N]``; ``main()`` returns the numbers
as a dict. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgdnoise.data import CIFAR10_MEAN, CIFAR10_STD, synthetic_cifar10
from sgdnoise.models import build_model
from sgdnoise.train import TrainConfig, train

GOAL_SPEEDUP = 1.3


class _PILDataset(torch.utils.data.Dataset):
    """uint8 (N, 3, 32, 32) images served one by one as PIL images through transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) for PIL
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def _dataloader_epoch_time(model, loader, lr: float) -> tuple[float, int]:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    seen = 0
    start = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        seen += xb.shape[0]
    return time.perf_counter() - start, seen


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n", type=int, default=1024, help="training images per epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from torchvision import transforms

    data = synthetic_cifar10(args.n, 16, seed=0)
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])
    loader = torch.utils.data.DataLoader(
        _PILDataset(data.train_x, data.train_y, tf), batch_size=args.batch_size, shuffle=True,
        num_workers=0, generator=torch.Generator().manual_seed(0),
    )

    def fresh_model():
        torch.manual_seed(0)
        return build_model(args.model, width=args.width, norm="batch")

    # baseline: warm-up epoch, then one timed epoch
    model = fresh_model()
    _dataloader_epoch_time(model, loader, 0.05)
    base_s, base_n = _dataloader_epoch_time(model, loader, 0.05)

    # engine: 2 epochs; the second epoch's step time is the measurement
    cfg = TrainConfig(model=args.model, width=args.width, norm="batch",
                      batch_size=args.batch_size, epochs=1, lr=0.05, eval_at_start=False,
                      augment=True, eval_batch_size=1000)
    model = fresh_model()
    train(cfg, data, model=model, progress=False)  # warm-up
    res = train(cfg, data, model=model, progress=False)
    eng_s = res.extra["step_seconds"]
    eng_n = args.n

    base_ips, eng_ips = base_n / base_s, eng_n / eng_s
    ratio = eng_ips / base_ips
    print(f"model {args.model} width {args.width}, batch {args.batch_size}, {args.n} images, "
          f"{torch.get_num_threads()} threads")
    print(f"  DataLoader + torchvision transforms: {base_ips:8.1f} img/s")
    print(f"  sgdnoise.train engine:               {eng_ips:8.1f} img/s")
    print(f"train throughput: engine / DataLoader = {ratio:.2f}x (goal >= {GOAL_SPEEDUP}x)")
    return {"dataloader_img_per_s": base_ips, "engine_img_per_s": eng_ips, "ratio": ratio,
            "goal": GOAL_SPEEDUP}


if __name__ == "__main__":
    main()
