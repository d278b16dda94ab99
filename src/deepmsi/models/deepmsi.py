"""DeepMSI-MER: text + audio features and face frames -> emotion logits and shared embeddings.

Per modality the same path: feature (or a learned placeholder where missing) -> projection head
into a shared P-dim space; the classifier reads the concatenated projections. Video features come
from a Swin-V2 backbone on every frame (with VSC in stage 3, guided by text + audio) followed by a
TCN over the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from deepmsi.config import ModelConfig
from deepmsi.modalities import NAMES
from deepmsi.models.fusion import Guidance, modality_dropout
from deepmsi.models.swin_v2 import SwinV2
from deepmsi.models.tcn import TCN
from deepmsi.nn import FeatureNorm, MlpHead, ProjectionHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DeepMSIOutput:
    """logits [B, K]; embeddings name -> [B, P] projections (before L2-normalisation);
    present name -> BoolTensor[B], which samples really had the modality (after modality
    dropout), so the loss can leave placeholders out of the contrastive term; joint [B, M*P],
    the concatenated projections the classifier reads (the utterance vector a dialogue-context
    head builds on); unimodal name -> [B, K], each modality's own logits when the model has
    unimodal heads (training reads them; prediction uses ``logits``)."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    joint: torch.Tensor | None = None
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)


class VideoEncoder(nn.Module):
    """Frames [B, F, 3, S, S] in [0, 1] (+ guidance [B, C3]) -> video feature [B, D_v]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.backbone = SwinV2(cfg)
        dropout = cfg.dropout if cfg.video_dropout is None else cfg.video_dropout
        self.tcn = TCN(self.backbone.num_features, cfg.tcn_channels, cfg.tcn_kernel, dropout)
        self.out_dim = self.tcn.out_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        b, f = frames.shape[:2]
        images = (frames.flatten(0, 1) - self.mean) / self.std  # B*F, 3, S, S
        if guidance is not None:
            guidance = guidance.repeat_interleave(f, dim=0)  # B*F, C3
        per_frame = self.backbone(images, guidance).view(b, f, -1)  # B, F, C
        return self.tcn(per_frame)


class DeepMSI(nn.Module):
    """The full model. Modalities outside ``cfg.modalities`` are never built nor computed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.names = cfg.modality_names
        dims: dict[str, int] = {}
        if "text" in self.names:
            dims["text"] = cfg.text_dim
        if "audio" in self.names:
            dims["audio"] = cfg.audio_dim
        self.video = VideoEncoder(cfg) if "video" in self.names else None
        if self.video is not None:
            dims["video"] = self.video.out_dim
        self.feature_dims = dims
        # Text and audio arrive from frozen encoders on their own scales: standardised with the
        # training split's statistics (set by training, saved with the weights).
        self.input_norms = nn.ModuleDict(
            {n: FeatureNorm(dims[n]) for n in ("text", "audio") if n in dims}
        )
        # Learned stand-ins for a missing modality, in that modality's feature space.
        self.placeholders = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(d) * 0.02) for name, d in dims.items()}
        )
        guide_inputs: dict[str, int] = {n: dims[n] for n in ("text", "audio") if n in dims}
        self.guidance = None
        if self.video is not None and cfg.vsc_enabled:
            self.guidance = Guidance(
                guide_inputs, cfg.guidance_hidden, self.video.backbone.guidance_dim, cfg.dropout
            )
        # NOTE(paper): VSC is guided by text + audio; the video-only model (the V ablation) has
        # no guidance and runs its Swin-V2 uncompressed (ModelConfig.vsc_enabled).
        self.projections = nn.ModuleDict(
            {
                n: ProjectionHead(d, cfg.projection_dim, cfg.projection_dropout)
                for n, d in dims.items()
            }
        )
        self.classifier = MlpHead(
            cfg.projection_dim * len(dims), cfg.classifier_hidden, cfg.num_classes, cfg.dropout
        )
        # A linear classifier per projection gives each branch a gradient of its own, so the
        # fusion cannot leave the slow-to-learn video branch behind (see docs/balanced-training.md).
        self.unimodal_heads = (
            nn.ModuleDict({n: nn.Linear(cfg.projection_dim, cfg.num_classes) for n in dims})
            if cfg.unimodal_heads
            else None
        )

    def forward(
        self,
        text: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
        present: dict[str, torch.Tensor] | None = None,
    ) -> DeepMSIOutput:
        """text [B, D_t], audio [B, D_a], frames [B, F, 3, S, S] float in [0, 1] (uint8 is scaled).

        A modality passed as None, or marked False in ``present`` (name -> BoolTensor[B]), uses
        its learned placeholder. Inputs of modalities the config leaves out are ignored.
        """
        inputs = {"text": text, "audio": audio, "video": frames}
        given = [x for x in inputs.values() if x is not None]
        if not given:
            raise ValueError("DeepMSI needs at least one of text, audio, frames")
        b = given[0].shape[0]
        device = next(self.classifier.parameters()).device
        mask = self._present(inputs, present or {}, b, device)
        if self.training and self.cfg.modality_dropout > 0:
            mask = modality_dropout(mask, self.cfg.modality_dropout)

        return self.fuse(inputs, mask)

    def fuse(
        self,
        inputs: dict[str, torch.Tensor | None],
        mask: dict[str, torch.Tensor],
        *,
        traceable: bool = False,
    ) -> DeepMSIOutput:
        """Features -> projections -> logits, with ``mask`` (name -> BoolTensor[B]) final.

        ``traceable`` runs the video backbone on every sample and swaps placeholders in after,
        instead of skipping samples without video: the same numbers without a data-dependent
        branch, as a traced (ONNX) graph needs.
        """
        b = next(m.shape[0] for m in mask.values())
        features: dict[str, torch.Tensor] = {
            n: self._fill(
                n, None if inputs[n] is None else self.input_norms[n](inputs[n]), mask[n], b
            )
            for n in ("text", "audio")
            if n in mask
        }
        if self.video is not None:
            guidance = self.guidance(features) if self.guidance is not None else None
            frames = inputs["video"]
            if traceable:
                features["video"] = self._fill(
                    "video", self.video(frames, guidance), mask["video"], b
                )
            else:
                features["video"] = self._encode_video(frames, guidance, mask["video"], b)

        embeddings = {n: self.projections[n](features[n]) for n in self.names}
        joint = torch.cat([embeddings[n] for n in self.names], dim=-1)  # [B, M*P]
        logits = self.classifier(joint)
        unimodal = {}
        if self.unimodal_heads is not None:
            unimodal = {n: head(embeddings[n]) for n, head in self.unimodal_heads.items()}
        return DeepMSIOutput(logits, embeddings, mask, joint, unimodal)

    # ---- helpers ------------------------------------------------------------------------------
    def _present(
        self,
        inputs: dict[str, torch.Tensor | None],
        present: dict[str, torch.Tensor],
        b: int,
        device: torch.device,
    ) -> dict[str, torch.Tensor]:
        unknown = set(present) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown keys in present: {sorted(unknown)}")
        out = {}
        for name in self.names:
            x = inputs[name]
            if x is None:
                out[name] = torch.zeros(b, dtype=torch.bool, device=device)
                continue
            self._check_shape(name, x, b)
            flag = present.get(name)
            out[name] = (
                torch.ones(b, dtype=torch.bool, device=device)
                if flag is None
                else flag.to(device=device, dtype=torch.bool).view(b)
            )
        return out

    def _check_shape(self, name: str, x: torch.Tensor, b: int) -> None:
        cfg = self.cfg
        s = cfg.image_size
        if name == "video":
            ok = x.ndim == 5 and x.shape[0] == b and tuple(x.shape[2:]) == (3, s, s)
            shape = f"[{b}, F, 3, {s}, {s}]"
        else:
            want = (b, cfg.text_dim if name == "text" else cfg.audio_dim)
            ok = tuple(x.shape) == want
            shape = str(list(want))
        if not ok:
            raise ValueError(f"{name} input has shape {list(x.shape)}, expected {shape}")

    def set_input_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Standardise text/audio inputs with these (mean [D], std [D]) from now on."""
        for name, (mean, std) in stats.items():
            cast(FeatureNorm, self.input_norms[name]).set_stats(mean, std)

    def _fill(self, name: str, x: torch.Tensor | None, mask: torch.Tensor, b: int) -> torch.Tensor:
        """[B, D] with the placeholder wherever ``mask`` is False (or everywhere if x is None)."""
        placeholder = self.placeholders[name].unsqueeze(0).expand(b, -1)
        if x is None:
            return placeholder
        return torch.where(mask.unsqueeze(-1), x.to(placeholder.dtype), placeholder)

    def _encode_video(
        self,
        frames: torch.Tensor | None,
        guidance: torch.Tensor | None,
        mask: torch.Tensor,
        b: int,
    ) -> torch.Tensor:
        """Run the backbone only on samples that have video; the rest get the placeholder."""
        assert self.video is not None
        if frames is None or not bool(mask.any()):
            return self._fill("video", None, mask, b)
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        if bool(mask.all()):
            return self._fill("video", self.video(frames, guidance), mask, b)
        idx = mask.nonzero().squeeze(1)
        encoded = self.video(frames[idx], guidance[idx] if guidance is not None else None)
        full = encoded.new_zeros(b, encoded.shape[1]).index_copy(0, idx, encoded)
        return self._fill("video", full, mask, b)
