"""Post-training pieces that are not losses: reward/value heads, rollouts, rule rewards, preference
data, best-of-n sampling, and the runners behind `llmlab train sft|lora|reward|dpo|ppo|grpo`."""
