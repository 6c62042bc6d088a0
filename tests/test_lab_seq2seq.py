"""Encoder/decoder layers vs torch.nn.TransformerEncoderLayer/DecoderLayer (post-LN, copied
weights), and the seq2seq objective learning a toy task."""

import pytest
import torch

from llmlab.exp.blocks.seq2seq import (
    DecoderLayer,
    EncoderLayer,
    Seq2SeqTransformer,
    causal_mask,
    greedy_decode,
    seq2seq_loss,
    sinusoidal_positions,
)

D, HEADS, FF = 16, 4, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def copy_attention(ours, theirs):
    q, k, v = theirs.in_proj_weight.chunk(3)
    qb, kb, vb = theirs.in_proj_bias.chunk(3)
    for proj, w, b in ((ours.q_proj, q, qb), (ours.k_proj, k, kb), (ours.v_proj, v, vb)):
        proj.weight.copy_(w), proj.bias.copy_(b)
    ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def copy_common(ours, theirs, norms):
    copy_attention(ours.self_attn, theirs.self_attn)
    ours.ffn.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(theirs.linear2.state_dict())
    for name in norms:
        getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())


def randomize_norms(module):
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)


@torch.no_grad()
def test_encoder_layer_matches_torch():
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True).eval()
    randomize_norms(theirs)
    ours = EncoderLayer(D, HEADS, FF)
    copy_common(ours, theirs, ["norm1", "norm2"])
    x = torch.randn(2, 5, D)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    pad_mask = torch.zeros(2, 5).masked_fill(pad, float("-inf"))[:, None, None, :]
    torch.testing.assert_close(
        ours(x, pad_mask), theirs(x, src_key_padding_mask=pad), rtol=1e-4, atol=1e-5
    )


@torch.no_grad()
def test_decoder_layer_matches_torch():
    torch.manual_seed(1)
    theirs = torch.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True).eval()
    randomize_norms(theirs)
    ours = DecoderLayer(D, HEADS, FF)
    copy_common(ours, theirs, ["norm1", "norm2", "norm3"])
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    x, memory = torch.randn(2, 6, D), torch.randn(2, 4, D)
    expected = theirs(x, memory, tgt_mask=causal_mask(6), tgt_is_causal=True)
    torch.testing.assert_close(ours(x, memory, causal_mask(6)), expected, rtol=1e-4, atol=1e-5)


def test_sinusoidal_table_formula():
    table = sinusoidal_positions(10, 8)
    assert table[3, 2].item() == pytest.approx(
        torch.sin(torch.tensor(3 / 10000 ** (2 / 8))).item(), rel=1e-5
    )
    assert table[3, 3].item() == pytest.approx(
        torch.cos(torch.tensor(3 / 10000 ** (2 / 8))).item(), rel=1e-5
    )


def test_decoder_is_causal():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(8, 8, d_model=16, n_heads=2, n_layers=1, d_ff=32).eval()
    src, tgt = torch.randint(0, 8, (1, 5)), torch.randint(0, 8, (1, 6))
    changed = tgt.clone()
    changed[0, 4] = (tgt[0, 4] + 1) % 8
    a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # earlier positions cannot see position 4
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def reversal_batch(size, vocab, length, bos, generator=None):
    src = torch.randint(2, vocab, (size, length), generator=generator)
    return src, torch.cat([torch.full((size, 1), bos), src.flip(1)], dim=1)


# Why a schedule and a held-out batch: with a constant lr 5e-3 this post-LN model's loss spikes
# now and then (seed 0: held-out loss 0.15 at step 600, 0.38 at 800, 0.01 at 1000), and the old
# check read the last 32-sequence training batch, itself ±0.1 noise. Which side of 0.3 step 600
# landed on depended on the CPU's kernels (AVX-512: 0.365, ATEN_CPU_CAPABILITY=avx2: 0.33 on the
# same seed), so the test failed on one machine and passed on another. Warm-up plus linear decay
# settles it: held-out loss 0.017-0.062, accuracy 0.973-0.995 over seeds 0-4 and both kernel sets.
@pytest.mark.parametrize("positions, steps", [("sinusoidal", 800), ("learned", 200)])
def test_learns_to_reverse_sequences(positions, steps):
    torch.manual_seed(0)
    vocab, length, bos, warmup = 8, 5, 1, 50
    model = Seq2SeqTransformer(
        vocab, vocab, d_model=32, n_heads=2, n_layers=1, d_ff=64, positions=positions
    )
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, (steps - s) / (steps - warmup))
    )
    for _ in range(steps):
        loss = seq2seq_loss(model, *reversal_batch(32, vocab, length, bos))
        opt.zero_grad(), loss.backward(), opt.step(), schedule.step()
    held_out = torch.Generator().manual_seed(1234)
    src, tgt = reversal_batch(256, vocab, length, bos, held_out)
    model.eval()
    with torch.no_grad():
        eval_loss = seq2seq_loss(model, src, tgt).item()
        accuracy = (greedy_decode(model, src, bos, length) == src.flip(1)).float().mean().item()
    # untrained: loss ≈ ln 6 = 1.8, accuracy ≈ 1/6
    assert eval_loss < 0.2 and accuracy > 0.9, (eval_loss, accuracy)


@torch.no_grad()
def test_rotary_attention_depends_only_on_relative_position():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(
        4, 4, d_model=16, n_heads=2, n_layers=1, d_ff=32, positions="rotary"
    ).eval()
    model.encode(torch.full((1, 7), 2))  # the same token everywhere: only positions differ
    weights = model.encoder[0].self_attn.last_weights[0, 0]
    scores = weights.log()  # log-softmax differs from q·k by a per-row constant
    rows = scores - scores[:, :1]
    # Toeplitz: score(i, j) − score(i, 0) depends on (i − j, i) only through the offset,
    # so consecutive rows are shifts of each other.
    torch.testing.assert_close(
        rows[3, 1:4] - rows[3, 0:3], rows[4, 2:5] - rows[4, 1:4], rtol=1e-4, atol=1e-4
    )
