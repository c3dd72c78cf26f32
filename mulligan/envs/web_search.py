"""Web search for the QA envs, as NAT's QA agents search (Google through the Serper API).

NAT's official QA tool (``api/tools/search/google_search.py`` in Reason-Wang/NAT, the function
its ``call_tools`` uses) answers ``search[query]`` with web snippets, not Wikipedia pages: it asks
Serper for the top 10 Google results, keeps the 5 snippets closest to the query under a dense
retriever (``sentence-transformers/all-mpnet-base-v2``, cosine of mean-pooled embeddings), reranks
those with DPR's reader (``facebook/dpr-reader-multiset-base``, its relevance logit) and shows the
best 3 as `` #1: <snippet> #2: <snippet> #3: <snippet>``. Each answer is cached by query, so a run
can be repeated (and resumed) without paying for a search twice.

:class:`WebSearch` is that pipeline; ``gymnasium.make("Mulligan/HotpotQA-v0",
search_backend="web")`` (or StrategyQA) uses it in place of the offline document store. It needs
the network and a Serper key in ``SERPER_API_KEY`` at run time; the two models download from the
hub on first use (pass ``retriever=None``/``reranker=None`` in ``web_search`` to skip a stage). The
offline default of the envs stays the local search (docs/fidelity.md, row N13).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Serper's Google search endpoint (POST, JSON body ``{"q", "num"}``, key in ``X-API-KEY``).
SERPER_ENDPOINT = "https://google.serper.dev/search"
#: The official dense retriever (mean-pooled embeddings, cosine similarity).
DEFAULT_RETRIEVER = "sentence-transformers/all-mpnet-base-v2"
#: The official reranker: DPR's reader, scored by its relevance logit.
DEFAULT_READER = "facebook/dpr-reader-multiset-base"
#: Longest query sent (and cached): a search engine reads no more, and a huge action must not become
#: a huge request or cache line.
MAX_QUERY_CHARS = 2048


class WebSearchError(RuntimeError):
    """A web search that could not be answered (no key, refused, or the service unreachable)."""


@dataclass(frozen=True)
class SearchHit:
    """One organic result of a web search.

    Attributes:
        title: The page title.
        snippet: Google's snippet of the page ("" when it has none, as the official code keeps it).
        url: The page address.
    """

    title: str
    snippet: str
    url: str


class SerperClient:
    """Google results through Serper's search API.

    Args:
        api_key: The key; ``None`` reads ``api_key_env`` when the first search is made.
        api_key_env: Environment variable holding the key.
        endpoint: The search URL (a proxy or a compatible service may stand in for Serper's).
        num_results: Results asked for (the official 10).
        timeout: Seconds per request (the official 5).
        retries: Attempts for a request that times out, cannot connect or gets a 5xx answer; a 4xx
            answer (a wrong key, no credit) is raised at once.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        api_key_env: str = "SERPER_API_KEY",
        endpoint: str = SERPER_ENDPOINT,
        num_results: int = 10,
        timeout: float = 5.0,
        retries: int = 3,
    ):
        if num_results < 1 or timeout <= 0 or retries < 1:
            raise ValueError("num_results and retries must be >= 1 and timeout > 0")
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.endpoint = endpoint
        self.num_results = num_results
        self.timeout = timeout
        self.retries = retries
        #: Requests sent (a cache in front of the client keeps this at one per distinct query).
        self.requests = 0

    def _key(self) -> str:
        key = self.api_key or os.environ.get(self.api_key_env, "")
        if not key:
            raise WebSearchError(
                f"web search needs a Serper API key in ${self.api_key_env} (https://serper.dev); "
                "without the network use the envs' default local search (search_backend='local')"
            )
        return key

    def search(self, query: str) -> list[SearchHit]:
        """The organic results for ``query``, in Google's order.

        Raises:
            WebSearchError: No key, a refused request (with the service's answer), or no answer
                after ``retries`` attempts.
        """
        body = json.dumps({"q": query, "num": self.num_results}).encode()
        headers = {"X-API-KEY": self._key(), "Content-Type": "application/json"}
        failure = ""
        for attempt in range(self.retries):
            request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:300]
                if error.code < 500:
                    raise WebSearchError(f"{self.endpoint} refused the search ({error.code}): {detail}") from error
                failure = f"HTTP {error.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                failure = str(getattr(error, "reason", error))
            time.sleep(min(2.0, 0.25 * 2**attempt))
        else:
            raise WebSearchError(f"no answer from {self.endpoint} after {self.retries} attempts: {failure}")
        if not isinstance(payload, Mapping):
            raise WebSearchError(f"{self.endpoint} answered {type(payload).__name__}, not a JSON object")
        return [
            SearchHit(str(hit.get("title", "")), str(hit.get("snippet", "")), str(hit.get("link", "")))
            for hit in payload.get("organic", [])
            if isinstance(hit, Mapping)
        ]


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class DenseRetriever:
    """Texts ranked by the cosine similarity of their mean-pooled embeddings to the query's.

    This is how ``sentence-transformers/all-mpnet-base-v2`` embeds (mean pooling over the
    attention mask), computed with transformers' ``AutoModel`` so no extra library is needed.

    Args:
        model: A hub id or local folder of an encoder and its tokenizer.
        device: ``cuda`` when available, else ``cpu`` (default).
    """

    def __init__(self, model: str = DEFAULT_RETRIEVER, device: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.device = _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).to(self.device).eval()

    def _embed(self, texts: Sequence[str]):
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=384, return_tensors="pt")
        batch = batch.to(self.device)
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def top(self, query: str, texts: Sequence[str], k: int) -> list[int]:
        """Indices of the ``k`` texts most similar to ``query``, most similar first."""
        import torch

        if not texts:
            return []
        vectors = self._embed([query, *texts])
        scores = torch.nn.functional.cosine_similarity(vectors[1:], vectors[:1])
        return [int(i) for i in torch.argsort(scores, descending=True, stable=True)[: min(k, len(texts))]]


class DPRReranker:
    """Passages ranked by DPR's reader: the relevance logit of (question, title, passage).

    Args:
        model: A hub id or local folder of a ``DPRReader`` and its tokenizer.
        device: ``cuda`` when available, else ``cpu`` (default).
    """

    def __init__(self, model: str = DEFAULT_READER, device: str | None = None):
        from transformers import DPRReader, DPRReaderTokenizer

        self.device = _device(device)
        self.tokenizer = DPRReaderTokenizer.from_pretrained(model)
        self.model = DPRReader.from_pretrained(model).to(self.device).eval()

    def top(self, query: str, titles: Sequence[str], passages: Sequence[str], k: int) -> list[int]:
        """Indices of the ``k`` most relevant passages, most relevant first."""
        import torch

        if not passages:
            return []
        inputs = self.tokenizer(
            questions=[query] * len(passages),
            titles=list(titles),
            texts=list(passages),
            padding=True,
            truncation=True,
            max_length=512,
            return_tensors="pt",
        ).to(self.device)
        with torch.no_grad():
            scores = self.model(**inputs).relevance_logits
        return [int(i) for i in torch.argsort(scores, descending=True, stable=True)[: min(k, len(passages))]]


class WebSearch:
    """NAT's search tool: web results, retrieved, reranked and shown as `` #1: ... #2: ...``.

    Args:
        client: Where the results come from (a :class:`SerperClient`).
        retriever: Keeps the ``retrieve_k`` snippets closest to the query (``None``: Google's first).
        reranker: Orders those and keeps ``keep`` (``None``: the retriever's order).
        retrieve_k: Snippets the retriever keeps (the official 5).
        keep: Snippets shown (the official 3).
        cache_path: A JSONL file of ``{"key": query, "value": observation}`` lines, read at start
            and appended to; the official code keeps the same kind of file. ``None``: in memory only.
    """

    def __init__(
        self,
        client: SerperClient,
        *,
        retriever: DenseRetriever | None = None,
        reranker: DPRReranker | None = None,
        retrieve_k: int = 5,
        keep: int = 3,
        cache_path: str | None = None,
    ):
        if retrieve_k < 1 or keep < 1:
            raise ValueError("retrieve_k and keep must be >= 1")
        self.client = client
        self.retriever = retriever
        self.reranker = reranker
        self.retrieve_k = retrieve_k
        self.keep = keep
        self.cache_path = cache_path
        self.cache: dict[str, list[str]] = {}
        if cache_path and os.path.exists(cache_path):
            with open(cache_path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        self.cache[str(row["key"])] = [str(s) for s in row["value"]]
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise ValueError(f"{cache_path}:{number}: not a search cache line ({error})") from error

    def snippets(self, query: str) -> list[str]:
        """The snippets shown for ``query``, best first (from the cache when it was searched before).

        A query longer than :data:`MAX_QUERY_CHARS` is cut to that length first.
        """
        query = query[:MAX_QUERY_CHARS]
        if query in self.cache:
            return self.cache[query]
        hits = self.client.search(query)
        chosen = list(range(len(hits)))
        if self.retriever is not None:
            chosen = self.retriever.top(query, [h.snippet for h in hits], self.retrieve_k)
        if self.reranker is not None:
            titles, passages = [hits[i].title for i in chosen], [hits[i].snippet for i in chosen]
            order = self.reranker.top(query, titles, passages, self.keep)
            chosen = [chosen[i] for i in order]
        shown = [hits[i].snippet for i in chosen[: self.keep]]
        self.cache[query] = shown
        if self.cache_path:
            with open(self.cache_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": query, "value": shown}, ensure_ascii=False) + "\n")
        return shown

    def __call__(self, query: str) -> str:
        """The observation for ``search[query]``: `` #1: <snippet> #2: <snippet> ...`` (see :meth:`snippets`)."""
        return "".join(f" #{rank}: {snippet}" for rank, snippet in enumerate(self.snippets(query), 1))


#: Options of ``web_search=`` in the QA envs, with their defaults (the official pipeline).
WEB_SEARCH_OPTIONS = {
    "endpoint": SERPER_ENDPOINT,
    "api_key_env": "SERPER_API_KEY",
    "num_results": 10,
    "timeout": 5.0,
    "retries": 3,
    "retriever": DEFAULT_RETRIEVER,
    "reranker": DEFAULT_READER,
    "retrieve_k": 5,
    "keep": 3,
    "cache": None,
    "device": None,
}


def build_web_search(options: Mapping[str, Any] | None = None) -> WebSearch:
    """A :class:`WebSearch` from the envs' ``web_search`` options (see :data:`WEB_SEARCH_OPTIONS`).

    ``retriever`` and ``reranker`` name a model (hub id or folder) or are ``None`` to skip that
    stage; the models are loaded here, once per env.

    Raises:
        ValueError: For an unknown option (the known ones are listed).
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(WEB_SEARCH_OPTIONS))
    if unknown:
        raise ValueError(f"unknown web_search option(s) {unknown}; known: {sorted(WEB_SEARCH_OPTIONS)}")
    settings = {**WEB_SEARCH_OPTIONS, **options}
    client = SerperClient(
        api_key_env=settings["api_key_env"],
        endpoint=settings["endpoint"],
        num_results=int(settings["num_results"]),
        timeout=float(settings["timeout"]),
        retries=int(settings["retries"]),
    )
    device = settings["device"]
    return WebSearch(
        client,
        retriever=DenseRetriever(settings["retriever"], device) if settings["retriever"] else None,
        reranker=DPRReranker(settings["reranker"], device) if settings["reranker"] else None,
        retrieve_k=int(settings["retrieve_k"]),
        keep=int(settings["keep"]),
        cache_path=settings["cache"],
    )
