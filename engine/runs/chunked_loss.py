"""The training loss without whole logits: a fused linear + cross-entropy over chunks of tokens, from the last
hidden states and the LM head, scored only where a label is trained (job process).

:class:`ChunkedLinearCrossEntropy` computes, for ``loss_chunk_tokens`` tokens at a time, the fp32 logits of the
chunk, their log-sum-exp, the negative log-likelihood of the targets and — in the same pass — the gradients
with respect to the hidden states and the head's weight, so only one chunk's ``chunk × vocabulary`` logits
exist at any time and the head's matmul is never recomputed in the backward pass (TRL 1.16's own fused head,
which a bare ``SFTTrainer`` uses, recomputes its tiles in the backward pass and, on devices without Triton,
scores every position, prompt and padding included). On CUDA with ``liger-kernel`` installed (the ``liger``
extra), Liger's fused linear cross-entropy kernel does the same job.

:func:`install_chunked_loss` patches a causal LM so that ``model(..., llmtui_loss_labels=labels)`` returns the
loss this way; the call still goes through every wrapper (PEFT, DDP), so gradient synchronisation is untouched.
The loss is the sum of the token losses divided by ``num_items_in_batch`` (the trained tokens of the whole
optimizer step, as the Trainer counts them) — the same per-token mean over the step that TRL computes.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: torch is imported where the loss runs
    import torch

#: The model's forward keyword that asks for the chunked loss.
LABELS_KWARG = "llmtui_loss_labels"


def liger_status() -> tuple[bool, str]:
    """(usable, why): whether Liger's fused linear cross-entropy loads here (it needs CUDA and Triton)."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: F401
    except Exception as exc:  # not installed, or a build that does not match this torch/triton
        return False, (f"liger-kernel does not load ({type(exc).__name__}: {exc}); "
                       "pip install 'llmtui[liger]' on a GPU box")
    import torch

    if not torch.cuda.is_available():
        return False, "liger-kernel loads but there is no CUDA device; the plain-torch chunked loss is used"
    return True, "liger-kernel loads: its fused linear cross-entropy is used on CUDA"


def _head_transform(config) -> tuple[float | None, float]:
    """(final logit soft-capping, logit scale) of a model config (Gemma 2 caps, Cohere/Granite scale)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = getattr(text, "logit_scale", None)
    if scale is None and getattr(text, "logits_scaling", None):
        scale = 1.0 / text.logits_scaling
    return softcap, float(scale if scale is not None else 1.0)


@functools.cache
def _chunked_function() -> type:
    """The autograd function, made on first use: torch is imported by the job process only when it trains."""
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """``sum_i -log softmax(transform(hidden_i @ weight.T + bias))[target_i]`` over ``chunk`` rows at a time
        (``transform``: the logit scale, then the soft cap).

        Returns ``(nll_sum, correct)``: the summed loss and how many targets are the arg-max (no gradient). The
        gradients are computed in the forward pass and scaled by the incoming gradient in the backward pass.
        """

        @staticmethod
        def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                    chunk: int, softcap: float | None, scale: float, grads: bool):
            device = hidden.device
            dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
            need_h, need_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
            need_b = bias is not None and grads and ctx.needs_input_grad[2]
            w = weight.to(dtype)
            grad_h = torch.empty(hidden.shape, device=device, dtype=hidden.dtype) if need_h else None
            grad_w = torch.zeros(weight.shape, device=device, dtype=torch.float32) if need_w else None
            grad_b = torch.zeros(bias.shape, device=device, dtype=torch.float32) if need_b else None
            nll = torch.zeros((), device=device, dtype=torch.float32)
            correct = torch.zeros((), device=device, dtype=torch.long)
            with torch.autocast(device.type, enabled=False):
                for start in range(0, hidden.shape[0], chunk):
                    h = hidden[start:start + chunk].to(dtype)
                    t = targets[start:start + chunk]
                    z = (h @ w.t()).float()  # the one [chunk, vocab] buffer, reused below for log-probs and gradients
                    if bias is not None:
                        z += bias.float()
                    if scale != 1.0:
                        z *= scale
                    if softcap is not None:
                        z.div_(softcap).tanh_().mul_(softcap)
                    correct += (z.argmax(-1) == t).sum()
                    target_logit = z.gather(1, t[:, None]).squeeze(1)
                    top = z.amax(-1)
                    total = z.sub_(top[:, None]).exp_().sum(-1)  # in place: no second [chunk, vocab] buffer
                    nll += (top + total.log() - target_logit).sum()
                    if not (need_h or need_w or need_b):
                        continue
                    z.div_(total[:, None])  # softmax
                    z[torch.arange(len(t), device=device), t] -= 1.0  # d(nll)/d(logits) = softmax - one-hot
                    if softcap is not None or scale != 1.0:
                        # through the cap: d(c*tanh(y/c))/dy = 1 - tanh(y/c)^2, recomputed from the capped logits
                        capped = (h @ w.t()).float()
                        if bias is not None:
                            capped += bias.float()
                        capped *= scale
                        if softcap is not None:
                            capped.div_(softcap).tanh_().square_().neg_().add_(1.0)
                            z.mul_(capped)
                        del capped
                        z *= scale
                    g = z.to(dtype)
                    if need_h:
                        grad_h[start:start + chunk] = (g @ w).to(hidden.dtype)
                    if need_w:
                        grad_w.addmm_(g.t().float() if dtype != torch.float32 else g.t(), h.float())
                    if need_b:
                        grad_b += z.sum(0)
                    del z, g
            ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                         None if grad_b is None else grad_b.to(bias.dtype))
            ctx.mark_non_differentiable(correct)
            return nll, correct

        @staticmethod
        def backward(ctx, grad_nll, _grad_correct):
            grad_h, grad_w, grad_b = ctx.grads
            ctx.grads = None
            scale = grad_nll.to(torch.float32)
            return (None if grad_h is None else grad_h * scale.to(grad_h.dtype),
                    None if grad_w is None else grad_w * scale.to(grad_w.dtype),
                    None if grad_b is None else grad_b * scale.to(grad_b.dtype), None, None, None, None, None)

    return ChunkedLinearCrossEntropy


def chunked_nll(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, *,
                chunk: int, softcap: float | None = None, scale: float = 1.0,
                use_liger: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed loss, count of arg-max hits or None) of ``hidden`` ``[N, H]`` rows against ``targets`` ``[N]``
    (all trained), through Liger's kernel when asked and possible, else the chunked autograd function (:func:`_chunked_function`)."""
    if use_liger and hidden.is_cuda and scale == 1.0:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(reduction="sum", softcap=softcap)(weight, hidden, targets, bias), None
    import torch

    # inside Function.forward grad mode is off: whether to build gradients is decided at the call
    grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _chunked_function().apply(hidden, weight, bias, targets, chunk, softcap, scale, grads)


@dataclass
class ChunkedLossOutput:
    """What the patched forward returns for ``llmtui_loss_labels``: the normalised loss and its token counts."""

    loss: torch.Tensor
    trained_tokens: torch.Tensor
    correct: torch.Tensor | None


def install_chunked_loss(model, chunk_tokens: int, *, use_liger: bool = False) -> None:
    """Patch ``model`` (the causal LM itself, before or after PEFT wraps it) so a forward called with
    ``llmtui_loss_labels=labels`` (and ``num_items_in_batch``) returns a :class:`ChunkedLossOutput`; any other call
    runs the original forward. Labels are unshifted, ``-100`` where not trained, as the Trainer passes them."""
    original = model.forward
    softcap, scale = _head_transform(model.config)

    @functools.wraps(type(model).forward)
    def forward(self, *args, num_items_in_batch=None, **kwargs):
        labels = kwargs.pop(LABELS_KWARG, None)
        if labels is None:
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        backbone = self.base_model(*args, **kwargs)  # the decoder stack with its final norm: no LM head
        head = self.get_output_embeddings()
        hidden = backbone.last_hidden_state[:, :-1]
        targets = labels[:, 1:].to(hidden.device)
        mask = targets != -100
        nll, correct = chunked_nll(hidden[mask], head.weight, head.bias, targets[mask], chunk=chunk_tokens,
                                   softcap=softcap, scale=scale, use_liger=use_liger)
        trained = mask.sum()
        denominator = trained.clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return ChunkedLossOutput(nll / denominator, trained, correct)

    model.forward = types.MethodType(forward, model)


def trainer_class(base: type) -> type:
    """``base`` (TRL's ``SFTTrainer``) whose training loss goes through the chunked loss the model was patched
    with; evaluation and everything that asks for logits keep ``base``'s path."""

    class ChunkedLossTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            inputs = {k: v for k, v in inputs.items() if k != "labels"} | {LABELS_KWARG: inputs["labels"]}
            out = model(**inputs, num_items_in_batch=num_items_in_batch)
            loss = out.loss
            # as TRL's compute_loss: num_items_in_batch counts every rank's tokens and DDP averages gradients
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            trained = self.accelerator.gather_for_metrics(out.trained_tokens.detach()).sum()
            if out.correct is not None:
                correct = self.accelerator.gather_for_metrics(out.correct.detach()).sum()
                self._metrics[mode]["mean_token_accuracy"].append(
                    (correct / trained).item() if trained > 0 else 0.0)
            if mode == "train":
                import torch

                tokens = inputs["attention_mask"].sum() if "attention_mask" in inputs else \
                    torch.tensor(inputs["position_ids"].size(1), device=loss.device)
                self._total_train_tokens += int(self.accelerator.gather_for_metrics(tokens).sum().item())
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return ChunkedLossTrainer


def describe(chunk_tokens: int) -> dict[str, Any]:
    """How the loss is computed with ``chunk_tokens`` (0 = TRL's own fused head), for metadata and ``plan``."""
    if chunk_tokens <= 0:
        return {"loss": "trl", "why": "loss_chunk_tokens = 0: TRL's fused LM head"}
    usable, why = liger_status()
    return {"loss": "liger" if usable else "chunked", "why": why if usable else
            f"fused linear cross-entropy in chunks of {chunk_tokens} tokens (plain torch)"}
