"""The document store behind the QA envs' ``search[...]`` and ``lookup[...]`` actions.

A :class:`DocumentStore` holds titled documents split into sentences and answers three requests:

* :meth:`DocumentStore.search`: an exact title match first (case and spacing ignored), else the
  best document by BM25 over titles and text, else (no document shares a word with the query) a
  list of similar titles by character-trigram overlap. This is the ReAct Wikipedia API
  (Yao et al. 2023, Sec. 3.1) rebuilt over a local corpus.
* :meth:`DocumentStore.sentences`: a document's sentences, for ``lookup``.
* :class:`LookupState`: ``lookup[keyword]``'s cursor, the next sentence containing the keyword in
  the last document searched.

BM25 runs over an inverted index whose postings store each (term, document) pair's length-normalised
term weight, so a query costs one vectorised sum per query term, not a scan of the corpus: search
stays in milliseconds at 100k paragraphs (``benchmarks/bench_qa.py`` measures it against a linear
scan).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)
# Function words carry no signal for entity search and have the longest postings lists.
STOPWORDS: frozenset[str] = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "they",
        "this",
        "to",
        "was",
        "were",
        "which",
        "who",
        "with",
    }
)
#: BM25 parameters (Robertson and Zaragoza 2009): term-frequency saturation and length normalisation.
BM25_K1 = 1.2
BM25_B = 0.75
#: Title words count this many times in a document's bag of words, so "search[Ed Wood]" prefers
#: the article *about* Ed Wood over articles that mention him.
TITLE_WEIGHT = 3
#: Query terms beyond this many are ignored: a 1 MB "entity" must not cost a pass per word.
MAX_QUERY_TERMS = 32
#: Characters of the query used for similar-title matching.
MAX_SIMILAR_QUERY_CHARS = 200


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of ``text`` (Unicode letters and digits), stopwords kept."""
    return _TOKEN.findall(text.lower())


def index_terms(text: str) -> list[str]:
    """The terms BM25 indexes for ``text``: :func:`tokenize` without :data:`STOPWORDS`."""
    return [token for token in tokenize(text) if token not in STOPWORDS]


def normalize_title(title: str) -> str:
    """The key exact title matching uses: lowercase, whitespace collapsed, ends stripped."""
    return " ".join(title.lower().split())


def _trigrams(text: str) -> set[str]:
    padded = f"  {normalize_title(text)} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


@dataclass(frozen=True)
class Document:
    """A titled document split into sentences.

    Attributes:
        title: The document title (what ``search[...]`` matches exactly).
        sentences: The text, one sentence per item, in order.
    """

    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        """The sentences joined by single spaces."""
        return " ".join(sentence.strip() for sentence in self.sentences)


@dataclass(frozen=True)
class SearchResult:
    """What :meth:`DocumentStore.search` found.

    Attributes:
        document: The document shown, or ``None`` on a miss.
        exact: Whether ``document``'s title equals the query (case and spacing ignored).
        similar: Other titles worth trying: the next BM25 hits, or similar titles on a miss.
    """

    document: Document | None
    exact: bool
    similar: tuple[str, ...] = ()


class DocumentStore:
    """Titled documents with exact-title lookup, BM25 ranking and similar-title suggestions.

    Args:
        documents: The corpus. Titles need not be unique; an exact query then returns the first
            document with that title.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    def __init__(self, documents: Iterable[Document], *, k1: float = BM25_K1, b: float = BM25_B):
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 needs k1 >= 0 and b in [0, 1], got k1={k1}, b={b}")
        self.documents: list[Document] = list(documents)
        self.k1, self.b = k1, b
        self._by_title: dict[str, int] = {}
        term_counts: list[Counter[str]] = []
        for doc_id, document in enumerate(self.documents):
            self._by_title.setdefault(normalize_title(document.title), doc_id)
            counts = Counter(index_terms(document.text))
            for term in index_terms(document.title):
                counts[term] += TITLE_WEIGHT
            term_counts.append(counts)
        self._build_index(term_counts)
        self._trigram_index: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.documents)

    def _build_index(self, term_counts: list[Counter[str]]) -> None:
        num_docs = len(term_counts)
        lengths = np.array([sum(c.values()) for c in term_counts], dtype=np.float64)
        average_length = float(lengths.mean()) if num_docs and lengths.mean() > 0 else 1.0
        postings_ids: dict[str, list[int]] = defaultdict(list)
        postings_tf: dict[str, list[int]] = defaultdict(list)
        for doc_id, counts in enumerate(term_counts):
            for term, tf in counts.items():
                postings_ids[term].append(doc_id)
                postings_tf[term].append(tf)
        # Store, per posting, BM25's term weight tf*(k1+1) / (tf + k1*(1-b+b*len/avglen)); a query
        # then only multiplies by each term's idf and sums (Robertson and Zaragoza 2009, eq. 3.15).
        norm = self.k1 * (1.0 - self.b + self.b * lengths / average_length)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._idf: dict[str, float] = {}
        for term, ids in postings_ids.items():
            id_array = np.asarray(ids, dtype=np.int64)
            tf = np.asarray(postings_tf[term], dtype=np.float64)
            self._postings[term] = (id_array, tf * (self.k1 + 1.0) / (tf + norm[id_array]))
            df = len(ids)
            # The "+1" form of idf stays positive for terms in more than half of the documents.
            self._idf[term] = math.log(1.0 + (num_docs - df + 0.5) / (df + 0.5))

    # ------------------------------------------------------------------ queries
    def find_title(self, title: str) -> Document | None:
        """The first document whose title equals ``title`` (case and spacing ignored), or None."""
        doc_id = self._by_title.get(normalize_title(title))
        return None if doc_id is None else self.documents[doc_id]

    def query_terms(self, query: str) -> list[str]:
        """The distinct indexed terms of ``query`` that BM25 scores (at most :data:`MAX_QUERY_TERMS`)."""
        terms: list[str] = []
        for term in index_terms(query[: 64 * MAX_QUERY_TERMS]):
            if term in self._postings and term not in terms:
                terms.append(term)
                if len(terms) == MAX_QUERY_TERMS:
                    break
        return terms

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (zeros where no query term occurs)."""
        scores = np.zeros(len(self.documents), dtype=np.float64)
        for term in self.query_terms(query):
            ids, weights = self._postings[term]
            scores[ids] += self._idf[term] * weights
        return scores

    def rank(self, query: str, k: int = 5) -> list[int]:
        """Ids of the (at most ``k``) best BM25 documents with a positive score, best first.

        Ties go to the earlier document, so rankings are deterministic.
        """
        if k < 1 or not self.documents:
            return []
        scores = self.bm25_scores(query)
        positive = np.flatnonzero(scores > 0)
        if positive.size == 0:
            return []
        if positive.size > k:
            top = positive[np.argpartition(-scores[positive], k - 1)[:k]]
            # argpartition's cut may split a tie; widen to every document tied with the k-th best.
            threshold = scores[top].min()
            top = positive[scores[positive] >= threshold]
        else:
            top = positive
        order = top[np.lexsort((top, -scores[top]))]
        return [int(doc_id) for doc_id in order[:k]]

    def similar_titles(self, query: str, k: int = 5) -> list[str]:
        """Up to ``k`` titles sharing the most character trigrams with ``query`` (for misspellings)."""
        if self._trigram_index is None:
            self._build_trigram_index()
        assert self._trigram_index is not None
        grams = _trigrams(query[:MAX_SIMILAR_QUERY_CHARS])
        if not grams or not self.documents:
            return []
        overlap = np.zeros(len(self.documents), dtype=np.float64)
        for gram in grams:
            ids = self._trigram_index.get(gram)
            if ids is not None:
                overlap[ids] += 1.0
        candidates = np.flatnonzero(overlap > 0)
        if candidates.size == 0:
            return []
        # Dice coefficient between trigram sets, so long titles do not win by size alone.
        sizes = self._title_gram_counts[candidates]
        dice = 2.0 * overlap[candidates] / (sizes + len(grams))
        titles: list[str] = []
        for doc_id in candidates[np.lexsort((candidates, -dice))]:
            title = self.documents[int(doc_id)].title
            if title not in titles:
                titles.append(title)
            if len(titles) == k:
                break
        return titles

    def _build_trigram_index(self) -> None:
        # Built on the first miss only: most episodes never need it.
        postings: dict[str, list[int]] = defaultdict(list)
        counts = np.zeros(len(self.documents), dtype=np.float64)
        for doc_id, document in enumerate(self.documents):
            grams = _trigrams(document.title)
            counts[doc_id] = len(grams)
            for gram in grams:
                postings[gram].append(doc_id)
        self._title_gram_counts = counts
        self._trigram_index = {gram: np.asarray(ids, dtype=np.int64) for gram, ids in postings.items()}

    def search(self, query: str, num_similar: int = 5) -> SearchResult:
        """Find the document for ``query``: exact title, else best BM25 hit, else similar titles."""
        document = self.find_title(query)
        if document is not None:
            return SearchResult(document, exact=True)
        ranked = self.rank(query, k=num_similar + 1)
        if ranked:
            others = tuple(self.documents[doc_id].title for doc_id in ranked[1:])
            return SearchResult(self.documents[ranked[0]], exact=False, similar=others)
        return SearchResult(None, exact=False, similar=tuple(self.similar_titles(query, k=num_similar)))


def linear_scan_rank(documents: Sequence[Document], query: str, k: int = 5) -> list[int]:
    """BM25 ranking by scanning every document: the no-index baseline of ``benchmarks/bench_qa.py``.

    Scores exactly as :meth:`DocumentStore.rank` does (same terms, weights and tie-breaking), but
    recounts every document's terms on every query.
    """
    bags = []
    for document in documents:
        counts = Counter(index_terms(document.text))
        for term in index_terms(document.title):
            counts[term] += TITLE_WEIGHT
        bags.append(counts)
    num_docs = len(bags)
    if num_docs == 0:
        return []
    average_length = sum(sum(c.values()) for c in bags) / num_docs or 1.0
    terms: list[str] = []
    for term in index_terms(query[: 64 * MAX_QUERY_TERMS]):
        if term not in terms and any(term in bag for bag in bags):
            terms.append(term)
            if len(terms) == MAX_QUERY_TERMS:
                break
    document_frequency = {term: sum(1 for bag in bags if term in bag) for term in terms}
    scores = []
    for doc_id, bag in enumerate(bags):
        length = sum(bag.values())
        score = 0.0
        for term in terms:
            tf = bag.get(term, 0)
            if tf:
                df = document_frequency[term]
                idf = math.log(1.0 + (num_docs - df + 0.5) / (df + 0.5))
                norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / average_length)
                score += idf * tf * (BM25_K1 + 1.0) / (tf + norm)
        if score > 0:
            scores.append((-score, doc_id))
    return [doc_id for _, doc_id in sorted(scores)[:k]]


@dataclass
class LookupState:
    """The cursor of ``lookup[keyword]``: which sentences of the current document match, and which is next.

    ReAct's lookup (Yao et al. 2023, Sec. 3.1) is Ctrl-F: the same keyword again returns the next
    matching sentence; a new keyword or a new document starts over. Matching is a case-insensitive
    substring test.
    """

    keyword: str = ""
    matches: list[str] = field(default_factory=list)
    position: int = 0

    def next(self, sentences: Sequence[str], keyword: str) -> tuple[str | None, int, int]:
        """The next sentence containing ``keyword``, its 1-based rank and the match count.

        Returns ``(None, 0, n)`` once the ``n`` matches are used up (or there are none).
        """
        if keyword.lower() != self.keyword.lower():
            needle = keyword.lower()
            self.keyword = keyword
            self.matches = [s.strip() for s in sentences if needle in s.lower()]
            self.position = 0
        if self.position >= len(self.matches):
            return None, 0, len(self.matches)
        self.position += 1
        return self.matches[self.position - 1], self.position, len(self.matches)
