"""Agents: a tool registry, a ReAct loop, a sandbox for model-written Python, CoT / PoT reasoning."""
