"""A bf16 reference for tests/test_bf16.py: transformers' GPT-NeoX with every nn.Linear replaced by the
contract of csrc/precision.h — operands (input, weight, and in backward the output gradient) rounded to bf16,
products and sums in the model's own dtype (fp32 or float64), bias and its gradient unrounded."""
import torch


def round_bf16(t):
    """t rounded to the nearest bf16 (from its fp32 value, as gozaru rounds), kept in t's dtype."""
    return t.float().to(torch.bfloat16).to(t.dtype)


class Bf16Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        xr, wr = round_bf16(x), round_bf16(w)
        ctx.save_for_backward(xr, wr)
        ctx.has_bias = b is not None
        y = xr @ wr.T
        return y if b is None else y + b

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        gr = round_bf16(g)
        g2, x2 = gr.reshape(-1, g.shape[-1]), xr.reshape(-1, xr.shape[-1])
        return gr @ wr, g2.T @ x2, g.reshape(-1, g.shape[-1]).sum(0) if ctx.has_bias else None


def bf16_linears(model):
    """model with each nn.Linear computing through Bf16Linear (in place; returns model)."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.forward = (lambda m: (lambda x: Bf16Linear.apply(x, m.weight, m.bias)))(mod)
    return model
