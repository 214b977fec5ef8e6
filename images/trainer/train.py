"""Train a small image classifier on the 8x8 handwritten digits (scikit-learn's bundled copy).

A two-layer perceptron written with numpy alone, so the image needs no deep-learning framework
and the example runs on any Docker host. It prints one line per epoch, which the provider
streams into the Airflow task log, and writes its metrics as JSON to ``--output`` (default
``$RESULT_PATH`` or ``/output/result.json``), which the operator returns as the task's XCom.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.datasets import load_digits


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--hidden-units", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=os.environ.get("RESULT_PATH", "/output/result.json"))
    args = p.parse_args(argv)
    if args.epochs < 1 or args.learning_rate <= 0 or args.hidden_units < 1 or args.batch_size < 1:
        p.error("epochs, learning-rate, hidden-units and batch-size must be positive")
    return args


def split(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """60/20/20 train/validation/test split, stratification left to the shuffle."""
    order = rng.permutation(len(x))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    parts = order[:a], order[a:b], order[b:]
    return [(x[p], y[p]) for p in parts]


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(0.0, x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(params, x)[1].argmax(axis=1) == y).mean())


def train_epoch(params, x, y, lr, batch_size, rng) -> float:
    """One pass of minibatch SGD on softmax cross-entropy; returns the mean loss."""
    order = rng.permutation(len(x))
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        hidden, probs = forward(params, xb)
        total += float(-np.log(probs[np.arange(len(yb)), yb] + 1e-12).sum())
        grad = probs
        grad[np.arange(len(yb)), yb] -= 1.0
        grad /= len(yb)
        d_hidden = (grad @ params["w2"].T) * (hidden > 0)
        params["w2"] -= lr * hidden.T @ grad
        params["b2"] -= lr * grad.sum(axis=0)
        params["w1"] -= lr * xb.T @ d_hidden
        params["b1"] -= lr * d_hidden.sum(axis=0)
    return total / len(x)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, rng)
    n_in, n_out = x.shape[1], 10
    params = {
        "w1": rng.normal(0, np.sqrt(2 / n_in), (n_in, args.hidden_units)),
        "b1": np.zeros(args.hidden_units),
        "w2": rng.normal(0, np.sqrt(2 / args.hidden_units), (args.hidden_units, n_out)),
        "b2": np.zeros(n_out),
    }
    devices = os.environ.get("NVIDIA_VISIBLE_DEVICES", "none")
    print(f"training on {len(xtr)} images, validating on {len(xva)}, testing on {len(xte)}; "
          f"GPUs visible: {devices}", flush=True)
    started = time.monotonic()
    history = []
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(params, xtr, ytr, args.learning_rate, args.batch_size, rng)
        tr, va = accuracy(params, xtr, ytr), accuracy(params, xva, yva)
        history.append({"epoch": epoch, "loss": loss, "train_accuracy": tr, "val_accuracy": va})
        print(f"epoch {epoch}/{args.epochs} loss={loss:.4f} train_acc={tr:.4f} val_acc={va:.4f}",
              flush=True)
    test = accuracy(params, xte, yte)
    print(f"test_accuracy={test:.4f}", flush=True)
    result = {
        "test_accuracy": test,
        "val_accuracy": history[-1]["val_accuracy"],
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "hidden_units": args.hidden_units,
        "train_seconds": round(time.monotonic() - started, 3),
        "history": history,
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
