"""BatchNorm (train and eval), LayerNorm and RMSNorm from formulas against torch's."""

import pytest
import torch

from llmlab.exp.blocks.norms import BatchNorm, LayerNorm, RMSNorm


@pytest.mark.parametrize(
    "shape, torch_cls",
    [
        ((8, 6), torch.nn.BatchNorm1d),
        ((8, 6, 5), torch.nn.BatchNorm1d),
        ((4, 6, 3, 3), torch.nn.BatchNorm2d),
    ],
)
def test_batchnorm_train_and_eval_match_torch(shape, torch_cls):
    torch.manual_seed(0)
    ours, theirs = BatchNorm(6, momentum=0.2), torch_cls(6, momentum=0.2)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(torch.linspace(0.5, 1.5, 6))
            module.bias.copy_(torch.linspace(-1, 1, 6))
    for step in range(3):  # several batches so the running statistics accumulate
        x = torch.randn(*shape) * (step + 1) + step
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    x = torch.randn(*shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_output_depends_on_batch_only_in_training():
    torch.manual_seed(0)
    bn, x = BatchNorm(4), torch.randn(8, 4)
    alone_first = bn(x[:4])[0]
    assert not torch.allclose(
        alone_first, bn(x)[0]
    )  # same sample, different batch → different output
    bn.eval()
    torch.testing.assert_close(bn(x[:4])[0], bn(x)[0])


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    ours, theirs = LayerNorm(10), torch.nn.LayerNorm(10)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
            module.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(4))
    x = torch.randn(3, 7, 10) * 4 + 2
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    ours, theirs = RMSNorm(10, eps=1e-6), torch.nn.RMSNorm(10, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.linspace(0.1, 2, 10))
        theirs.weight.copy_(torch.linspace(0.1, 2, 10))
    x = torch.randn(3, 7, 10) * 3
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
