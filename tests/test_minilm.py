"""The real pretrained model: all-MiniLM-L6-v2, loaded from the `minilm` extra and captured."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the minilm extra is not installed")

from theorycraft.spec import HookPoint  # noqa: E402
from theorycraft.store import capture  # noqa: E402
from theorycraft.targets import load_target  # noqa: E402
from theorycraft.targets._hf import SEQ_LEN, load_hf_model, stdlib_docstrings  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return load_target("hf:minilm")


def test_corpus_is_built_offline_and_stable():
    texts = stdlib_docstrings()
    assert len(texts) > 500 and all(len(t) >= 200 for t in texts[:50])
    assert texts == stdlib_docstrings()


def test_capture_matches_the_models_own_hidden_states(minilm, tmp_path):
    hooks = [HookPoint.parse("encoder.layer.0.output"), HookPoint.parse("encoder.layer.5.output")]
    acts = capture(minilm, hooks, n=12, cache_dir=tmp_path, batch_size=4, progress=False)
    assert acts.sites == {"encoder.layer.0.output": (SEQ_LEN, 384), "encoder.layer.5.output": (SEQ_LEN, 384)}
    tokens = torch.from_numpy(np.array(acts.inputs())).long()
    with torch.no_grad():
        states = minilm.module(input_ids=tokens, attention_mask=torch.ones_like(tokens),
                               output_hidden_states=True).hidden_states
    np.testing.assert_allclose(acts.site("encoder.layer.0.output"), states[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(acts.site("encoder.layer.5.output"), states[6].numpy(), atol=1e-4)


def test_sites_include_inputs_and_outputs(minilm):
    hooks = minilm.hooks()
    assert hooks["encoder.layer.3.output"] == (SEQ_LEN, 384)
    assert hooks["encoder.layer.3.intermediate"] == (SEQ_LEN, 1536)
    assert hooks["encoder.layer.3.output:input"] == (SEQ_LEN, 1536)  # the dense layer's input


def test_user_text_becomes_the_data(tmp_path):
    target = load_hf_model("minilm", texts=("the cat sat on the mat. " * 60,))
    windows = target.dataset(None, 0)
    assert windows.shape[1] == SEQ_LEN and len(windows) >= 2
    assert windows[0, 0] == target.tokenizer.cls_token_id and windows[0, -1] == target.tokenizer.sep_token_id
