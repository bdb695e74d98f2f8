"""Are the demo's MIMIC-CXR findings visible at a resolution, and does the shipped image tower expose them?

    python bench/findings_probe.py                                   # a small CNN on the pixels, 32 and 64 px
    python bench/findings_probe.py --reader vit --init checkpoints/nano/encoder-64.npz --frozen

The MIMIC-CXR sibling of `bench/legibility_probe.py` (same readers, same 80/20 split, same training). Each
generated study's report names its findings (`tasks/demo/mimic_cxr.py`), so each frontal image gets five
labels read back from its report: the view (PA / AP), cardiomegaly (none / mild / moderate), the pleural
effusion (none or side and size), the lobar opacity (none or the lobe) and the pneumothorax (none or the
side). The test accuracy against the majority-class rate says whether a finding can be seen at that
resolution by a reader trained for nothing else (`--reader cnn`), and, with `--frozen`, whether the image
tower the nano VLM keeps frozen after stage 0 (`configs/pretrain/nano.yaml`) exposes it to the layers
that train on top of it. A demo diagnostic for issue 12: MIMIC-CXR's image gap (`bench/image_use.py`)
stays under the bar, and this says whether the pixels or the tower are short.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.legibility_probe import (  # noqa: E402
    add_probe_arguments,
    check_probe_arguments,
    describe_reader,
    encode,
    majority_rate,
    probe,
)
from harness.data import preprocess_image  # noqa: E402
from tasks.registry import get_task  # noqa: E402

# label -> pattern over the report (FINDINGS + IMPRESSION); no match = "none". The IMPRESSION names every
# finding present, so "none" is the truth; only the view is said in FINDINGS alone, which a tenth of the
# reports lack: there it is unknown (None) and left out of the view's accuracy.
FINDINGS = {
    "view": re.compile(r"(portable AP|PA and lateral)"),
    "cardiomegaly": re.compile(r"\b(mild|moderate)(?:ly enlarged| cardiomegaly)", re.I),
    "effusion": re.compile(r"\b(small|moderate) (right|left|bilateral) pleural effusion", re.I),
    "opacity": re.compile(r"\b(right|left) (upper|lower) lobe", re.I),
    "pneumothorax": re.compile(r"\bsmall (right|left) apical pneumothorax", re.I),
}


def labels_of(report: str) -> dict[str, str | None]:
    """{finding: value} of one generated report, e.g. {'effusion': 'small left', 'opacity': 'none', ...}."""
    out: dict[str, str | None] = {}
    for name, pattern in FINDINGS.items():
        match = pattern.search(report)
        out[name] = " ".join(g.lower() for g in match.groups()) if match else "none"
    if out["view"] == "none":
        out["view"] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/pretrain-data-v3/mimic_cxr",
                        help="a MIMIC-CXR folder in the MIMIC-CXR-JPG layout (default: the pretraining data; "
                             "`paligemma-transfer pretrain` writes it)")
    parser.add_argument("--split", default="train")
    add_probe_arguments(parser)
    args = check_probe_arguments(parser, parser.parse_args())

    data = Path(args.data)
    if not (data / "files").is_dir():
        sys.exit(f"{data}/files: missing; expected a MIMIC-CXR folder in the MIMIC-CXR-JPG layout "
                 f"(run `paligemma-transfer pretrain` once, or pass --data)")
    examples = get_task("mimic_cxr").examples(data, args.split)
    studies = [examples[i] for i in range(len(examples))]
    order = np.random.default_rng(args.seed).permutation(len(studies))
    found = [labels_of(studies[i].targets[0]) for i in order]
    labels = [encode([f[name] for f in found]) for name in FINDINGS]
    ys, classes = [y for y, _ in labels], tuple(n for _, n in labels)
    cut = int(0.8 * len(studies))

    print(f"reader: {describe_reader(args)}; {len(studies)} studies ({len(studies) - cut} test); classes: "
          + ", ".join(f"{k} ({n})" for k, n in zip(FINDINGS, classes)))
    print(f"{'px':>9}  " + " ".join(f"{k[:12]:>12}" for k in FINDINGS))
    print(f"{'majority':>9}  " + " ".join(f"{majority_rate(y, cut):>12.2f}" for y in ys))
    for res in args.resolutions:
        x = np.stack([preprocess_image(studies[i].image, res) for i in order])
        t0 = time.perf_counter()
        acc = probe(x, ys, classes, steps=args.steps, seed=args.seed, reader=args.reader, init=args.init,
                    frozen=args.frozen, pool=args.pool)
        print(f"{f'{res} px':>9}  " + " ".join(f"{a:>12.2f}" for a in acc)
              + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
