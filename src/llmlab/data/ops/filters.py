"""Filters: length, word count, character ratios, repetition, language, stopwords, flagged words,
fields and file suffixes. Each keeps a record when its statistic lies in the configured range."""

from __future__ import annotations

from llmlab.data import textstats
from llmlab.data.ops.base import Filter, RangeFilter, register


@register("text_length_filter")
class TextLengthFilter(RangeFilter):
    """Keep records whose text length in characters is within [min, max]."""

    def statistic(self, text):
        return textstats.text_length(text)


@register("word_count_filter")
class WordCountFilter(RangeFilter):
    """Keep records whose word count (jieba for Chinese) is within [min, max]."""

    def statistic(self, text):
        return textstats.word_count(text)


@register("alnum_ratio_filter")
class AlnumRatioFilter(RangeFilter):
    """Keep records whose share of letters/digits is within [min, max]."""

    def statistic(self, text):
        return textstats.alnum_ratio(text)


@register("special_char_ratio_filter")
class SpecialCharRatioFilter(RangeFilter):
    """Keep records whose share of special symbols/control characters is within [min, max]."""

    def statistic(self, text):
        return textstats.special_char_ratio(text)


@register("char_repetition_filter")
class CharRepetitionFilter(RangeFilter):
    """Keep records whose repeated character n-gram share is within [min, max]."""

    def __init__(self, *, n: int = 10, min: float | None = None, max: float | None = 0.5):
        super().__init__(min=min, max=max)
        self.n = n

    def statistic(self, text):
        return textstats.char_repetition_ratio(text, self.n)


@register("word_repetition_filter")
class WordRepetitionFilter(RangeFilter):
    """Keep records whose repeated word n-gram share is within [min, max]."""

    def __init__(self, *, n: int = 5, min: float | None = None, max: float | None = 0.5):
        super().__init__(min=min, max=max)
        self.n = n

    def statistic(self, text):
        return textstats.word_repetition_ratio(text, self.n)


@register("language_filter")
class LanguageFilter(Filter):
    """Keep records whose language (langid) is in `languages` with confidence ≥ min_score."""

    def __init__(self, *, languages: list[str] | str = ("zh", "en"), min_score: float = 0.5):
        self.languages = {languages} if isinstance(languages, str) else set(languages)
        self.min_score = min_score

    def compute(self, record):
        return textstats.language(str(record.get(self.text_key) or ""))

    def keep(self, stat):
        code, score = stat
        return code in self.languages and score >= self.min_score


@register("stopword_ratio_filter")
class StopwordRatioFilter(RangeFilter):
    """Keep records whose share of stopwords (bundled Chinese+English list) is within [min, max]; real prose has many."""

    def __init__(self, *, min: float | None = 0.1, max: float | None = None):
        super().__init__(min=min, max=max)

    def statistic(self, text):
        return textstats.word_share(text, textstats.word_list("stopwords"))


@register("flagged_words_filter")
class FlaggedWordsFilter(RangeFilter):
    """Keep records whose share of flagged (obscene/toxic) words is at most `max`; add your own with `words`."""

    def __init__(self, *, max: float | None = 0.01, words: list[str] | None = None):
        super().__init__(min=None, max=max)
        self.vocabulary = textstats.word_list("flagged_words") | {w.lower() for w in words or ()}

    def statistic(self, text):
        return textstats.word_share(text, self.vocabulary)


@register("field_filter")
class FieldFilter(Filter):
    """Keep records whose `field` equals one of `values` (or, with `exists` only, merely has the field)."""

    def __init__(self, *, field: str, values: list | None = None, exists: bool = True):
        self.field, self.values, self.exists = field, values, exists

    def compute(self, record):
        return record.get(self.field, _MISSING)

    def keep(self, stat):
        if self.values is not None:
            return stat in self.values
        return (stat is not _MISSING) == self.exists


_MISSING = object()


@register("suffix_filter")
class SuffixFilter(Filter):
    """Keep records whose `field` (default `source`, the file path) ends with one of `suffixes`."""

    def __init__(self, *, suffixes: list[str] | str, field: str = "source"):
        self.suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
        self.field = field

    def compute(self, record):
        return str(record.get(self.field, ""))

    def keep(self, stat):
        return stat.lower().endswith(tuple(s.lower() for s in self.suffixes))
