"""The CIFAR-10 recipe network written directly in torch, to time the engine against.

Same architecture, batch size, epochs, one-cycle schedule, momentum, weight decay, random flips
and per-epoch test evaluation as ``nnbench.recipes``; only the framework differs. Its wall time
beside the engine's (with the torch kernel) gives the overhead of the numpy engine around the
convolutions. Optimizer note: torch's SGD applies the learning rate after the momentum
accumulation (p -= lr * buf), the assignment's rule before it (I = b*I + lr*g); with a schedule
the two follow slightly different trajectories but cost exactly the same work.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from nnbench import recipes


def build_twin(preset: str = "fast") -> nn.Sequential:
    recipe = recipes.cifar10_recipe(preset)
    layers: list[nn.Module] = []
    channels_in = 3
    for channels, convs in zip(recipe.channels, recipe.convs_per_stage):
        for _ in range(convs):
            layers += [
                nn.Conv2d(channels_in, channels, 3, padding=1),
                # nnbench momentum m keeps m of the old statistic; torch's keeps 1 - m.
                nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1),
                nn.ReLU(),
            ]
            channels_in = channels
        layers.append(nn.MaxPool2d(2))
    spatial = 32 // 2 ** len(recipe.channels)
    layers += [nn.Flatten(), nn.Linear(channels_in * spatial * spatial, 10)]
    return nn.Sequential(*layers)


def step_function(preset: str, x: np.ndarray, y: np.ndarray, seed: int = 0):
    """One training step of the twin on the fixed batch (x (n, 3, 32, 32), integer labels y),
    as ``train_twin`` runs it: random flips, forward, loss, backward, an SGD step. Returns a
    function of no arguments that runs one step and returns the loss (for step timings side by
    side with the engine's ``train_on_batch``)."""
    recipe = recipes.cifar10_recipe(preset)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_twin(preset)
    net.train()
    opt = torch.optim.SGD(
        net.parameters(), lr=0.01, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    xb = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yb = torch.from_numpy(_labels(y))

    def step() -> float:
        flip = torch.from_numpy(rng.random(len(xb)) < 0.5)
        inputs = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = loss_fn(net(inputs), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def train_twin(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    preset: str = "fast",
    seed: int = 0,
    epochs: int | None = None,
    verbose: bool = False,
) -> dict:
    """Train the torch twin; return {seconds, final_test_accuracy, history} (elapsed like fit)."""
    recipe = recipes.cifar10_recipe(preset)
    epochs = recipe.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_twin(preset)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=recipe.peak_lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    schedule = recipes.one_cycle(recipe.peak_lr, recipe.warmup)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    y = torch.from_numpy(_labels(y_train))
    xt = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    yt = torch.from_numpy(_labels(y_test))
    n, bs = len(x), recipe.batch_size
    steps_per_epoch = -(-n // bs)
    total = epochs * steps_per_epoch
    history = []
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(n))
        seen = correct = 0
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = schedule(step / total)
            idx = order[i * bs : (i + 1) * bs]
            xb, yb = x[idx], y[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            out = net(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
        test_loss, test_acc = _evaluate(net, loss_fn, xt, yt)
        history.append(
            {
                "epoch": epoch + 1,
                "elapsed_seconds": time.perf_counter() - start,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "valid_loss": test_loss,
                "valid_accuracy": test_acc,
            }
        )
        if verbose:
            print(
                f"torch twin epoch {epoch + 1}: test accuracy {test_acc:.4f} "
                f"at {history[-1]['elapsed_seconds']:.1f} s"
            )
    return {
        "seconds": history[-1]["elapsed_seconds"],
        "final_test_accuracy": history[-1]["valid_accuracy"],
        "history": history,
    }


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    return (y.argmax(1) if y.ndim == 2 else y).astype(np.int64)


def _evaluate(net, loss_fn, x, y, batch_size: int = 500) -> tuple[float, float]:
    net.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = net(x[i : i + batch_size])
            loss_sum += float(loss_fn(out, y[i : i + batch_size])) * len(out)
            correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return loss_sum / len(x), correct / len(x)
