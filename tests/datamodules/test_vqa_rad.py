import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnifm.datamodules import (
    PHANTOM_ANSWERS,
    ClientSource,
    FederatedDataModule,
    Partition,
    PhantomVQADataModule,
    VQARADDataModule,
    normalize_answer,
)
from omnifm.datasets import SPLITS


def fake_vqa_rad(folder: Path, images_per_organ: int = 10, test: bool = False) -> Path:
    """A VQA-RAD layout: 3 organs, 2 questions per image, odd answer spellings."""
    (folder / "images").mkdir(parents=True)
    records, qid = [], 0
    for organ in ("HEAD", "CHEST", "ABD"):
        for i in range(images_per_organ):
            name = f"{organ.lower()}{i}.jpg"
            pixels = np.full((30, 40 + 3 * i, 3), 10 * i, np.uint8)  # not square: padded
            Image.fromarray(pixels).save(folder / "images" / name)
            for question, answer, kind in (
                ("Is there a mass?", " Yes" if i % 2 else "no", "CLOSED " if i == 0 else "CLOSED"),
                ("Where is the lesion?", "Right  Lung." if i % 3 else f"spot {i}", "OPEN"),
            ):
                qid += 1
                records.append(
                    {"qid": qid, "image_name": name, "image_organ": organ, "answer": answer,
                     "answer_type": kind, "question_type": "PRES", "question": question,
                     "phrase_type": "freeform"}
                )  # fmt: skip
    (folder / "trainset.json").write_text(json.dumps(records))
    (folder / "answer_all_list.json").write_text(json.dumps(["yes", "no", "right lung"]))
    if test:
        per_organ = 2 * images_per_organ  # the first image's two questions of each organ
        official = [r for i in range(3) for r in records[i * per_organ : i * per_organ + 2]]
        (folder / "testset.json").write_text(json.dumps(official))
    return folder


def test_answers_are_normalised() -> None:
    assert normalize_answer(" Right  Lung. ") == "right lung"
    assert normalize_answer("YES") == "yes"
    assert normalize_answer(4) == "4"


def test_records_are_normalised_and_splits_are_carved_by_image(tmp_path: Path) -> None:
    data = VQARADDataModule(str(fake_vqa_rad(tmp_path)), size=16, val_fraction=0.2)

    images = {s: {r["image_name"] for r in data.records(s)} for s in SPLITS}
    kinds = {r["answer_type"] for s in SPLITS for r in data.records(s)}

    assert images["train"].isdisjoint(images["val"]) and images["train"].isdisjoint(images["test"])
    assert images["val"].isdisjoint(images["test"])
    assert {len(images[s]) for s in ("val", "test")} == {6}  # 2 (20%/15%) of 10 per organ
    assert kinds == {"CLOSED", "OPEN"}  # "CLOSED " normalised
    # the answer list first, then training answers it lacks; unknown answers are -1
    assert data.answers[:3] == ["yes", "no", "right lung"]
    assert data.num_classes == len(data.answers)
    val = data.dataset("val")
    unknown = [r["answer"] not in data.answers for r in val.records]
    assert (val.labels == -1).tolist() == unknown
    item = val[0]
    assert item["image"].shape == (1, 16, 16) and isinstance(item["question"], str)
    assert item["closed"].dtype == torch.bool


def test_organ_clients_share_the_vocabulary_and_split_the_data(tmp_path: Path) -> None:
    root = fake_vqa_rad(tmp_path / "vqa_rad", test=True)
    clients = [
        ClientSource(organ.lower(), VQARADDataModule("vqa_rad", organ=organ, size=16))
        for organ in ("HEAD", "CHEST", "ABD")
    ]
    data = FederatedDataModule(clients, root=str(tmp_path), batch_size=4)

    infos = data.clients
    full = VQARADDataModule(str(root), size=16)

    assert [i.modality for i in infos] == ["head", "chest", "abdomen"]
    assert sum(i.num_train for i in infos) == len(full.records("train"))
    assert [i.num_test for i in infos] == [2, 2, 2]  # testset.json: the official test split
    assert data.num_classes == full.num_classes
    assert data.questions == [q for c in clients for q in c.data.questions]
    batch = next(iter(data.client_datamodule("chest").train_dataloader()))
    assert set(batch) == {"image", "label", "question", "closed", "qid"}


def test_missing_folder_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VQA-RAD folder"):
        _ = VQARADDataModule(str(tmp_path / "nope")).num_classes
    root = fake_vqa_rad(tmp_path / "v")
    (root / "images" / "head3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="head3.jpg"):
        VQARADDataModule(str(root), organ="HEAD", val_fraction=0.5, test_fraction=0.4).setup()
    with pytest.raises(ValueError, match="organ"):
        VQARADDataModule(str(root), organ="KNEE")


def test_real_vqa_rad_splits_share_no_image(vqa_rad_dir: Path) -> None:
    for organ in ("HEAD", "CHEST", "ABD"):
        data = VQARADDataModule(str(vqa_rad_dir), organ=organ)
        images = [{r["image_name"] for r in data.records(s)} for s in SPLITS]
        assert not images[0] & images[1] and not images[0] & images[2] and not images[1] & images[2]
    assert data.num_classes >= 458  # answer_all_list.json plus training answers it lacks
    assert sum(len(data.records(s)) for s in SPLITS) == 999  # every ABD record, once


def test_phantom_questions_have_known_answers() -> None:
    data = PhantomVQADataModule("mri", num_train=8, num_val=4, num_test=4, size=16)

    train = data.dataset("train")
    records = train.records

    assert len(train) == 24 and data.num_classes == len(PHANTOM_ANSWERS)
    assert (train.labels >= 0).all()
    assert {r["answer_type"] for r in records} == {"CLOSED", "OPEN"}
    assert data.questions == [r["question"] for r in records]
    what = [r for r in records if r["question"] == "what structure is shown?"]
    assert all(r["answer"] in PHANTOM_ANSWERS[2:6] for r in what)
    assert train[0]["image"].shape == (1, 16, 16)
    assert [r["question"] for r in data.records("val")] == [
        r["question"] for r in data.dataset("val").records
    ]


def test_iid_sites_instead_of_organs(tmp_path: Path) -> None:
    fake_vqa_rad(tmp_path / "vqa_rad")
    source = ClientSource(
        "vqa", VQARADDataModule("vqa_rad", size=16), partition=Partition("iid", sites=3)
    )
    data = FederatedDataModule([source], root=str(tmp_path), batch_size=4)

    infos = data.clients

    assert [i.name for i in infos] == ["vqa-0", "vqa-1", "vqa-2"]
    assert {i.modality for i in infos} == {"radiology"}
    assert sum(i.num_train for i in infos) == len(source.data.records("train"))
