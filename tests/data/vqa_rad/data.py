"""Fake VQA-RAD: ``vqa_rad/trainset.json`` (a JSON list of records with ``qid, image_name,
image_organ, answer, answer_type, question_type, question, phrase_type``),
``answer_all_list.json`` (a JSON list of answers) and ``images/synpic<number>.jpg`` (RGB JPEG
of various, not square, sizes). 4 images per organ (HEAD, CHEST, ABD) with 3 questions each;
like the real file, answers come in mixed case, one is a number and one record says
``"CLOSED "`` with a trailing space; no ``testset.json`` (the real folder has none either).

    python tests/data/vqa_rad/data.py OUT  # writes OUT/vqa_rad/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ORGANS = {"HEAD": "brain", "CHEST": "lung", "ABD": "liver"}
ANSWERS = ["yes", "no", "left", "right", "1", "2"]


def generate(root: Path, seed: int = 0, images_per_organ: int = 4) -> Path:
    """Write ``root/vqa_rad/``; return the folder."""
    folder = Path(root) / "vqa_rad"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records: list[dict] = []
    for o, (organ, part) in enumerate(ORGANS.items()):
        for i in range(images_per_organ):
            name = f"synpic{50000 + 100 * o + i}.jpg"
            height, width = 40 + 4 * i, 48 - 2 * i
            pixels = rng.integers(0, 80, (height, width))
            side = "left" if i % 2 else "right"
            pixels[:, : width // 2] += 120 if side == "left" else 0  # the finding is on one side
            grey = pixels.clip(0, 255).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, -1)).save(folder / "images" / name)
            for question, answer, kind, qtype in (
                (f"Is the {part} normal?", "Yes" if i % 2 else "No", "CLOSED", "ABN"),
                ("Which side is the lesion on?", side.capitalize(), "OPEN", "POS"),
                ("How many lesions are there?", 1 + i % 2, "OPEN", "COUNT"),
            ):
                records.append(
                    {"qid": len(records) + 1, "image_name": name, "image_organ": organ,
                     "answer": answer, "answer_type": kind, "question_type": qtype,
                     "question": question, "phrase_type": "freeform"}
                )  # fmt: skip
    records[0]["answer_type"] = "CLOSED "  # as in two real records
    (folder / "trainset.json").write_text(json.dumps(records, indent=4))
    (folder / "answer_all_list.json").write_text(json.dumps(ANSWERS))
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
