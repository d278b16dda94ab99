"""DeepMSI end to end on the tiny preset: shapes, placeholders, ablations, learning, gradients."""

from __future__ import annotations

import pytest
import torch
from helpers_model import grow_blocks

from deepmsi.config import model_preset
from deepmsi.losses import DeepMSILoss
from deepmsi.models import DeepMSI, DeepMSIOutput
from deepmsi.models.fusion import modality_dropout
from deepmsi.models.vsc import VisualSequenceCompression

pytestmark = pytest.mark.usefixtures("one_thread")

SUBSETS = ["t", "a", "v", "ta", "tv", "av", "tav"]


def make_batch(cfg, b: int = 6, frames: int | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    f = frames or cfg.frames
    return {
        "text": torch.randn(b, cfg.text_dim, generator=g),
        "audio": torch.randn(b, cfg.audio_dim, generator=g),
        "frames": torch.rand(b, f, 3, cfg.image_size, cfg.image_size, generator=g),
    }


def labels_for(b: int, k: int) -> torch.Tensor:
    return torch.arange(b) % k  # every class twice or more -> positive pairs exist


@pytest.mark.parametrize("preset, frames", [("tiny", None), ("cpu", 2)])
def test_output_shapes(preset: str, frames: int | None) -> None:
    torch.manual_seed(0)
    cfg = model_preset(preset)
    model = DeepMSI(cfg).eval()
    with torch.no_grad():
        out = model(**make_batch(cfg, b=2, frames=frames))
    assert isinstance(out, DeepMSIOutput)
    assert out.logits.shape == (2, cfg.num_classes)
    assert {k: tuple(v.shape) for k, v in out.embeddings.items()} == {
        n: (2, cfg.projection_dim) for n in ("text", "audio", "video")
    }
    assert all(bool(p.all()) for p in out.present.values())


def test_paper_preset_shapes_on_meta() -> None:
    cfg = model_preset("paper")
    with torch.device("meta"):
        model = DeepMSI(cfg)
        b = 2
        text, audio = torch.empty(b, 1024), torch.empty(b, 768)
        guidance = model.guidance({"text": text, "audio": audio})
        video = model.video(torch.empty(b, 15, 3, 256, 256), guidance)
        emb = [
            model.projections[n](x) for n, x in (("text", text), ("audio", audio), ("video", video))
        ]
        logits = model.classifier(torch.cat(emb, -1))
    assert guidance.shape == (b, 384) and video.shape == (b, 1024)
    assert logits.shape == (b, 6) and emb[0].shape == (b, 256)
    assert model.classifier.net[0].in_features == 3 * 256
    assert model.video.backbone.stage_tokens()[2:] == [(256, 100), (25, 25)]


def test_backbone_sees_all_frames_at_once_normalised() -> None:
    cfg = model_preset("tiny")
    model = DeepMSI(cfg).eval()
    batch = make_batch(cfg, b=3)
    calls = []
    model.video.backbone.register_forward_hook(lambda m, args, out: calls.append(args[0]))
    with torch.no_grad():
        model(**batch)
    assert len(calls) == 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(calls[0], (batch["frames"].flatten(0, 1) - mean) / std)


def test_uint8_frames_are_scaled() -> None:
    cfg = model_preset("tiny")
    model = DeepMSI(cfg).eval()
    batch = make_batch(cfg, b=2)
    raw = (batch["frames"] * 255).round().to(torch.uint8)
    with torch.no_grad():
        a = model(**{**batch, "frames": raw}).logits
        b = model(**{**batch, "frames": raw.float() / 255}).logits
    torch.testing.assert_close(a, b)


def test_missing_modalities_use_learned_placeholders() -> None:
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = DeepMSI(cfg).eval()
    batch = make_batch(cfg, b=4)
    present = {
        "text": torch.tensor([False, True, True, True]),
        "video": torch.tensor([True, False, True, False]),
    }
    with torch.no_grad():
        full = model(**batch)
        part = model(**batch, present=present)
        no_text = model(audio=batch["audio"], frames=batch["frames"])
        ph = {n: model.projections[n](model.placeholders[n][None])[0] for n in model.names}
        zero_text = model.projections["text"](torch.zeros(1, cfg.text_dim))[0]
    assert not torch.allclose(ph["text"], zero_text)  # a placeholder is not zeros
    torch.testing.assert_close(part.embeddings["text"][0], ph["text"])
    torch.testing.assert_close(part.embeddings["text"][1:], full.embeddings["text"][1:])
    for i in (1, 3):
        torch.testing.assert_close(part.embeddings["video"][i], ph["video"])
    # Samples that keep their video are encoded exactly as in the full batch (the text
    # placeholder of sample 0 changes its guidance, so compare sample 2).
    torch.testing.assert_close(part.embeddings["video"][2], full.embeddings["video"][2])
    assert part.present["video"].tolist() == [True, False, True, False]
    assert no_text.present["text"].tolist() == [False] * 4
    torch.testing.assert_close(no_text.embeddings["text"], ph["text"].expand(4, -1))


@pytest.mark.parametrize("modalities", SUBSETS)
def test_every_modality_subset_learns_a_fixed_batch(modalities: str) -> None:
    torch.manual_seed(0)
    cfg = model_preset("tiny", modalities=modalities)
    model = DeepMSI(cfg).train()
    batch, y = make_batch(cfg, b=8), labels_for(8, cfg.num_classes)
    loss_fn = DeepMSILoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = loss_fn(model(**batch), y).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    names = {"t": "text", "a": "audio", "v": "video"}
    assert set(model.names) == {names[m] for m in modalities}
    assert model.classifier.net[0].in_features == cfg.projection_dim * len(modalities)
    assert (model.video is None) == ("v" not in modalities)
    assert (model.guidance is None) == (modalities in ("t", "a", "ta", "v"))


def test_absent_modalities_are_not_built_nor_computed() -> None:
    cfg = model_preset("tiny", modalities="ta")
    model = DeepMSI(cfg)
    assert not any("video" in n or "backbone" in n for n, _ in model.named_parameters())
    out = model.eval()(**make_batch(cfg, b=2))  # frames are ignored
    assert set(out.embeddings) == {"text", "audio"}


def test_vsc_off_is_a_plain_swin() -> None:
    cfg = model_preset("tiny", vsc=False)
    model = DeepMSI(cfg)
    assert model.guidance is None
    assert not any(isinstance(m, VisualSequenceCompression) for m in model.modules())
    out = model(**make_batch(cfg, b=4))
    DeepMSILoss()(out, labels_for(4, cfg.num_classes)).total.backward()
    assert model.video.backbone.stage_tokens()[2] == (36, 36)


def test_video_only_model_does_not_compress() -> None:
    """VSC ranks tokens against text + audio guidance; without either there is none."""
    has_vsc = {
        m: any(
            isinstance(x, VisualSequenceCompression)
            for x in DeepMSI(model_preset("tiny", modalities=m)).modules()
        )
        for m in ("v", "tv", "av", "tav")
    }
    assert has_vsc == {"v": False, "tv": True, "av": True, "tav": True}
    assert not model_preset("tiny", modalities="v").vsc_enabled


def test_gradients_reach_every_parameter_including_the_guidance() -> None:
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    # A fresh Swin-V2's blocks are the identity: their attention and MLP get a gradient once
    # the residual norms have grown, as after a first step.
    model = grow_blocks(DeepMSI(cfg)).train()
    batch, y = make_batch(cfg, b=8), labels_for(8, cfg.num_classes)
    present = {
        "text": torch.tensor([True] * 6 + [False] * 2),
        "audio": torch.tensor([True] * 5 + [False] + [True] * 2),
        "video": torch.tensor([False] + [True] * 7),
    }
    DeepMSILoss()(model(**batch, present=present), y).total.backward()
    silent = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert silent == []
    guidance_grads = [p.grad.abs().sum() for p in model.guidance.parameters()]
    assert all(g > 0 for g in guidance_grads)


def test_unimodal_heads_read_each_projection() -> None:
    torch.manual_seed(0)
    cfg = model_preset("tiny", unimodal_heads=True)
    model = DeepMSI(cfg).eval()
    out = model(**make_batch(cfg, b=3))
    assert set(out.unimodal) == {"text", "audio", "video"}
    for name, logits in out.unimodal.items():
        head = model.unimodal_heads[name]
        torch.testing.assert_close(logits, head(out.embeddings[name]))
        assert logits.shape == (3, cfg.num_classes)
    assert DeepMSI(model_preset("tiny")).eval()(**make_batch(cfg, b=3)).unimodal == {}


def test_modality_dropout_only_while_training_and_never_everything() -> None:
    cfg = model_preset("tiny", modality_dropout=0.5)
    model = DeepMSI(cfg)
    batch = make_batch(cfg, b=16)
    with torch.no_grad():
        assert all(bool(p.all()) for p in model.eval()(**batch).present.values())
        dropped = model.train()(**batch).present
    assert not all(bool(p.all()) for p in dropped.values())
    assert torch.stack(list(dropped.values()), 1).any(1).all()


def test_modality_dropout_rate_and_rescue() -> None:
    g = torch.Generator().manual_seed(0)
    n = 20000
    present = {
        "text": torch.ones(n, dtype=torch.bool),
        "audio": torch.rand(n, generator=g) < 0.5,
        "video": torch.zeros(n, dtype=torch.bool),
    }
    out = modality_dropout(present, 0.3, generator=g)
    stacked = torch.stack(list(out.values()), 1)
    assert stacked.any(1).all()  # nobody loses everything
    assert not out["video"].any()  # never invents a modality
    assert not (out["audio"] & ~present["audio"]).any()
    # text alone (audio absent): dropped 30% of the time but always rescued -> kept
    assert out["text"][~present["audio"]].all()
    both = present["audio"]
    rate = 1 - out["text"][both].float().mean().item()
    assert 0.25 < rate < 0.35


def test_bad_inputs_raise_value_errors() -> None:
    cfg = model_preset("tiny")
    model = DeepMSI(cfg).eval()
    with pytest.raises(ValueError, match="at least one"):
        model()
    with pytest.raises(ValueError, match="text"):
        model(text=torch.randn(2, cfg.text_dim + 1))
    with pytest.raises(ValueError, match="video"):
        model(frames=torch.rand(2, 2, 3, 40, 40))
    with pytest.raises(ValueError, match="present"):
        model(text=torch.randn(2, cfg.text_dim), present={"txt": torch.ones(2, dtype=torch.bool)})
