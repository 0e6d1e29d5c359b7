import json

import numpy as np
import pytest

from openinsgaussian.cli import main
from openinsgaussian.errors import DataError
from openinsgaussian.query.text_features import read_text_features


def test_encode_text_cli_writes_opengaussian_layout(tiny_clip_checkpoint, tmp_path):
    from tests.perception.perception_fixtures import TINY_CONVNEXT

    out = tmp_path / "text_features.json"
    rc = main(["encode-text", "chair", "red mug", "--out", str(out), "--model", TINY_CONVNEXT,
               "--checkpoint", str(tiny_clip_checkpoint), "--device", "cpu"])
    assert rc == 0
    raw = json.loads(out.read_text())
    assert list(raw) == ["chair", "red mug"]
    names, feats = read_text_features(out)
    assert names == ["chair", "red mug"]
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(feats[0], feats[1])


def test_read_text_features_rejects_ragged_and_broken_files(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"a": [1.0, 0.0], "b": [1.0]}))
    with pytest.raises(DataError, match="one length"):
        read_text_features(bad)
    bad.write_text("{")
    with pytest.raises(DataError, match="t.json"):
        read_text_features(bad)
