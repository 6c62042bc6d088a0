"""Regenerate the bundled post-training datasets (deterministic): python src/llmlab/assets/posttrain/build.py

- notes-qa.jsonl     SFT conversations: short interview-style Q&A on the notes' topics (gradients,
                     normalization, dropout, attention, LoRA, quantization, RLHF ...). The answers were
                     written by hand for this project as one- or two-sentence summaries in the notes'
                     "面试回答" style (English, so the 135M SmolLM2 can learn them in minutes on a CPU).
- notes-prefs.jsonl  DPO / reward pairs, one per question: chosen = its right answer (from QA), rejected =
                     a bad answer of one of three kinds, taken in turn (question i gets kind i mod 3):
                       0 evasive    a hand-written non-answer from EVASIVE (hedges, answers nothing),
                                    some quoting the question;
                       1 wrong      a confidently wrong answer, written by hand for this project by
                                    negating or swapping the key claim of the right answer (WRONG,
                                    one per question, same style and length as the right one);
                       2 off-topic  a fluent answer to a question the prompt did not ask (OFF_TOPIC,
                                    hand-written, everyday subjects, never a QA answer).
                     Every EVASIVE / OFF_TOPIC entry is used once, so held-out rejected texts are
                     never seen in training, only their kind.
                     No rejected text is any question's chosen answer: the earlier version used
                     another question's right answer as the rejected side, so DPO learned to push
                     down answers it also had to push up, and the held-out margin fell (see
                     docs/post-training.md). The three kinds are what a model can learn to avoid
                     on questions it has not seen: hedging, contradicting the claim, changing
                     the subject.
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


# Confidently wrong answers, one per QA entry in the same order: each negates or swaps the key claim
# of the right answer while keeping its style, so the pair differs in what is claimed, not in tone.
WRONG = [
    "Backpropagation adds many large derivatives, such as unsaturated sigmoid slopes, so the gradient grows layer by layer and the last layers stop learning.",
    "Repeated multiplication by weights or Jacobians smaller than one makes the gradient shrink exponentially with depth, so updates become tiny and training stalls.",
    "Remove gradient clipping, initialize with large weights, drop normalization layers and residual connections, and raise the learning rate.",
    "The skip path removes the identity term from the gradient, so it cannot reach early layers and deep networks stop training.",
    "During inference it zeroes random activations and leaves the rest unscaled, which makes units co-adapt and increases overfitting; during training it is turned off.",
    "LayerNorm normalizes each feature across the batch, while BatchNorm normalizes across the features of one example, so BatchNorm works with any batch size and suits Transformers.",
    "For inputs near zero its output flattens at 1, so its derivative is very large and gradients explode.",
    "It is expensive, saturates for positive inputs, and kills gradients in deep networks.",
    "Weights are drawn with variance 1 divided by fan-in plus fan-out, which keeps activation variance stable through sigmoid layers.",
    "Weights are drawn with variance 2 divided by fan-in, which keeps signals stable only for ReLU layers.",
    "Adam uses one fixed step size for every parameter and ignores the history of the gradient and its square.",
    "Each token only looks at itself and the values are averaged with equal weights, so no token mixes information from the rest of the sequence.",
    "Dot products shrink with dimension; multiplying by its square root keeps the softmax from becoming too flat.",
    "Several heads all attend in the same subspace, so the model tracks only one relation at a time, just more slowly.",
    "Attention already knows the order of the tokens, so positional encodings are unnecessary and only add noise.",
    "Positions are processed one step at a time, just like in an RNN; Transformers are faster only because they have fewer parameters.",
    "Its gates erase the cell state after every step, which makes the vanishing gradient of plain RNNs worse.",
    "A GRU adds more gates and a second cell state to the LSTM, so it is larger and always better.",
    "Left-to-right next token prediction, and sentence ordering, which predicts the position of each sentence in the document.",
    "LoRA retrains all pretrained weights at full rank and adds a large dense layer beside them, so more parameters are trained than in full fine-tuning.",
    "With B at zero the model's output is zero, so training starts from a blank model and has to relearn everything.",
    "Multiply the frozen weight by A and divide it by B; inference then needs the base model and the adapter running side by side.",
    "The model is trained in full precision and quantized only afterwards, with no simulation of low precision during training.",
    "The model is retrained from scratch with low-bit integer weights, and calibration data is never used.",
    "The model is trained from random initialization on raw web text, with the loss on every token including the prompt.",
    "The policy is trained with plain supervised learning on human answers; no reward model, PPO or KL penalty is involved.",
    "DPO first trains a reward model, then samples answers from the policy and optimizes them with PPO.",
    "Sample one answer per prompt, keep it whatever its score, and fine-tune on every answer including the worst.",
    "It clips the reward to between minus one and one, so the policy can move as far as it likes in one update.",
    "GRPO samples a single answer per prompt and uses a learned value network to estimate its advantage.",
    "A language model trained to generate the preferred answer word by word, with no scalar score at all.",
    "Queries of earlier tokens are discarded, and every new token recomputes attention over the whole sequence from scratch.",
]

# Evasive non-answers, each used once ({q} = the question); they hedge and answer nothing.
EVASIVE = [
    "That is a good question. It really depends on the situation, so there is no single answer I can give.",
    "I would rather not give a definite answer to \"{q}\"; people disagree about it and it varies from case to case.",
    "Hmm, hard to say. Many factors are involved, so you should look it up in a textbook.",
    "It depends. Some say one thing and some say another, so I cannot really tell you.",
    "I am not sure about that one. Maybe ask someone who works on it every day.",
    "\"{q}\" is a complicated question; the answer changes with the setting, so I will leave it open.",
    "There are several points of view on this, and I do not want to pick one without more context.",
    "Honestly, it is difficult to explain briefly. It is best learned by experience rather than from a short answer.",
    "That topic is still debated, so any answer I give could be misleading. Let us not go into it.",
    "I could answer \"{q}\" in many ways, and none of them would be complete, so I will skip it.",
    "Good point to think about. It is one of those things that everyone understands a little differently.",
]

# Fluent answers to everyday questions nobody asked here (never one of the QA answers).
OFF_TOPIC = [
    "Bake the bread at 220 degrees for about thirty minutes, until the crust is brown and it sounds hollow when tapped.",
    "The Eiffel Tower was finished in 1889 for the World's Fair in Paris and is about 330 metres tall.",
    "Water tomato plants deeply twice a week in the morning, so the roots grow down and the leaves stay dry.",
    "A marathon is 42.195 kilometres long, a distance fixed at the 1908 London Olympics.",
    "The Moon's phases come from the changing angle between the Sun, the Earth and the Moon over about 29.5 days.",
    "To remove a coffee stain, blot it with cold water and a little dish soap before it dries.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts.",
    "The Great Wall of China was built and rebuilt over many centuries, mostly to keep out raids from the north.",
    "Tune the low E string first, then tune each higher string against the fifth fret of the one below it.",
    "Cats purr by vibrating the muscles of the larynx, both when they are content and when they are stressed.",
]

REJECTED_KINDS = ("evasive", "wrong", "off-topic")


def rejected_answer(i: int, question: str) -> str:
    """The bad answer for question i: kind i mod 3, each pool entry used at most once."""
    kind = REJECTED_KINDS[i % 3]
    if kind == "evasive":
        return EVASIVE[i // 3].format(q=question)
    if kind == "wrong":
        return WRONG[i]
    return OFF_TOPIC[i // 3]


def main():
    rng = random.Random(0)
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in QA]
    write("notes-qa.jsonl", rows)
    prefs = []
    for i, (q, a) in enumerate(QA):
        prefs.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                      "chosen": a, "rejected": rejected_answer(i, q)})
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
