"""Gated attention pooling of a file's windows (attention MIL, Ilse et al. 2018), trained with the linear layer
after it, so a probe can listen to the one window that holds the event instead of the average of all of them.

A file is a bag of window embeddings h_1..h_T (each L2-normalised, then standardised with the training windows'
mean and scale). Each window gets a score s_t = w . (tanh(V h_t) * sigmoid(U h_t)); the file vector is
z = sum_t softmax(s)_t h_t, and the label scores are z @ coef.T + intercept, softmax over classes (single-label)
or one sigmoid per label (multi-label). V, U, w and the linear layer are trained together with AdamW on all files
at once (cross-entropy, weight decay on every weight), seeded, on the CPU. How long to train is picked the way the
mean probe picks its regularisation, on held-out files: a fifth of the files is set aside, the epoch with the lowest
loss on them is kept, and the model is trained again on every file for that many epochs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from simsearch.vectors import normalize

HIDDEN = 16  # attention width: it only has to tell event windows from the rest (Ilse et al. use 128 on images)
EPOCHS = 300  # at most; the held-out files choose fewer
LR = 1e-2
WEIGHT_DECAY = 0.1  # decoupled (AdamW); with HIDDEN, chosen on generated files where one window holds the label
HOLDOUT = 0.2
ATTENTION_KEYS = ("attn_v_w", "attn_v_b", "attn_u_w", "attn_u_b", "attn_w_w", "attn_w_b")


def pad_bags(bags: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bags of [T_i, D] windows -> (windows [F, T, D] zero-padded, mask [F, T] True where a window is real)."""
    t = max(len(b) for b in bags)
    x = np.zeros((len(bags), t, bags[0].shape[1]), np.float32)
    mask = np.zeros((len(bags), t), bool)
    for i, b in enumerate(bags):
        x[i, : len(b)], mask[i, : len(b)] = b, True
    return x, mask


def _module(dim: int, hidden: int, n_out: int):
    import torch

    class GatedAttention(torch.nn.Module):
        """Window scores -> softmax weights over a file's windows -> weighted sum -> linear layer."""

        def __init__(self):
            super().__init__()
            self.v = torch.nn.Linear(dim, hidden)
            self.u = torch.nn.Linear(dim, hidden)
            self.w = torch.nn.Linear(hidden, 1)
            self.head = torch.nn.Linear(dim, n_out)

        def forward(self, x, mask):
            s = self.w(torch.tanh(self.v(x)) * torch.sigmoid(self.u(x))).squeeze(-1)
            a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=1)
            return self.head((a[..., None] * x).sum(dim=1)), a

    return GatedAttention()


def fit_attention(bags: Sequence[np.ndarray], y: np.ndarray, multi_label: bool, seed: int = 0,
                  hidden: int = HIDDEN, epochs: int = EPOCHS, lr: float = LR,
                  weight_decay: float = WEIGHT_DECAY) -> dict[str, np.ndarray]:
    """Train on bags of window embeddings; y: class indices [F] (single-label) or a 0/1 matrix [F, C].

    Returns the fitted arrays: mean, scale (standardisation), coef, intercept (the linear layer) and
    ATTENTION_KEYS (the attention weights), all float32, and "epochs" (how long it trained on all files).
    """
    import torch

    windows = normalize(np.concatenate(bags).astype(np.float32))
    mean, scale = windows.mean(axis=0), windows.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    x, mask = pad_bags([(normalize(b) - mean) / scale for b in bags])
    n_out = y.shape[1] if multi_label else int(y.max()) + 1
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    if multi_label:
        target, loss_fn = torch.from_numpy(np.asarray(y, np.float32)), torch.nn.BCEWithLogitsLoss()
    else:
        target, loss_fn = torch.from_numpy(np.asarray(y, np.int64)), torch.nn.CrossEntropyLoss()

    def train(rows: np.ndarray, n_epochs: int, held: np.ndarray | None = None):
        torch.manual_seed(seed)
        model = _module(x.shape[2], hidden, n_out)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        losses = []
        for _ in range(n_epochs):
            opt.zero_grad()
            loss_fn(model(xt[rows], mt[rows])[0], target[rows]).backward()
            opt.step()
            if held is not None:
                with torch.no_grad():
                    losses.append(float(loss_fn(model(xt[held], mt[held])[0], target[held])))
        return model, losses

    everything = np.arange(len(x))
    held = _holdout(y, multi_label, seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast, and far faster when other work shares the cores
    try:
        if len(held):
            _, losses = train(np.setdiff1d(everything, held), epochs, held)
            epochs = int(np.argmin(losses)) + 1
        model, _ = train(everything, epochs)
    finally:
        torch.set_num_threads(threads)
    p = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return {"mean": mean.astype(np.float32), "scale": scale, "coef": p["head.weight"], "intercept": p["head.bias"],
            "attn_v_w": p["v.weight"], "attn_v_b": p["v.bias"], "attn_u_w": p["u.weight"], "attn_u_b": p["u.bias"],
            "attn_w_w": p["w.weight"][0], "attn_w_b": p["w.bias"], "epochs": epochs}


def _holdout(y: np.ndarray, multi_label: bool, seed: int) -> np.ndarray:
    """Rows set aside to choose the epoch count: HOLDOUT of each class (single-label), or of all files; none when
    there are too few files for that."""
    rng = np.random.default_rng(seed)
    if multi_label:
        n = int(len(y) * HOLDOUT)
        return np.sort(rng.permutation(len(y))[:n]) if n >= 2 else np.zeros(0, int)
    held = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= 5:
            held.extend(rng.permutation(rows)[: int(len(rows) * HOLDOUT)])
    return np.sort(np.asarray(held, int))


def attention_weights(windows: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax weights [T] of one file's standardised windows [T, D] under the fitted attention."""
    from scipy.special import expit, softmax

    gate = np.tanh(windows @ arrays["attn_v_w"].T + arrays["attn_v_b"]) * expit(
        windows @ arrays["attn_u_w"].T + arrays["attn_u_b"])
    return softmax(gate @ arrays["attn_w_w"] + arrays["attn_w_b"][0])


def pool_bag(windows: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(attention-pooled standardised vector [D], window weights [T]) of one file's raw window embeddings."""
    z = (normalize(np.atleast_2d(np.asarray(windows, np.float32))) - arrays["mean"]) / arrays["scale"]
    a = attention_weights(z, arrays)
    return a @ z, a
