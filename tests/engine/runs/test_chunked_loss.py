"""The chunked fused linear + cross-entropy equals the loss and gradients of whole logits (float32 on the CPU)."""

import pytest
import torch

from engine.runs.chunked_loss import chunked_nll

# float32 sums over 60 tokens of a 1,000-word vocabulary: the chunked and the whole computation differ only in
# summation order, so they agree to ~1e-6 relative; 1e-5 leaves room without hiding a real error (a wrong
# gradient through the soft cap is off by tens of percent).
RTOL, ATOL = 1e-5, 1e-6


def _reference(hidden, weight, bias, targets, softcap, scale):
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    logits = logits * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), (logits.argmax(-1) == targets).sum()


@pytest.mark.parametrize("softcap,scale,with_bias", [(None, 1.0, False), (30.0, 1.0, False), (5.0, 0.5, True)])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_loss_and_gradients_match_whole_logits(softcap, scale, with_bias, chunk):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(60, 32, generator=gen, requires_grad=True)
    weight = (torch.randn(1000, 32, generator=gen) * 0.5).requires_grad_()
    bias = torch.randn(1000, generator=gen).requires_grad_() if with_bias else None
    targets = torch.randint(0, 1000, (60,), generator=gen)
    ref_loss, ref_correct = _reference(hidden, weight, bias, targets, softcap, scale)
    ref_grads = torch.autograd.grad(ref_loss * 0.37, [hidden, weight] + ([bias] if with_bias else []))
    loss, correct = chunked_nll(hidden, weight, bias, targets, chunk=chunk, softcap=softcap, scale=scale)
    grads = torch.autograd.grad(loss * 0.37, [hidden, weight] + ([bias] if with_bias else []))
    torch.testing.assert_close(loss, ref_loss, rtol=RTOL, atol=ATOL)
    assert int(correct) == int(ref_correct)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_builds_none():
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(50, 8)  # frozen, as under LoRA
    targets = torch.randint(0, 50, (10,))
    loss, _ = chunked_nll(hidden, weight, None, targets, chunk=4)
    (grad,) = torch.autograd.grad(loss, [hidden])
    assert grad.shape == hidden.shape and torch.isfinite(grad).all()
    with torch.no_grad():
        loss_eval, _ = chunked_nll(hidden, weight, None, targets, chunk=4)
    torch.testing.assert_close(loss_eval, loss.detach())
