"""Demo ChemDraw: small molecules from RDKit's own data, written in MolScribe's `data/` layout.

`pubchem/train_pubchem.csv` (image_id, SMILES: the builder renders these, as for real PubChem data) and
`synthetic/chemdraw.csv` (image_id, file_path, SMILES) with its PNGs drawn by the same RDKit renderer,
so the same builder reads demo and real data.

Molecules come from `Data/NCI/first_5K.smi`, which the RDKit wheel ships (no network), kept when RDKit
parses them and they have at most 15 heavy atoms (2,679 distinct molecules of 5,000 lines; SMILES of ~19
characters), small enough that a tiny model can learn some of them. A fixed tenth of them (by a CRC of
the canonical SMILES) is reserved for eval, whatever the seed, so no seed ever trains on an eval
molecule (the file repeats some molecules, so positions in it would not do). Sampling and drawing
styles follow the seed.
"""

from __future__ import annotations

import csv
import functools
import zlib
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig, rdBase

from tasks.chemdraw_drawing import TEST_CSV, TRAIN_CSV, render_smiles

SOURCE = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
MAX_HEAVY_ATOMS = 15
EVAL_EVERY = 10


@functools.lru_cache(maxsize=1)
def molecule_pools() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, eval) distinct canonical SMILES of the small molecules of first_5K.smi, in file order."""
    seen: dict[str, None] = {}
    with rdBase.BlockLogs():
        for line in SOURCE.read_text().splitlines():
            mol = Chem.MolFromSmiles(line.split()[0]) if line.strip() else None
            if mol is not None and mol.GetNumHeavyAtoms() <= MAX_HEAVY_ATOMS:
                seen[Chem.MolToSmiles(mol)] = None
    held_out = [zlib.crc32(s.encode()) % EVAL_EVERY == 0 for s in seen]
    return (tuple(s for s, h in zip(seen, held_out) if not h), tuple(s for s, h in zip(seen, held_out) if h))


def write_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    manual_dir = Path(manual_dir)
    rng = np.random.default_rng(seed)
    train_pool, eval_pool = molecule_pools()

    (manual_dir / TRAIN_CSV).parent.mkdir(parents=True, exist_ok=True)
    with open(manual_dir / TRAIN_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "SMILES"])
        for k in range(num_train):
            writer.writerow([f"pubchem_{seed}_{k}", train_pool[int(rng.integers(len(train_pool)))]])

    image_dir = manual_dir / Path(TEST_CSV).with_suffix("")
    image_dir.mkdir(parents=True, exist_ok=True)
    with open(manual_dir / TEST_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "file_path", "SMILES"])
        for k in range(num_eval):
            smiles = eval_pool[int(rng.integers(len(eval_pool)))]
            image_id = f"chemdraw_{seed}_{k}"
            file_path = f"{image_dir.relative_to(manual_dir).as_posix()}/{image_id}.png"
            (manual_dir / file_path).write_bytes(render_smiles(smiles, seed=int(rng.integers(2**31))))
            writer.writerow([image_id, file_path, smiles])
