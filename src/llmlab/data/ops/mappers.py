"""Text mappers: unicode fixes, whitespace/punctuation normalization, removal of HTML, links,
e-mails, IPs and copyright headers, sentence splitting. Each class is one recipe operator."""

from __future__ import annotations

import html
import re

from llmlab.data.ops.base import Mapper, register


@register("fix_unicode")
class FixUnicode(Mapper):
    """Fix broken Unicode (mojibake with intact bytes, odd quotes, HTML entities) with ftfy."""

    def __init__(
        self,
        *,
        normalization: str = "NFC",
        fullwidth_to_ascii: bool = False,
        uncurl_quotes: bool = True,
    ):
        if normalization not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"normalization must be NFC/NFKC/NFD/NFKD, not {normalization!r}")
        # Full-width punctuation is correct in Chinese, so ftfy's width fix is off by default;
        # Chinese quotes are curly (“…”), so a recipe for Chinese text turns uncurl_quotes off.
        self.normalization, self.fullwidth_to_ascii = normalization, fullwidth_to_ascii
        self.uncurl_quotes = uncurl_quotes

    def map(self, text):
        import ftfy

        return ftfy.fix_text(
            text,
            normalization=self.normalization,
            fix_character_width=self.fullwidth_to_ascii,
            uncurl_quotes=self.uncurl_quotes,
        )


_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000\ufeff]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@register("whitespace_normalization")
class WhitespaceNormalization(Mapper):
    """Collapse runs of spaces/tabs (incl. non-breaking and ideographic), strip lines, max one blank line."""

    def __init__(self, *, keep_newlines: bool = True):
        self.keep_newlines = keep_newlines

    def map(self, text):
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not self.keep_newlines or "\n" not in text:
            return _SPACES.sub(" ", text.replace("\n", " ")).strip()
        lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


_PUNCT_MAP = {
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'",
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00b4": "'", "\u2032": "'",
}  # fmt: skip
_FULLWIDTH_TO_ASCII = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}


@register("punctuation_normalization")
class PunctuationNormalization(Mapper):
    """Map curly quotes, dashes and ellipses to ASCII; optionally full-width forms too (off for Chinese)."""

    def __init__(self, *, fullwidth: bool = False):
        table = dict(_PUNCT_MAP)
        if fullwidth:
            table.update(_FULLWIDTH_TO_ASCII)
        self.table = str.maketrans({k: v for k, v in table.items() if len(k) == 1})

    def map(self, text):
        return text.translate(self.table)


_TAG = re.compile(r"<[^>]+>")
_BLOCK_TAGS = re.compile(
    r"<\s*/?\s*(p|div|br|li|tr|h[1-6]|ul|ol|table|section|article)\b[^>]*>", re.I
)
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)


@register("clean_html")
class CleanHtml(Mapper):
    """Strip HTML: drop <script>/<style>, turn block tags into newlines, unescape entities."""

    def __init__(self):
        pass

    def map(self, text):
        if "<" not in text and "&" not in text:
            return text
        text = _SCRIPT.sub("", text)
        text = _BLOCK_TAGS.sub("\n", text)
        text = _TAG.sub("", text)
        return re.sub(r"\n\s*\n+", "\n", html.unescape(text)).strip()


_LINK = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[^\s<>\"'\u3000-\u303f\uff08\uff09\uff0c\u3002]+", re.I
)


@register("clean_links")
class CleanLinks(Mapper):
    """Replace URLs (http, https, ftp, www.) with `repl` (default: remove)."""

    def __init__(self, *, repl: str = ""):
        self.repl = repl

    def map(self, text):
        if (
            "://" not in text and "www." not in text.lower()
        ):  # most texts have no link; skip the slow scan
            return text
        return _LINK.sub(self.repl, text)


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@register("clean_email")
class CleanEmail(Mapper):
    """Replace e-mail addresses with `repl` (default: remove)."""

    def __init__(self, *, repl: str = ""):
        self.repl = repl

    def map(self, text):
        return (
            _EMAIL.sub(self.repl, text) if "@" in text else text
        )  # the scan backtracks at every word


_IPV4 = r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
_IPV6 = r"(?<![:\w])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![:\w])|(?<![:\w])(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4})?(?![:\w])"
_IP = re.compile(f"{_IPV4}|{_IPV6}")


@register("clean_ip")
class CleanIp(Mapper):
    """Replace IPv4 and IPv6 addresses with `repl` (default: remove)."""

    def __init__(self, *, repl: str = ""):
        self.repl = repl

    def map(self, text):
        return _IP.sub(self.repl, text)


_COPYRIGHT_WORDS = re.compile(r"copyright|\(c\)|©|licen[cs]e|版权|all rights reserved", re.I)
_BLOCK_COMMENT = re.compile(r"^\s*/\*.*?\*/\s*", re.S)


@register("remove_copyright_header")
class RemoveCopyrightHeader(Mapper):
    """Remove a leading comment block (`/* */`, `#`, `//` or `--` lines) that mentions copyright or a licence."""

    def __init__(self):
        pass

    def map(self, text):
        block = _BLOCK_COMMENT.match(text)
        if block and _COPYRIGHT_WORDS.search(block.group(0)):
            return text[block.end() :]
        lines = text.split("\n")
        end = 0
        while end < len(lines) and re.match(r"\s*(#|//|--)", lines[end]):
            end += 1
        if end and _COPYRIGHT_WORDS.search("\n".join(lines[:end])):
            return "\n".join(lines[end:]).lstrip("\n")
        return text


_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])\s*|(?<=[.])\s+(?=[A-Z\"'\u4e00-\u9fff])")


@register("sentence_split")
class SentenceSplit(Mapper):
    """Put one sentence per line (Chinese 。！？； and English . ! ? endings)."""

    def __init__(self, *, separator: str = "\n"):
        self.separator = separator

    def map(self, text):
        parts = []
        for line in text.split("\n"):
            parts.extend(s.strip() for s in _SENTENCE_END.split(line) if s and s.strip())
        return self.separator.join(parts)


@register("lowercase")
class Lowercase(Mapper):
    """Lower-case the text (Chinese is unaffected)."""

    def __init__(self):
        pass

    def map(self, text):
        return text.lower()


@register("repair_mojibake")
class RepairMojibake(Mapper):
    """Undo UTF-8-read-as-Windows-1252 mojibake, recovering dropped bytes with a Chinese language model
    (`extra_corpus`: clean text files or folders of your domain to count besides the bundled news;
    `lm`: a packaged causal model, e.g. gemma3-270m, that picks among the n-gram's best fillings —
    the n-gram alone, with a warning, when that model is not installed; `passes`: how many times
    the language model revisits every damaged character, 2 letting each choice see the choices to
    its right too)."""

    def __init__(
        self,
        *,
        extra_corpus: str | list[str] | None = None,
        lm: str | None = None,
        passes: int = 1,
    ):
        from llmlab.data import charlm

        paths = [extra_corpus] if isinstance(extra_corpus, str) else list(extra_corpus or [])
        for path in paths:
            charlm.read_corpus(path)  # fail at recipe load, not on the first record
        self.extra_corpus = tuple(str(p) for p in paths)
        if lm is not None and not isinstance(lm, str):
            raise ValueError(
                f"repair_mojibake: lm must be a model name such as gemma3-270m, not {lm!r}"
            )
        self.lm = lm
        if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
            raise ValueError(f"repair_mojibake: passes must be a positive integer, not {passes!r}")
        self.passes = passes

    def map(self, text):
        from llmlab.data import charlm
        from llmlab.data.mojibake import LM_ORDER, repair

        ngram = charlm.model(LM_ORDER, self.extra_corpus) if self.extra_corpus else None
        if self.lm:
            from llmlab.data.lm_repair import repair_with_lm, scorer_or_none

            scorer = scorer_or_none(self.lm)
            if scorer is not None:
                return repair_with_lm(text, scorer, ngram=ngram, progress=True, passes=self.passes)
        return repair(text, lm=ngram)
