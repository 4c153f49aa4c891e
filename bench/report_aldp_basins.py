"""Ramachandran basin fractions and energies of a trained alanine dipeptide flow's samples.

The numbers of the README's table "The Ramachandran basins at laptop size": draws samples from
a finished run's ``model.pt`` without log q (positions only, cheap), mirrors D-alanine into L as
the evaluation does, and prints the fractions in alpha_R (phi < 0, -120 < psi < 50 degrees), in
beta (phi < 0, psi outside that band) and at phi > 0, beside the MD test data's, with the
samples' median energy in kT.

    python bench/report_aldp_basins.py results/runs/aldp/egnn/eqotfm/seed0 \
        results/data/aldp/test.npz [--n 500] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from eqbg.evaluation import ramachandran_basin_fractions
from eqbg.rundir import load_flow
from eqbg.systems import get_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished alanine dipeptide training run folder")
    parser.add_argument("test", help="the MD test split (results/data/aldp/test.npz)")
    parser.add_argument("--n", type=int, default=500, help="flow samples to draw")
    parser.add_argument("--seed", type=int, default=1, help="seed of the prior draws")
    args = parser.parse_args()

    flow, _ = load_flow(args.run)
    system = get_system("aldp")
    x_md = torch.as_tensor(np.load(args.test)["x"], dtype=torch.float32)
    drawn = flow.sample(
        args.n, generator=torch.Generator().manual_seed(args.seed), with_log_q=False, batch_size=250
    )
    x_flow = drawn.x.to(torch.float32)
    for name, x in (("MD test", x_md), ("flow", x_flow)):
        x_l, _ = system.map_to_l(x)  # D-alanine mirrored into L, as the evaluation does
        shares = ramachandran_basin_fractions(*system.dihedrals(x_l))
        fractions = ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
        energy = float(system.energy(x).median())
        print(f"{name:8s} ({len(x)}): {fractions}; median energy {energy:,.1f} kT")


if __name__ == "__main__":
    main()
