"""Every data operator; importing this package registers them all (see `ops/base.py`)."""

from llmlab.data.ops import dedup, filters, formatters, mappers, markdown_qa, perplexity, selectors  # noqa: F401
from llmlab.data.ops.base import OPS, Op, RecipeError, build_op, op_arguments, register  # noqa: F401
