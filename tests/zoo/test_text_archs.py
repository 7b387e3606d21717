"""Text classifiers: the pretrained MiniLM runs through our own layer loop exactly
as transformers runs it, padding changes nothing, lower layers stay frozen."""

from __future__ import annotations

import torch

from samecurve.data.text import encode, minilm_path
from samecurve.registry import get

SENTENCES = ["the central bank cut interest rates on friday .",
             "astronomers observed a distant galaxy , officials said ."]


def test_minilm_matches_the_transformers_encoder_and_freezes_lower_layers() -> None:
    from transformers import BertModel

    model = get("arch", "minilm")(num_classes=4, max_len=32, train_layers=2).eval()
    ref = BertModel.from_pretrained(str(minilm_path()), attn_implementation="eager",
                                    add_pooling_layer=False).eval()
    ids = torch.from_numpy(encode(SENTENCES))
    seen = {}
    hook = model.resid[5].register_forward_hook(lambda _m, _i, out: seen.setdefault("h", out))
    with torch.no_grad():
        logits = model(ids)
        want = ref(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    hook.remove()
    real = ids != 0
    assert torch.allclose(seen["h"][real], want[real], atol=1e-5)
    assert logits.shape == (2, 4)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters()
                 if p.requires_grad and n.startswith("layers.")}
    assert trainable == {"layers.4", "layers.5"}
    assert not any(p.requires_grad for p in model.embeddings.parameters())
    groups = model.param_groups(2e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]  # the head faster than the encoder
    assert model.residual_layers() == [f"resid.{i}" for i in range(6)]


def test_padding_does_not_change_the_output() -> None:
    torch.manual_seed(0)
    model = get("arch", "tiny-bert")(num_classes=4, max_len=48).eval()
    short = torch.from_numpy(encode(SENTENCES, 24))
    long = torch.from_numpy(encode(SENTENCES, 48))
    with torch.no_grad():
        assert torch.allclose(model(short), model(long), atol=1e-5)
    embeds = model.word_embeddings(long)
    assert torch.allclose(model.forward_embeds(embeds, long != 0), model(long))
