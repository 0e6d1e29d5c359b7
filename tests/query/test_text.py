"""The one text side: the shared prompt template, the oracle's vocabulary, text-features files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from openinsgaussian.cli import main
from openinsgaussian.data.load import load_scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.perception.clip_model import ClipModel
from openinsgaussian.perception.oracle import OracleLanguage
from openinsgaussian.query.text import check_prompt_template, text_side
from openinsgaussian.run.query_config import DEFAULT_PROMPT_TEMPLATE, QueryConfig

from tests.perception.perception_fixtures import TINY_CONVNEXT

CLIP_SOURCE = f"clip:{TINY_CONVNEXT}:random"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    room = generate_room(SynthConfig(out=tmp_path_factory.mktemp("room"), preset="tiny", seed=0,
                                     progress=False))
    return load_scene(room)


def test_default_template_is_the_one_of_every_command():
    assert DEFAULT_PROMPT_TEMPLATE == "a photo of a {}." == QueryConfig().prompt_template
    import inspect

    from openinsgaussian.cli import encode_text
    from openinsgaussian.query.text_features import encode_phrases

    for fn in (encode_text, encode_phrases, ClipModel.encode_text):
        params = inspect.signature(fn).parameters
        name = "prompt_template" if "prompt_template" in params else "template"
        assert params[name].default == DEFAULT_PROMPT_TEMPLATE, fn


def test_templates_are_checked():
    assert check_prompt_template("{} in a room") == "{} in a room"
    for bad in ("a photo", "{} and {}", "{0}", "{x} {}"):
        with pytest.raises(ConfigError, match="prompt template"):
            check_prompt_template(bad)


def test_oracle_side_returns_the_class_vectors_and_knows_the_scene(scene):
    side = text_side("oracle", 640, scene=scene)
    oracle = OracleLanguage(scene)
    torch.testing.assert_close(
        side.encode(["chair", "Shower curtain"]),
        torch.stack([oracle.class_vector("chair"), oracle.class_vector("showercurtain")]),
    )
    classes = {cls for cls, _ in scene.instance_classes.values()}
    assert all(side.in_vocabulary(c) for c in classes) and side.in_vocabulary("Wall")
    assert side.in_vocabulary("zebra") is False and side.in_vocabulary("red mug") is False
    assert not side.template_applied and side.describe()["prompt_template"] == DEFAULT_PROMPT_TEMPLATE
    assert text_side("oracle(noise=0.1,seed=0)", 640, scene=scene).encode(["bed"]).shape == (1, 640)
    with pytest.raises(ConfigError, match="unknown language source"):
        text_side("sbert:foo", 640, scene=scene)
    with pytest.raises(ConfigError, match="CLIP model"):
        text_side("clip:convnext_base_w", 640, scene=scene)
    with pytest.raises(ConfigError, match="scene"):
        text_side("oracle", 640)


def test_clip_side_embeds_the_template_like_encode_text(clip_run, monkeypatch, tmp_path):
    """Hand computation: the tiny CLIP's tokenizer + text tower on "a photo of a chair." is what
    the run's text side (eval, query, viewer) and encode-text's default both return."""
    monkeypatch.setenv("OIG_CLIP_CHECKPOINT", str(clip_run["checkpoint"]))
    by_hand = clip_run["embed"]("a photo of a chair.")
    bare = clip_run["embed"]("chair")
    assert np.abs(by_hand - bare).max() > 1e-3  # the template changes the embedding
    side = text_side(CLIP_SOURCE, 32, device="cpu")
    np.testing.assert_allclose(side.encode(["chair"])[0].numpy(), by_hand, atol=1e-5)
    bare_side = text_side(CLIP_SOURCE, 32, device="cpu", prompt_template="{}")
    np.testing.assert_allclose(bare_side.encode(["chair"])[0].numpy(), bare, atol=1e-5)
    out = tmp_path / "tf.json"
    assert main(["encode-text", "chair", "--out", str(out), "--model", TINY_CONVNEXT,
                 "--checkpoint", str(clip_run["checkpoint"]), "--device", "cpu"]) == 0
    np.testing.assert_allclose(json.loads(out.read_text())["chair"], by_hand, atol=1e-5)
    with pytest.raises(Exception, match="dims"):
        text_side(CLIP_SOURCE, 33, device="cpu").encode(["chair"])


def _write(path, data):
    path.write_text(json.dumps({k: np.asarray(v, dtype=float).tolist() for k, v in data.items()}))
    return path


def test_file_side_looks_phrases_up_by_exact_key(tmp_path):
    f = _write(tmp_path / "text_features.json",
               {"wall": [1, 0, 0], "showercurtain": [0, 1, 0], "old camera": [0, 0, 1]})
    side = text_side("oracle", 3, text_features=f)  # the file wins over the run's source
    torch.testing.assert_close(side.encode(["old camera", "wall"]),
                               torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    assert side.canonical() is None and side.in_vocabulary("wall") is None
    assert side.describe()["text_features"] == str(f) and not side.template_applied
    with pytest.raises(DataError, match=r"text_features\.json.*'shower curtain'.*showercurtain"):
        side.encode(["shower curtain"])
    with pytest.raises(DataError, match=r"text_features\.json.*3-d.*leaf features are 4-d"):
        text_side("oracle", 4, text_features=f)
    canon = {p: np.eye(5)[i] for i, p in enumerate(("object", "things", "stuff", "texture"))}
    g = _write(tmp_path / "with_canon.json", {**canon, "mug": np.eye(5)[4]})
    assert text_side("oracle", 5, text_features=g).canonical().shape == (4, 5)
