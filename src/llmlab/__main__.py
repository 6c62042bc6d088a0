"""`python -m llmlab` is the same as the `llmlab` command."""

import sys

from llmlab.cli import main

sys.exit(main())
