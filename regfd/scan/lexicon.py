"""Lexicons: reviewable TOML data compiled once into one fast matcher.

A compliance officer edits `lexicons/*.toml`; nothing here encodes policy.
Each file declares its `kind` and a list of `[[entry]]` tables (see
lexicons/README.md for the format and the pattern syntax). Every file is
validated at load: a bad entry stops start-up with one line naming the file
and entry, never a surprise inside the milter callback.

All patterns of all files go into one Hyperscan database (prefilter); the
`regex` package then confirms the exact span of each reported hit and
checks proximity (`near`/`within`), per-entry `unless` phrases and the
exclusion file, which only ever run around the few hits. Before it, a
looser database on the compact text (`prefilter_expression`, five times
faster) says whether any hit is possible at all: in most text none is.
"""

from __future__ import annotations

import functools
import importlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from regfd.errors import ConfigError
from regfd.scan.company import COMPANY, Company, expand, load_company
from regfd.scan.evidence import Compact, Signals, Strongest, build_signals
from regfd.scan.message_model import MessageModel, load_message_model
from regfd.scan.normalize import fold
from regfd.scan.patternset import PatternSet

MATERIAL = "material"
EMBARGO = "embargo"
NON_GAAP = "non-gaap"
GAAP_RECONCILIATION = "gaap-reconciliation"
EXCLUSION = "exclusion"
SIGNAL = "signal"
EVIDENCE = "evidence"  # evidence.toml: the weights of the signals, not entries
MODEL = "model"  # model.toml: word weights fitted offline, for sentences just under the threshold
MESSAGE_MODEL = "message-model"  # message_model.toml: word weights fitted offline, read over the whole message
LEXICON_KINDS = (MATERIAL, EMBARGO, NON_GAAP, GAAP_RECONCILIATION, EXCLUSION, SIGNAL)
SEVERITIES = ("high", "medium", "low")
SCOPES = ("phrase", "sentence", "paragraph")

_ENTRY_KEYS = {"category", "pattern", "patterns", "severity", "near", "within", "unless", "unless_within", "scope",
               "note"}
_FILE_KEYS = {"kind", "description", "entry"}

# Between two words of a pattern: any run of whitespace, hyphens or slashes.
_SEP = r"[\s\-/()\[\]:]+"  # brackets and colons separate words too: "net income (gaap)", "revenue: $139m"
_OPT_SEP = r"[\s\-/]*"  # a hyphen inside a word: "non-gaap", "non gaap", "nongaap"
_WORD = r"[a-z0-9&'.$%,]+"  # a comma is part of a word here, so `~N` skips "150,000" and "yes, we"
_MAX_WITHIN = 50
_WINDOW_CHARS = 400  # how far back a reported hit's start is first looked for
_REPORT_LIMIT = 20_000  # Hyperscan reports per text before falling back
_PER_PATTERN_LIMIT = 25  # occurrences of one pattern examined per text


class PatternError(ValueError):
    """A lexicon pattern does not follow the documented syntax."""


def pattern_to_regex(pattern: str, *, compact: bool = False) -> str:
    """Translate the lexicon pattern syntax into a regular expression.

    Syntax (documented for reviewers in lexicons/README.md):
    words separated by spaces (a space matches any whitespace, hyphen or
    slash); a hyphen inside a word also matches nothing ("non-gaap" matches
    "nongaap"); `*` ends a word with any letters ("downgrad*"); `'` is optional
    ("we're" also matches "were"); `(a|b c)` alternatives, optionally followed
    by `?` (put the trailing space inside: "we (are )?going"); `~` stands for
    one arbitrary word and `~3` for up to three; `#` is a number ("$#").

    With `compact`, the expression is for text whose separator runs were
    each replaced by one space (see evidence.Compact): a space is then one
    literal space, which Hyperscan matches three times faster than a class.
    """
    sep = ",? " if compact else _SEP  # in the compact text a word may end with its clause's comma ("our coo, has told")
    opt_sep = " ?" if compact else _OPT_SEP
    # In the compact text a gap word may hold inner dots ("u.s", "3.5") but not end a sentence ("friday.").
    word = r"[a-z0-9&'$%,]+(?:\.[a-z0-9&'$%,]+)*" if compact else _WORD
    p = fold(" ".join(pattern.split()))
    if not p:
        raise PatternError("empty pattern")
    out: list[str] = []
    depth = 0
    i = 0
    n = len(p)
    while i < n:
        c = p[i]
        if c == " ":
            out.append(sep)
        elif c == "-":
            out.append(opt_sep)
        elif c == "*":
            out.append(r"[a-z0-9']*")
        elif c == "'":
            out.append("'?")
        elif c == "#":
            out.append(r"[0-9][0-9.,]*")
        elif c == "(":
            depth += 1
            out.append("(?:")
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise PatternError("unbalanced ')'")
            out.append(")")
        elif c == "|":
            if depth == 0:
                raise PatternError("'|' outside parentheses")
            out.append("|")
        elif c == "?":
            if i == 0 or p[i - 1] != ")":
                raise PatternError("'?' must follow ')'")
            out.append("?")
        elif c == "~":
            j = i + 1
            while j < n and p[j].isdigit():
                j += 1
            if j > i + 1:
                count = int(p[i + 1 : j])
                if not 1 <= count <= 10:
                    raise PatternError("'~N' needs N between 1 and 10")
                # up to N words, each followed by a separator (the pattern's own space follows)
                if j < n and p[j] == " ":
                    out.append(f"(?:{word}{sep}){{0,{count}}}")
                    j += 1
                else:
                    raise PatternError("'~N' must be followed by a word")
            else:
                out.append(word)
            i = j
            continue
        elif c.isalnum() or c in "&.$%":
            out.append(regex.escape(c))
        else:
            raise PatternError(f"character {c!r} is not allowed")
        i += 1
    if depth != 0:
        raise PatternError("unbalanced '('")
    body = "".join(out)
    first = p.lstrip("(")[:1]
    last = p.rstrip(")?")[-1:]
    prefix = r"\b" if first.isalnum() else ""
    suffix = r"\b" if (last.isalnum() or last in "*'#") else ""
    return f"{prefix}(?:{body}){suffix}"


def prefilter_expression(expression: str) -> str:
    """A lexicon expression loosened to run on the compact text (evidence.Compact) as a quick first test.

    In the compact text every run of separators is one space, so each
    separator class becomes a space: whatever the expression matches in the
    text, this matches in the compact text. Every other class and literal
    of a lexicon expression excludes separators, so it matches the same
    characters, and a word boundary stays a word boundary. The one catch is
    two separator classes with nothing between them on some path ("(we )?
    are", where `we` is absent), which take two characters of one run: such
    an expression gets ` *` for each (correct, but as slow as the original).
    Text where the prefilter finds nothing cannot hold a lexicon hit, and that
    is most text: 0.01 ms on 10 KB against 0.06 ms for the exact database.

    ` ?` would be the natural optional space, but Hyperscan 5.4 misses matches
    of ` ?`-joined alternations after some prefixes (`\\b(?:(?:run|ran) ?(?:out|low)
    ?...)` in "usual folder. agenda. ran out of money"), so the in-word hyphen
    is ` *` too; tests/test_lexicon_differential.py checks every entry.
    """
    marked = expression.replace(_SEP, "\\x01").replace(_OPT_SEP, "\\x02")
    if "\\s" in marked:  # a separator class this function does not know: it would not be a superset
        raise PatternError(f"no compact prefilter for {expression!r}")
    try:
        adjacent = _separators_adjacent(_sre_parser.parse(marked, 0))
    except (ValueError, TypeError, re.error):  # a construct _separators_adjacent does not know
        adjacent = True
    return marked.replace("\\x01", " *" if adjacent else " ").replace("\\x02", " *")


_sre_parser: Any = importlib.import_module("re._parser")  # the stdlib's regular expression parser (untyped)
_SEP_MARK, _OPT_MARK = 1, 2  # the characters prefilter_expression puts for the two separator classes


def _separators_adjacent(seq: Any) -> bool:
    """Whether two separator marks can follow each other directly in a match of the parsed `seq`."""
    return _flow(seq)[3]


def _flow(seq: Any) -> tuple[bool, bool, bool, bool]:
    """(can be empty, can start with a separator mark, can end with one, holds two adjacent)."""
    empty, first, last, adjacent = True, False, False, False
    for op, av in seq:
        name = str(op)
        if name == "LITERAL":
            item = (av == _OPT_MARK, av == _SEP_MARK, av == _SEP_MARK, False)
        elif name in ("IN", "ANY", "NOT_LITERAL"):
            item = (False, False, False, False)
        elif name == "AT":
            item = (True, False, False, False)
        elif name == "SUBPATTERN":
            item = _flow(av[-1])
        elif name == "BRANCH":
            parts = [_flow(b) for b in av[1]]
            item = (any(p[0] for p in parts), any(p[1] for p in parts), any(p[2] for p in parts),
                    any(p[3] for p in parts))
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, sub = av
            e, f, la, a = _flow(sub)
            item = (lo == 0 or e, f, la, a or (hi >= 2 and la and f))
        else:
            raise ValueError(name)
        adjacent = adjacent or item[3] or (last and item[1])
        first = first or (empty and item[1])
        last = item[2] or (item[0] and last)
        empty = empty and item[0]
    return empty, first, last, adjacent


def _compile(expr: str) -> regex.Pattern[str]:
    return regex.compile(expr, regex.ASCII | regex.IGNORECASE)


def _compile_reverse(expr: str) -> regex.Pattern[str]:
    """The same expression searched backwards: `.match(text, 0, end)` is
    anchored at `end`, so it finds a match ending exactly there in time
    proportional to the match, however long (separators are unbounded)."""
    return regex.compile(expr, regex.ASCII | regex.IGNORECASE | regex.REVERSE)


def scan_bytes(text: str) -> bytes:
    """`text` as Hyperscan input: one byte per character, so byte offsets are
    character offsets. A non-ASCII character becomes '?', which no lexicon
    expression can match and which, like every non-ASCII character under
    `regex.ASCII`, is neither a word character nor whitespace: the lexicon
    expressions match the bytes exactly where they match the text."""
    return text.encode("ascii", "replace")


@dataclass(frozen=True)
class Entry:
    """One compiled lexicon entry."""

    kind: str
    category: str
    pattern: str
    severity: str
    expression: str
    rx: regex.Pattern[str]
    near: regex.Pattern[str] | None
    within: int
    unless: tuple[regex.Pattern[str], ...]
    unless_within: int
    scope: str
    origin: str  # "file.toml entry 3", for error messages and reviewers
    rx_end: regex.Pattern[str] | None = None  # `rx` in reverse: anchored at a reported end


@dataclass(frozen=True)
class Hit:
    """A confirmed occurrence of an entry in normalized text."""

    entry: Entry
    start: int
    end: int
    why: str = ""  # for evidence hits: the score and the signals that fired
    excerpt_start: int = -1  # for evidence hits: the sentence, shown to the reviewer
    excerpt_end: int = -1


def _fail(origin: str, problem: str) -> ConfigError:
    return ConfigError(f"lexicon {origin}: {problem}")


def _pattern(origin: str, key: str, value: Any, company: Company | None = None,
             ) -> tuple[str, str, regex.Pattern[str]]:
    """(the pattern with its placeholders filled, as a reviewer reads it; its regex; compiled); an error quotes
    the pattern as written."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(origin, f"{key} must be a non-empty string (got {value!r})")
    try:
        shown = expand(value, company)
        expr = pattern_to_regex(shown)
        return shown, expr, _compile(expr)
    except (PatternError, regex.error, ValueError) as exc:
        raise _fail(origin, f"{key} {value!r}: {exc}") from None


def _int(origin: str, key: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_WITHIN:
        raise _fail(origin, f"{key} must be an integer from 1 to {_MAX_WITHIN} (got {value!r})")
    return value


def _entries(kind: str, table: dict[str, Any], origin: str, company: Company | None = None) -> list[Entry]:
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise _fail(origin, f"unknown key {sorted(unknown)[0]!r}")
    category = table.get("category", kind if kind not in (MATERIAL, SIGNAL) else None)
    if not isinstance(category, str) or not category.strip():
        raise _fail(origin, "category is required")
    severity = table.get("severity", "high")
    if severity not in SEVERITIES:
        raise _fail(origin, f"severity must be one of {', '.join(SEVERITIES)} (got {severity!r})")
    scope = table.get("scope", "phrase")
    if scope not in SCOPES:
        raise _fail(origin, f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
    if "scope" in table and kind != EXCLUSION:
        raise _fail(origin, "scope is only valid in an exclusion file")
    if ("pattern" in table) == ("patterns" in table):
        raise _fail(origin, "give exactly one of pattern or patterns")
    raw = table.get("patterns", [table.get("pattern")])
    if not isinstance(raw, list) or not raw:
        raise _fail(origin, "patterns must be a non-empty list of strings")
    near = None
    if "near" in table:
        near = _pattern(origin, "near", table["near"], company)[2]
    within = _int(origin, "within", table.get("within"), 6)
    unless_raw = table.get("unless", [])
    if not isinstance(unless_raw, list):
        raise _fail(origin, "unless must be a list of strings")
    unless = tuple(_pattern(origin, "unless", u, company)[2] for u in unless_raw)
    unless_within = _int(origin, "unless_within", table.get("unless_within"), 8)
    out = []
    for p in raw:
        shown, expr, rx = _pattern(origin, "pattern", p, company)  # a reviewer sees the names, not the placeholder
        out.append(Entry(kind, category.strip(), shown, severity, expr, rx, near, within, unless, unless_within, scope,
                         origin, _compile_reverse(expr)))
    return out


def _load_file(path: Path, company: Company | None = None) -> list[Entry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"lexicon {path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"lexicon {path}: invalid TOML: {exc}") from None
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"lexicon {path}: unknown key {sorted(unknown)[0]!r}")
    kind = data.get("kind")
    if kind not in LEXICON_KINDS:
        raise ConfigError(f"lexicon {path}: kind must be one of {', '.join(LEXICON_KINDS)} (got {kind!r})")
    tables = data.get("entry", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"lexicon {path}: needs at least one [[entry]]")
    entries: list[Entry] = []
    for n, table in enumerate(tables, 1):
        entries.extend(_entries(kind, table, f"{path.name} entry {n}", company))
    return entries


def _window_words(text: str, start: int, end: int, words: int) -> str:
    """The hit plus `words` words either side, as one string."""
    reach = words * 25 + 20
    before = text[max(0, start - reach) : start].split()[-words:] if words else []
    after = text[end : end + reach].split()[:words] if words else []
    return " ".join([*before, text[start:end], *after])


# A sentence ends at . ! ? followed by white space (any line end, CRLF
# included), or at a blank line; a paragraph ends at a blank line. Mail
# arrives with CRLF line ends: a bound that only knew "\n\n" or ". " would
# stretch an exclusion over the whole message.
_SENTENCE_BREAK = regex.compile(r"[.!?][\"')\]]*\s+|\r?\n[ \t]*\r?\n\s*")
_PARAGRAPH_BREAK = regex.compile(r"\r?\n[ \t]*\r?\n\s*")
_LOOK_BACK = 4000  # characters searched back for the start of a sentence or paragraph


def _bounds(text: str, start: int, end: int, scope: str) -> tuple[int, int]:
    """The sentence or paragraph around [start, end)."""
    if scope == "phrase":
        return start, end
    rx = _PARAGRAPH_BREAK if scope == "paragraph" else _SENTENCE_BREAK
    lo = max(0, start - _LOOK_BACK)
    for brk in rx.finditer(text, lo, start):
        lo = brk.end()
    after = rx.search(text, end)
    return lo, (after.end() if after else len(text))


@dataclass(frozen=True)
class Lexicons:
    """All entries, compiled; immutable and safe to share between threads."""

    entries: tuple[Entry, ...]
    matcher: PatternSet  # every occurrence, for exact spans
    presence: PatternSet  # one report per pattern, the fallback on floods
    files: tuple[str, ...]
    signals: Signals | None = None  # compositional evidence (signals.toml + evidence.toml)
    message_model: MessageModel | None = None  # the whole message's second opinion (message_model.toml)
    prefilter: PatternSet | None = None  # `prefilter_expression` of every entry, on the compact text

    def categories(self, kind: str) -> set[str]:
        return {e.category for e in self.entries if e.kind == kind}

    def _raw_hits(self, text: str, compact: bytes | None = None) -> list[tuple[Entry, int, int]]:
        """(entry, start, end) of every lexicon hit; `compact` is `Compact(text).data` when the caller has it."""
        if self.prefilter is not None:
            if not self.prefilter.any(Compact(text).data if compact is None else compact):
                return []  # no hit is possible: the exact scan would report nothing
        data = scan_bytes(text)
        reports, truncated = self.matcher.matches(data, limit=_REPORT_LIMIT)
        if not truncated:
            return self._confirm_reports(text, reports)
        ids = self.presence.ids(data)
        hits = []
        for pid in sorted(ids):
            entry = self.entries[pid]
            for k, m in enumerate(entry.rx.finditer(text)):
                if k >= _PER_PATTERN_LIMIT:
                    break
                hits.append((entry, m.start(), m.end()))
        return hits

    def _confirm_reports(self, text: str, reports: list[tuple[int, int]]) -> list[tuple[Entry, int, int]]:
        hits = []
        seen: dict[int, int] = {}
        for pid, end in reports:
            count = seen.get(pid, 0)
            if count >= _PER_PATTERN_LIMIT:
                continue
            entry = self.entries[pid]
            start = -1
            for m in entry.rx.finditer(text, max(0, end - _WINDOW_CHARS), end, overlapped=False):
                if m.end() == end:
                    start = m.start()
            if start < 0:
                # Hyperscan reports every end of every match; the forward
                # window misses a match that starts before it (a phrase
                # spread over a long run of separators) or one hidden behind
                # an overlapping match, so look backwards from the end itself.
                rx_end = entry.rx_end or _compile_reverse(entry.expression)
                back = rx_end.match(text, 0, end)
                if back is None:
                    continue
                start = back.start()
            seen[pid] = count + 1
            hits.append((entry, start, end))
        return hits

    def find(self, text: str, topics: bool = True, strongest: Strongest | None = None,
             replies: Sequence[tuple[int, int]] | None = None) -> list[Hit]:
        """Confirmed hits of every kind in normalized `text`, exclusions applied.

        Exclusion entries are consumed here: a hit overlapping an excluded
        phrase, or inside the sentence/paragraph of a sentence/paragraph-scope
        exclusion, is dropped.
        """
        compact = Compact(text)
        raw = self._raw_hits(text, compact.data)
        hits = self._confirmed(text, raw) if raw else []
        if self.signals is None:
            return hits
        material = [i for i, h in enumerate(hits) if h.entry.kind == MATERIAL]
        evidence, kept = self.signals.find(text, [(hits[i].start, hits[i].end, hits[i].entry.category)
                                                  for i in material], topics=topics, strongest=strongest,
                                           replies=replies, compact=compact)
        dropped = {i for n, i in enumerate(material) if n not in kept}
        out = [h for i, h in enumerate(hits) if i not in dropped]
        for n, i in enumerate(material):
            if n in kept:
                ev = kept[n]
                out[out.index(hits[i])] = Hit(hits[i].entry, hits[i].start, hits[i].end,
                                              f"{hits[i].entry.origin}; {ev.explain()}", ev.lo, ev.hi)
        excluded = [_bounds(text, s, e, entry.scope) for entry, s, e in raw if entry.kind == EXCLUSION]
        # A topic sentence worded exactly as the sentence of a phrase finding of its category adds
        # nothing ("We got hacked." two hundred times is one finding, not the phrase's and the topic's).
        reported = {(hits[i].entry.category, text[kept[n].lo:kept[n].hi]) for n, i in enumerate(material) if n in kept}
        out.extend(Hit(_evidence_entry(ev.category, ev.origin), ev.start, ev.end, ev.explain(), ev.lo, ev.hi)
                   for ev in evidence if not any(lo < ev.end and ev.start < hi for lo, hi in excluded)
                   and (ev.category, text[ev.lo:ev.hi]) not in reported)
        return out

    def _confirmed(self, text: str, raw: list[tuple[Entry, int, int]]) -> list[Hit]:
        """Lexicon hits that survive the exclusions and their entry's `near` and `unless`."""
        excluded = [_bounds(text, s, e, entry.scope) for entry, s, e in raw if entry.kind == EXCLUSION]
        hits = []
        for entry, s, e in raw:
            if entry.kind == EXCLUSION:
                continue
            if any(lo < e and s < hi for lo, hi in excluded):
                continue
            if entry.near is not None and not entry.near.search(_window_words(text, s, e, entry.within)):
                continue
            if entry.unless:
                window = _window_words(text, s, e, entry.unless_within)
                if any(u.search(window) for u in entry.unless):
                    continue
            hits.append(Hit(entry, s, e))
        return hits


def load_lexicons(directory: Path, cache_dir: Path | None = None) -> Lexicons:
    """Load, validate and compile every `*.toml` lexicon file in `directory`.

    With `cache_dir`, the compiled Hyperscan databases are cached there,
    keyed by the compiled expressions themselves, so an edited lexicon never
    loads a stale database. Opt-in, and callers pass a directory only regfd
    may write (state_dir/cache): whoever can write it could plant a database
    that matches nothing and silently switch the content policy off.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"lexicon directory {directory}: not a directory")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError(f"lexicon directory {directory}: no *.toml lexicon files")
    entries: list[Entry] = []
    evidence_file: Path | None = None
    model_file: Path | None = None
    message_model: MessageModel | None = None
    kinds = {path: _file_kind(path) for path in files}
    company_files = [path for path, kind in kinds.items() if kind == COMPANY]
    if len(company_files) > 1:
        raise ConfigError(f"lexicon directory {directory}: more than one file of kind \"company\"")
    company = load_company(company_files[0]) if company_files else None
    for path in files:
        kind = kinds[path]
        if kind == COMPANY:
            continue
        if kind == MESSAGE_MODEL:
            message_model = load_message_model(path, cache_dir)
            continue
        if kind == EVIDENCE:
            evidence_file = path
            continue
        if kind == MODEL:
            model_file = path
            continue
        entries.extend(_load_file(path, company))
    signal_entries = [e for e in entries if e.kind == SIGNAL]
    entries = [e for e in entries if e.kind != SIGNAL]
    try:
        signals = build_signals(signal_entries, evidence_file, cache_dir,
                                lambda p: pattern_to_regex(p, compact=True), _compile_reverse, model_file)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"lexicon {directory}: signal patterns do not compile together: {exc}") from None
    try:
        expressions = [e.expression for e in entries]
        matcher = PatternSet(expressions, single_match=False, cache_dir=cache_dir)
        presence = PatternSet(expressions, single_match=True, cache_dir=cache_dir)
        prefilter = PatternSet([prefilter_expression(e) for e in expressions], single_match=True, cache_dir=cache_dir)
    except Exception as exc:  # Hyperscan names the pattern id; map it back
        raise ConfigError(f"lexicon {directory}: patterns do not compile together: {exc}") from None
    return Lexicons(tuple(entries), matcher, presence, tuple(p.name for p in files), signals, message_model,
                    prefilter)


def _file_kind(path: Path) -> object:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # _load_file reports it with the precise reason


@functools.lru_cache(maxsize=64)
def _evidence_entry(category: str, origin: str) -> Entry:
    """The entry an evidence hit is reported under: a material finding of medium severity."""
    return Entry(MATERIAL, category, "", "medium", "", _compile(r"(?!)"), None, 6, (), 8, "phrase",
                 f"{origin} (topic:{category})")
