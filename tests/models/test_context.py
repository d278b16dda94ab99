"""DialogueContext: shapes, causal mode ignores future turns, padding is inert, it learns."""

from __future__ import annotations

import pytest
import torch

from deepmsi.models.context import (
    ContextConfig,
    DialogueContext,
    pad_dialogues,
    speaker_indices,
)

KINDS = ("gru", "transformer")


def _model(kind: str, causal: bool, **kw) -> DialogueContext:
    torch.manual_seed(0)
    cfg = ContextConfig(input_dim=12, num_classes=5, hidden=16, kind=kind, causal=causal, **kw)
    return DialogueContext(cfg).eval()


def _batch(b: int = 3, t: int = 7, d: int = 12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, t, d, generator=g)
    spk = torch.randint(0, 3, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 5:] = False  # a shorter dialogue
    return x, spk, mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [True, False])
def test_shapes(kind: str, causal: bool) -> None:
    x, spk, mask = _batch()
    logits = _model(kind, causal)(x, spk, mask)
    assert logits.shape == (3, 7, 5)
    assert torch.isfinite(logits[mask]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_causal_ignores_future_turns(kind: str) -> None:
    model = _model(kind, causal=True)
    x, spk, mask = _batch()
    before = model(x, spk, mask)
    x2, spk2 = x.clone(), spk.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:]) * 5  # change turns 4.. (and their speakers)
    spk2[:, 4:] = (spk2[:, 4:] + 1) % 3
    after = model(x2, spk2, mask)
    torch.testing.assert_close(after[:, :4], before[:, :4], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 4:], before[:, 4:])  # the change itself is seen


@pytest.mark.parametrize("kind", KINDS)
def test_offline_sees_future_turns(kind: str) -> None:
    model = _model(kind, causal=False)
    x, spk, mask = _batch()
    before = model(x, spk, mask)
    x2 = x.clone()
    x2[:, 6] = torch.randn_like(x2[:, 6]) * 5
    after = model(x2, spk, mask)
    assert not torch.allclose(after[0, :6], before[0, :6])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [True, False])
def test_padding_is_inert(kind: str, causal: bool) -> None:
    """A dialogue's logits do not depend on how much padding its batch adds."""
    model = _model(kind, causal)
    x, spk, mask = _batch()
    alone = model(x[1:2, :5], spk[1:2, :5], mask[1:2, :5])
    x = x.clone()
    x[1, 5:] = 100.0  # poison the padding
    batched = model(x, spk, mask)
    torch.testing.assert_close(batched[1:2, :5], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_trains_on_a_tiny_batch(kind: str) -> None:
    torch.manual_seed(0)
    model = DialogueContext(
        ContextConfig(input_dim=12, num_classes=5, hidden=16, kind=kind, dropout=0.0)
    )
    x, spk, mask = _batch()
    y = torch.randint(0, 5, mask.shape, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(80):
        loss = torch.nn.functional.cross_entropy(model(x, spk, mask)[mask], y[mask])
        if step == 0:
            loss.backward()
            frozen = [n for n, p in model.named_parameters() if p.grad is None]
            assert not frozen, f"no gradient reaches {frozen}"
        else:
            loss.backward()
        opt.step()
        opt.zero_grad()
        if step == 0:
            first = loss.item()
    assert loss.item() < 0.2 * first


def test_speaker_indices_and_padding() -> None:
    assert speaker_indices(["Ross", "Rachel", "Ross", "Joey"]) == [0, 1, 0, 2]
    assert speaker_indices(list("abcd"), max_speakers=2) == [0, 1, 1, 1]
    x, spk, mask = pad_dialogues([torch.ones(2, 3), torch.ones(4, 3)], [[0, 1], [1, 0, 1, 0]])
    assert x.shape == (2, 4, 3) and spk.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0]]
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert x[0, 2:].abs().sum() == 0


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="kind"):
        ContextConfig(input_dim=4, num_classes=2, kind="lstm")
    with pytest.raises(ValueError, match="divisible"):
        ContextConfig(input_dim=4, num_classes=2, kind="transformer", hidden=10, heads=4)
