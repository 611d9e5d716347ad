"""The student's kept-token forward and the four objectives' losses, checked against independent formulations."""

import torch
import torch.nn.functional as F

from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.student import Student


def _student(objective="uta"):
    torch.manual_seed(0)
    return Student("tiny", OBJECTIVES.get(objective)).eval()


def test_keeping_every_patch_is_the_plain_forward():
    student = _student()
    x = torch.randn(2, 3, 64, 64)
    full = student.visual.head(student.visual.forward_features(x))
    out = student(x, keep=torch.arange(64).expand(2, 64))
    assert torch.allclose(out, full, atol=1e-5)
    assert torch.allclose(out[:, 0], student.visual(x), atol=1e-5)  # the CLS row is the zero-shot embedding


def test_dropping_tokens_equals_attending_only_to_the_kept_ones():
    """Dropping masked tokens must equal the full sequence with attention restricted to CLS + kept tokens: the
    kept tokens keep their absolute position embeddings and RoPE angles."""
    student = _student()
    x = torch.randn(2, 3, 64, 64)
    g = torch.Generator().manual_seed(1)
    keep = torch.stack([torch.randperm(64, generator=g)[:24].sort().values for _ in range(2)])
    dropped = student(x, keep=keep)
    allowed = torch.zeros(2, 65, dtype=torch.bool)
    allowed[:, 0] = True
    allowed.scatter_(1, keep + 1, True)
    attn_mask = torch.zeros(2, 1, 65, 65).masked_fill(~allowed[:, None, None, :], float("-inf"))
    full = student.visual.head(student.visual.forward_features(x, attn_mask=attn_mask))
    index = torch.cat([torch.zeros(2, 1, dtype=torch.long), keep + 1], dim=1)
    expected = full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))
    assert torch.allclose(dropped, expected, atol=1e-5)


def test_mask_token_fills_masked_positions_only():
    student = _student("mim")
    x = torch.randn(1, 3, 64, 64)
    mask = torch.zeros(1, 64, dtype=torch.bool)
    assert torch.allclose(student(x, mask=mask), student.visual.head(student.visual.forward_features(x)), atol=1e-5)
    mask[0, :10] = True
    y = x.clone()
    y[..., :8, :] = torch.randn(1, 3, 8, 64)  # the first patch row (patches 0-7) is masked: its pixels are unseen
    assert torch.allclose(student(x, mask=mask), student(y, mask=mask), atol=1e-5)


def _manual_neg_cos(a, b):
    return -(F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).mean()


def test_losses_score_the_right_tokens():
    torch.manual_seed(0)
    target = torch.randn(2, 1 + 16, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 2, 5, 9]] = True
    mask[1, [0, 3, 4, 15]] = True
    keep = (~mask).nonzero()[:, 1].view(2, -1)
    pred_kept = torch.randn(2, 1 + 12, 8)
    with_cls = torch.cat([torch.zeros(2, 1, dtype=torch.long), keep + 1], 1)
    expected = _manual_neg_cos(pred_kept, torch.stack([target[i, with_cls[i]] for i in range(2)]))
    assert torch.allclose(OBJECTIVES.get("uta").loss(pred_kept, target, keep, mask), expected)

    pred = torch.randn(2, 17, 8)
    masked = torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask], 1)
    mim = OBJECTIVES.get("mim").loss(pred, target, None, mask)
    assert torch.allclose(mim, _manual_neg_cos(pred[masked], target[masked]))
    changed = target.clone()
    changed[~masked] = torch.randn(int((~masked).sum()), 8)  # MIM ignores the visible tokens and CLS
    assert torch.allclose(OBJECTIVES.get("mim").loss(pred, changed, None, mask), mim)
    both = OBJECTIVES.get("uta+mim").loss(pred, target, None, mask)
    assert torch.allclose(both, mim + _manual_neg_cos(pred[~masked], target[~masked]))
    assert torch.allclose(OBJECTIVES.get("fd").loss(pred, target, None, None), _manual_neg_cos(pred, target))
