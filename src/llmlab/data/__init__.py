"""llmlab's data system: Data-Juicer-style recipes of operators over file, SQL and HTTP sources.

llmlab data run recipes/notes.yaml      # or: from llmlab.data import run_recipe
llmlab data ops                         # every operator with its arguments
llmlab data analyze out.jsonl           # statistics, histograms, Markdown report
"""


def run_recipe(*args, **kwargs):
    from llmlab.data.executor import run_recipe as _run

    return _run(*args, **kwargs)


__all__ = ["run_recipe"]
