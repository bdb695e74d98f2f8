"""What the ChemDraw task and its demo generator share: MolScribe's `data/` file layout and the RDKit
drawing of a SMILES (the builder renders training molecules with it; the demo draws its eval PNGs with it,
so demo and real data go through one renderer). Its own module so that neither imports the other."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem.Draw import rdMolDraw2D

TRAIN_CSV = "pubchem/train_pubchem.csv"
TEST_CSV = "synthetic/chemdraw.csv"


def render_smiles(smiles: str, seed: int | tuple[int, ...]) -> bytes | None:
    """A PNG drawing of the molecule (None if RDKit cannot parse it), style drawn from `seed`: canvas
    240-400 px a side, rotation, bond width; so one molecule is not always the same picture."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(240, 401, size=2))
    drawer = rdMolDraw2D.MolDraw2DCairo(width, height)
    options = drawer.drawOptions()
    options.rotate = float(rng.uniform(0, 360))
    options.bondLineWidth = float(rng.uniform(1.0, 3.0))
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()
