"""Every data operator; importing this package registers them all (see `ops/base.py`)."""

from llmlab.data.ops import (  # noqa: F401
    dedup,
    filters,
    formatters,
    instruct,
    mappers,
    markdown_qa,
    perplexity,
    rag_pairs,
    selectors,
    self_instruct,
)
from llmlab.data.ops.base import OPS, Op, RecipeError, build_op, op_arguments, register  # noqa: F401
