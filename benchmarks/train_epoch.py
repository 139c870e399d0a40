"""Training-epoch time through sampan vs a hand-written PyTorch loop, same model and data.

Both train the same architecture on the same decoded digits with the same optimiser, schedule,
loss and clipping. Runs alternate (sampan, hand, sampan, hand, ...) so machine noise hits both;
the first epoch of every run is a warm-up and not counted. Prints the median epoch times and
the ratio sampan / hand-written (1.00 = equal, lower is faster).

    python benchmarks/train_epoch.py [--arch small_cnn] [--rounds 3] [--epochs 4]
    python benchmarks/train_epoch.py --device cuda --arch resnet18 --size 224   # on a GPU

On CUDA both sides train under the same autocast (bf16 where the GPU has it, else fp16 with a
gradient scaler), as sampan's amp='auto' does; --amp off turns it off for both.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sampan
from sampan.data.digits import export_digits
from sampan.models import build_network, resolve_architecture
from sampan.store import Store
from sampan.training.schedule import warmup_cosine


def load_arrays(root: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """What a hand-written script does: read every PNG, resize, normalise, keep in memory."""
    from PIL import Image

    images, targets = [], []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.glob("*.png")):
            image = Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(image, dtype=np.float32) / 255.0)
            targets.append(int(label_dir.name))
    x = np.stack(images)[:, None]
    return (x - x.mean()) / x.std(), np.array(targets)


def hand_loop(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> list[float]:
    torch.manual_seed(0)
    n_val = int(len(y) * 0.2)
    order = np.random.default_rng(0).permutation(len(y))
    train_x = torch.from_numpy(x[order[n_val:]].copy())
    train_y = torch.from_numpy(y[order[n_val:]].copy())
    spec = resolve_architecture(args.arch)
    model = build_network(spec, num_classes=10, in_chans=1, input_size=[args.size, args.size])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = math.ceil(len(train_y) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps * args.epochs, steps, 0.01)
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    device = torch.device(args.device)
    model = model.to(device)
    half = amp_dtype(device, args.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=half == torch.float16)
    times = []
    for _ in range(args.epochs):
        model.train()
        started = time.perf_counter()
        perm = torch.randperm(len(train_y))
        for i in range(0, len(perm), args.batch_size):
            index = perm[i : i + args.batch_size]
            inputs = train_x[index].to(device, non_blocking=True)
            targets = train_y[index].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=half, enabled=half is not None):
                loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        model.eval()  # a validation pass, as sampan does (not timed in either)
        with torch.inference_mode():
            for start in range(0, n_val, 256):
                model(torch.from_numpy(x[order[start : min(start + 256, n_val)]]).to(device))
    return times


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """What sampan's amp='auto' picks: bf16 on a CUDA GPU that has it, else fp16; none on CPU."""
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def sampan_loop(root: Path, home: Path, args: argparse.Namespace) -> list[float]:
    result = sampan.train(
        data=str(root),
        name="bench",
        arch=args.arch,
        input_size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=0,
        device=args.device,
        amp=args.amp,
        quiet=True,
        store=Store(home),
    )
    return [h["train_seconds"] for h in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", default="auto", choices=["auto", "off"])
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        root = export_digits(home / "digits")
        x, y = load_arrays(root, args.size)
        ours: list[float] = []
        hand: list[float] = []
        for _ in range(args.rounds):
            ours += sampan_loop(root, home, args)[1:]
            hand += hand_loop(x, y, args)[1:]
    mine, base = statistics.median(ours), statistics.median(hand)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if args.device.startswith("cuda"):
        half = amp_dtype(torch.device(args.device), args.amp)
        print(f"device: {torch.cuda.get_device_name()}, autocast {half or 'off'}")
    print(
        f"model {args.arch} @ {args.size}px, batch {args.batch_size}, 1,437 train images, "
        f"median of {len(ours)} epochs each"
    )
    print(f"{'':>12} {'epoch s':>9}")
    print(f"{'sampan':>12} {mine:9.3f}")
    print(f"{'hand loop':>12} {base:9.3f}")
    print(f"ratio sampan/hand = {mine / base:.3f}")


if __name__ == "__main__":
    main()
