"""Helpers of the reliability tests: exact checkpoint comparison."""

import torch


def differences(a, b, where="checkpoint", rtol=0.0, atol=0.0):
    """Every place where two loaded checkpoints differ, as strings: tensors bit for bit, or
    within ``rtol``/``atol`` if given (floating-point tensors only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"] if set(a) != set(b) else []
        for key in a.keys() & b.keys():
            out += differences(a[key], b[key], f"{where}[{key!r}]", rtol, atol)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b))
            for d in differences(x, y, f"{where}[{i}]", rtol, atol)
        ]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{where}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}"]
        near = (rtol or atol) and a.is_floating_point()
        same = torch.allclose(a, b, rtol=rtol, atol=atol) if near else torch.equal(a, b)
        return [] if same else [f"{where}: tensors differ"]
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} != {b!r}"]
