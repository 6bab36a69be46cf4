"""Zero-cost scores of a trained run's network at initialization (see hpcnas.train.zero_cost).

Used by quality.py --fidelity on each trained run directory (its model.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from hpcnas.train.zero_cost import training_batch
from hpcnas.train.zero_cost import zero_cost_scores as network_scores


def zero_cost_scores(run_dir: Path, data: str, seed: int = 0) -> Dict[str, float]:
    """Every score of the network a training run's ``model.json`` describes, freshly initialized."""
    from hpcnas.train.spec import ModelSpec

    path = Path(run_dir) / "model.json"
    spec = ModelSpec.from_dict(json.loads(path.read_text()), str(path))
    x, y = training_batch(data, 16)
    scores = network_scores(spec.build, x, y, seed=seed)
    names = {"grad_norm": "grad-norm", "synflow": "SynFlow", "naswot": "NASWOT", "params": "params"}
    return {names[k]: v for k, v in scores.items()}
