"""Regenerate the bundled post-training datasets (deterministic): python src/llmlab/assets/posttrain/build.py

- notes-qa.jsonl     SFT conversations: short interview-style Q&A on the notes' topics (gradients,
                     normalization, dropout, attention, LoRA, quantization, RLHF ...). The answers were
                     written by hand for this project as one- or two-sentence summaries in the notes'
                     "面试回答" style (English, so the 135M SmolLM2 can learn them in minutes on a CPU).
- notes-prefs.jsonl  DPO / reward pairs: for each question, chosen = its answer, rejected = the answer
                     to another question (a fluent but wrong reply), rotated deterministically.
- arith.jsonl        GRPO / PPO / best-of-n prompts: "What is a + b?" (a, b in 1..20, seeded) with
                     the answer, asking for the form "The answer is N.".
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM = "You are a concise machine-learning tutor."

QA = [
    ("What causes vanishing gradients?", "Backpropagation multiplies many small derivatives, such as saturated sigmoid slopes, so the gradient shrinks layer by layer and early layers stop learning."),
    ("What causes exploding gradients?", "Repeated multiplication by weights or Jacobians larger than one makes the gradient grow exponentially with depth, so updates become huge and training diverges."),
    ("How do you fix exploding gradients?", "Clip the gradient norm, use careful initialization, add normalization layers and residual connections, and lower the learning rate."),
    ("Why do residual connections help deep networks?", "The skip path adds an identity term to the gradient, so it can flow straight to early layers and very deep networks still train."),
    ("What does dropout do?", "During training it zeroes random activations and rescales the rest, which stops units from co-adapting and reduces overfitting; at inference it is turned off."),
    ("What is the difference between BatchNorm and LayerNorm?", "BatchNorm normalizes each feature across the batch, while LayerNorm normalizes across the features of one example, so LayerNorm works with any batch size and suits Transformers."),
    ("Why does the sigmoid saturate?", "For large positive or negative inputs its output flattens near 1 or 0, so its derivative is almost zero and gradients vanish."),
    ("Why is ReLU popular?", "It is cheap, does not saturate for positive inputs, and keeps gradients alive in deep networks."),
    ("What is He initialization?", "Weights are drawn with variance 2 divided by fan-in, which keeps activation variance stable through ReLU layers."),
    ("What is Xavier initialization?", "Weights are drawn with variance 2 divided by fan-in plus fan-out, which keeps signals stable for tanh and sigmoid layers."),
    ("What does Adam do?", "Adam keeps running averages of the gradient and its square and divides one by the square root of the other, giving each parameter its own step size."),
    ("What is self-attention?", "Each token builds a query, key and value; softmax of query-key dot products weights the values, so every token mixes information from the whole sequence."),
    ("Why scale attention scores by the square root of the head dimension?", "Dot products grow with dimension; dividing by its square root keeps the softmax from saturating."),
    ("Why use multi-head attention?", "Several heads attend in different subspaces at once, so the model can track several relations in parallel."),
    ("Why do Transformers need positional encoding?", "Attention ignores order, so positions are injected with sinusoidal, learned or rotary encodings."),
    ("Why do Transformers train faster than RNNs?", "All positions are processed in parallel with matrix products instead of one step at a time."),
    ("What problem does the LSTM solve?", "Its gated cell state carries information across many steps, which eases the vanishing gradient of plain RNNs."),
    ("How does a GRU differ from an LSTM?", "A GRU merges the gates into update and reset gates and has no separate cell state, so it is smaller and often as good."),
    ("What are BERT's pretraining tasks?", "Masked language modelling, which predicts hidden tokens, and next sentence prediction, which classifies whether two sentences follow each other."),
    ("What is LoRA?", "LoRA freezes the pretrained weights and learns a low-rank update B times A beside them, so only a tiny number of parameters are trained."),
    ("Why is B initialized to zero in LoRA?", "With B at zero the update B times A is zero, so training starts exactly from the pretrained model."),
    ("How do you merge a LoRA adapter?", "Add B times A times the scaling alpha over r to the frozen weight; inference then costs the same as the base model."),
    ("What is quantization-aware training?", "Fake quantization is simulated in the forward pass during training, so the weights learn to tolerate low precision."),
    ("What is post-training quantization?", "Weights, and sometimes activations, of a trained model are mapped to low-bit integers using calibration data, without retraining."),
    ("What is supervised fine-tuning?", "The pretrained model is trained on prompt and response pairs, with the loss only on the response tokens, to follow instructions."),
    ("What is RLHF?", "A reward model is trained on human preference pairs, then the policy is optimized with PPO to raise that reward while a KL penalty keeps it close to the SFT model."),
    ("What is DPO?", "DPO trains directly on preference pairs with a logistic loss on the policy's log-ratio to a reference model, so no reward model or sampling is needed."),
    ("What is rejection sampling in alignment?", "Sample several answers per prompt, score them with a reward model or rule, keep the best, and fine-tune on them."),
    ("What does the PPO clip do?", "It limits the probability ratio between the new and old policy, so one update cannot move the policy too far."),
    ("What is GRPO?", "GRPO samples a group of answers per prompt and uses each answer's reward relative to the group mean as its advantage, so no value network is needed."),
    ("What is a reward model?", "A language model with a scalar head trained so that preferred answers score higher than rejected ones."),
    ("What is the KV cache?", "Keys and values of earlier tokens are stored, so each new token only computes attention for itself during generation."),
]


def main():
    rng = random.Random(0)
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in QA]
    write("notes-qa.jsonl", rows)
    prefs = []
    for i, (q, a) in enumerate(QA):
        wrong = QA[(i + 7) % len(QA)][1]
        prefs.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                      "chosen": a, "rejected": wrong})
    write("notes-prefs.jsonl", prefs)
    arith = []
    for _ in range(64):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        arith.append({"prompt": f"What is {a} + {b}? Reply with 'The answer is N.'", "answer": str(a + b)})
    write("arith.jsonl", arith)


def write(name, rows):
    with open(HERE / name, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
