"""How well a found theory recovers the superposition model's ground-truth features.

The model stores feature i of x as the direction W[:, i] of its 5-dim bottleneck. A component
recovers it when one of its directions in the bottleneck (a dictionary's decoder row, or a
linear map's row from x) has cosine ≥ 0.9 with W[:, i].

    python examples/superposition_features.py runs/search-superposition/fitted
"""

import sys

import numpy as np
from safetensors.numpy import load_file

from theorycraft.inference import FittedTheory
from theorycraft.targets._load import WEIGHTS  # the bundled weights' folder


def directions(fitted: FittedTheory) -> dict[str, np.ndarray]:
    """Each component's directions in the bottleneck h, one per row."""
    out = {}
    for name, c in fitted.theory.components.items():
        p = fitted.params[name]
        if c.kind == "dictionary" and c.predicts == "h":
            out[name] = np.asarray(p["decoder"])
        elif c.kind == "linear" and c.predicts == "h" and "weight" in p:
            out[name] = np.asarray(p["weight"])
    return out


def main(run_dir: str) -> None:
    w = load_file(str(WEIGHTS / "superposition.safetensors"))["W"]  # [hidden, features]
    fitted = FittedTheory.load(run_dir)
    found = directions(fitted)
    if not found:
        sys.exit(f"{run_dir}: no component maps into the bottleneck h")
    rows = np.concatenate(list(found.values()))
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    norms = np.linalg.norm(w, axis=0)
    cosines = np.abs(rows @ (w / np.maximum(norms, 1e-12)))  # [found, features]
    best = cosines.max(0)
    print(f"components: {', '.join(f'{n} ({len(d)} directions)' for n, d in found.items())}")
    for i in np.argsort(-norms):
        print(f"feature {i:2d}: |W[:, i]| = {norms[i]:.3f}  best cosine {best[i]:.3f}")
    matched = int((best >= 0.9).sum())
    print(f"matched {matched}/{w.shape[1]} features at cosine >= 0.9 (min {best.min():.3f}, median {np.median(best):.3f})")


if __name__ == "__main__":
    main(sys.argv[1])
