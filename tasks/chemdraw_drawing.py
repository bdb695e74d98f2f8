"""What the ChemDraw task and its demo generator share: MolScribe's `data/` file layout and the drawing of a
SMILES (the builder renders training molecules with it; the demo draws its eval PNGs with it, so demo and
real data go through one renderer). Its own module so that neither imports the other.

`render` draws a training molecule afresh for every (seed, step, row), as the paper does ("1M PubChem
molecules rendered with Indigo, with MolScribe-style augmentation", App. B): the renderer is Indigo or
RDKit, picked by the seed, and the augmentation is the kind MolScribe describes (Qian et al., "MolScribe:
Robust Molecular Structure Recognition with Image-To-Graph Generation", J. Chem. Inf. Model. 2023, §2.4:
rendering with random bond widths, font sizes and label styles in two toolkits, then image rotation,
scaling, padding and noise). The numbers below are ours; MolScribe's code is not used.
"""

from __future__ import annotations

import io

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


def _indigo_png(smiles: str, rng: np.random.Generator, size: int) -> bytes | None:
    """Indigo's drawing (its layout, random bond width, label scale, hydrogens shown or not)."""
    from indigo import Indigo, IndigoException
    from indigo.renderer import IndigoRenderer

    indigo = Indigo()
    renderer = IndigoRenderer(indigo)
    try:
        mol = indigo.loadMolecule(smiles)
        mol.layout()
    except IndigoException:
        return None
    indigo.setOption("render-output-format", "png")
    indigo.setOption("render-image-width", size)
    indigo.setOption("render-image-height", size)
    indigo.setOption("render-background-color", "1,1,1")
    indigo.setOption("render-coloring", False)
    indigo.setOption("render-bond-line-width", float(rng.uniform(1.0, 3.0)))
    indigo.setOption("render-relative-thickness", float(rng.uniform(0.8, 1.5)))
    indigo.setOption("render-implicit-hydrogens-visible", bool(rng.random() < 0.5))
    indigo.setOption("render-label-mode", "hetero" if rng.random() < 0.8 else "terminal-hetero")
    return bytes(renderer.renderToBuffer(mol))


def _rdkit_png(smiles: str, rng: np.random.Generator, size: int) -> bytes | None:
    """RDKit's drawing (random bond width, font size, aromatic circles or Kekulé bonds)."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    if rng.random() < 0.5:
        with rdBase.BlockLogs():
            Chem.Kekulize(mol, clearAromaticFlags=True)
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    options = drawer.drawOptions()
    options.bondLineWidth = float(rng.uniform(1.0, 3.0))
    options.minFontSize = options.maxFontSize = int(rng.integers(10, 20))
    options.useBWAtomPalette()
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def render(smiles: str, seed: int | tuple[int, ...]) -> np.ndarray | None:
    """An augmented drawing of the molecule as an H x W x 3 uint8 array, a pure function of (smiles, seed);
    None when neither toolkit can read the SMILES. Seed it with (run seed, step, row) and a resumed run
    draws the same pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = int(rng.integers(256, 449))  # scale: the molecule's drawn size varies against the canvas
    first, second = (_indigo_png, _rdkit_png) if rng.random() < 0.5 else (_rdkit_png, _indigo_png)
    png = first(smiles, rng, size) or second(smiles, rng, size)
    if png is None:
        return None
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.rotate(float(rng.uniform(-90, 90)) if rng.random() < 0.5 else 0.0, expand=True,
                         fillcolor=(255, 255, 255), resample=Image.BILINEAR)
    pad = rng.integers(0, max(2, image.width // 10), size=4)
    canvas = Image.new("RGB", (image.width + int(pad[0] + pad[2]), image.height + int(pad[1] + pad[3])), "white")
    canvas.paste(image, (int(pad[0]), int(pad[1])))
    pixels = np.asarray(canvas, np.uint8).copy()
    noise = rng.random(pixels.shape[:2]) < rng.uniform(0.0, 0.01)  # salt and pepper
    pixels[noise] = np.where(rng.random((int(noise.sum()), 1)) < 0.5, 0, 255).astype(np.uint8)
    return pixels
