"""Official checkpoint files read into our own networks (PaSST, HTS-AT, SSAST, Audio-MAE): one way to find and
read the file, and one strict load, so a missing, truncated or foreign checkpoint fails the same clear way."""
from __future__ import annotations

from pathlib import Path

from simsearch.errors import ModelNotFoundError, SimsearchError


def read_checkpoint(model: str, path: str | None, help_text: str):
    """The object inside a checkpoint file (weights only, on the CPU); ModelNotFoundError when it is not there."""
    import torch

    if not path:
        raise ModelNotFoundError(f"no {model} checkpoint given. {help_text}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotFoundError(f"{model} checkpoint not found: looked for the file {file.resolve()}. {help_text}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise SimsearchError(f"could not read {model} checkpoint {file}: {e}") from None


def load_strict(model: str, net, state: dict):
    """`net` holding exactly these weights, in eval mode: every key must match, or a SimsearchError naming them."""
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that disagrees
        raise SimsearchError(f"{model} checkpoint does not fit the network: {' '.join(str(e).split())}") from None
    if result.missing_keys or result.unexpected_keys:
        raise SimsearchError(f"{model} checkpoint does not fit the network: missing {result.missing_keys[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")
    return net.eval()
