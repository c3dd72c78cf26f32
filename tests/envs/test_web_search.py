"""NAT's web search for the QA envs: Serper's protocol, retrieval, reranking, cache, errors.

A local HTTP server speaks Serper's search protocol (a POST of ``{"q", "num"}`` with the key in
``X-API-KEY``, answered with ``{"organic": [...]}``); the retriever and the reranker are tiny
models built offline from a config and loaded through the same code as the hub models.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium
import pytest

from mulligan.envs.web_search import (
    DenseRetriever,
    SerperClient,
    WebSearch,
    WebSearchError,
    build_web_search,
)

SNIPPETS = [
    "Paris is the capital of France.",
    "The Eiffel Tower is in Paris.",
    "Berlin is the capital of Germany.",
    "Madrid is the capital of Spain.",
    "Rome is the capital of Italy.",
    "Lisbon is the capital of Portugal.",
]


class SearchServer:
    """A Serper-compatible endpoint on localhost: answers with SNIPPETS, or fails on demand."""

    def __init__(self):
        self.requests: list[dict] = []
        self.failures_left = 0
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"body": body, "key": self.headers.get("X-API-KEY")})
                if server.failures_left > 0:
                    server.failures_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                if server.status != 200:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(b'{"message": "Unauthorized."}')
                    return
                organic = [
                    {"title": f"Page {i}", "link": f"https://example.org/{i}", "snippet": s}
                    for i, s in enumerate(SNIPPETS[: body["num"]])
                ]
                organic.insert(1, {"title": "No snippet", "link": "https://example.org/x"})
                data = json.dumps({"searchParameters": {"q": body["q"]}, "organic": organic}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/search"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SERPER_API_KEY", "test-key")
    serving = SearchServer()
    yield serving
    serving.close()


def test_client_speaks_serpers_protocol_and_keeps_snippetless_results(server):
    hits = SerperClient(endpoint=server.url, num_results=4).search("capital of France")
    assert server.requests == [{"body": {"q": "capital of France", "num": 4}, "key": "test-key"}]
    assert [h.snippet for h in hits] == [SNIPPETS[0], "", *SNIPPETS[1:4]]
    assert hits[0].title == "Page 0" and hits[0].url == "https://example.org/0"


def test_without_retriever_and_reranker_google_s_first_three_are_shown_numbered(server):
    search = WebSearch(SerperClient(endpoint=server.url))
    assert search("capital") == f" #1: {SNIPPETS[0]} #2:  #3: {SNIPPETS[1]}"


def test_answers_are_cached_in_memory_and_in_the_file(server, tmp_path):
    cache = tmp_path / "search.jsonl"
    first = WebSearch(SerperClient(endpoint=server.url), cache_path=str(cache))
    shown = first("capital")
    assert first("capital") == shown and len(server.requests) == 1
    # A new run reads the file: no request at all for a query searched before.
    again = WebSearch(SerperClient(endpoint=server.url), cache_path=str(cache))
    assert again("capital") == shown and len(server.requests) == 1
    assert json.loads(cache.read_text())["key"] == "capital"
    cache.write_text("not json\n")
    with pytest.raises(ValueError, match=r"search\.jsonl:1"):
        WebSearch(SerperClient(endpoint=server.url), cache_path=str(cache))


def test_a_huge_query_is_cut_before_it_is_sent(server):
    from mulligan.envs.web_search import MAX_QUERY_CHARS

    search = WebSearch(SerperClient(endpoint=server.url))
    assert search("x" * 2_000_000).startswith(" #1: ")
    assert len(server.requests[0]["body"]["q"]) == MAX_QUERY_CHARS
    assert search("é🙂 <script>") and server.requests[1]["body"]["q"] == "é🙂 <script>"


def test_missing_key_refused_key_and_dead_service_are_clear_errors(server, monkeypatch):
    monkeypatch.delenv("SERPER_API_KEY")
    with pytest.raises(WebSearchError, match="SERPER_API_KEY"):
        SerperClient(endpoint=server.url).search("q")
    monkeypatch.setenv("SERPER_API_KEY", "wrong")
    server.status = 403
    with pytest.raises(WebSearchError, match="refused the search \\(403\\)"):
        SerperClient(endpoint=server.url).search("q")
    assert len(server.requests) == 1  # a 4xx answer is not retried
    server.status = 200
    server.failures_left = 2  # two 503s, then an answer: retried
    assert len(SerperClient(endpoint=server.url, retries=3).search("q")) == len(SNIPPETS) + 1
    server.failures_left = 5
    with pytest.raises(WebSearchError, match="after 2 attempts: HTTP 503"):
        SerperClient(endpoint=server.url, retries=2).search("q")
    closed = SearchServer()
    closed.close()
    with pytest.raises(WebSearchError, match="no answer"):
        SerperClient(endpoint=closed.url, retries=1, timeout=1).search("q")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny BERT encoder and a tiny DPR reader with a word-level vocabulary, saved as hub folders."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, DPRConfig, DPRReader, DPRReaderTokenizer

    words = sorted({w.strip(".").lower() for s in SNIPPETS for w in s.split()} | {"page", "no", "snippet"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"0123456789"]
    root = tmp_path_factory.mktemp("search-models")
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    sizes = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), **sizes)).save_pretrained(root / "retriever")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root / "retriever")
    DPRReader(DPRConfig(vocab_size=len(vocab), **sizes)).save_pretrained(root / "reader")
    DPRReaderTokenizer(str(root / "vocab.txt")).save_pretrained(root / "reader")
    return str(root / "retriever"), str(root / "reader")


def test_retriever_ranks_by_cosine_and_an_identical_text_comes_first(tiny_models):
    retriever = DenseRetriever(tiny_models[0], device="cpu")
    order = retriever.top(SNIPPETS[3], SNIPPETS, k=4)
    assert order[0] == 3 and len(order) == 4 == len(set(order))
    assert retriever.top("anything", [], k=3) == []


def test_the_official_pipeline_retrieves_five_then_shows_the_reader_s_best_three(server, tiny_models):
    retriever, reader = tiny_models
    search = build_web_search({"endpoint": server.url, "retriever": retriever, "reranker": reader, "device": "cpu"})
    hits = search.client.search("Madrid is the capital of Spain.")
    snippets = [h.snippet for h in hits]
    kept = search.retriever.top("Madrid is the capital of Spain.", snippets, 5)
    best = search.reranker.top(
        "Madrid is the capital of Spain.", [hits[i].title for i in kept], [snippets[i] for i in kept], 3
    )
    expected = "".join(f" #{r}: {snippets[kept[i]]}" for r, i in enumerate(best, 1))
    assert search("Madrid is the capital of Spain.") == expected
    assert snippets.index("Madrid is the capital of Spain.") in kept  # the identical snippet survives retrieval
    with pytest.raises(ValueError, match="unknown web_search option"):
        build_web_search({"endpoint": server.url, "retreiver": None})


def test_qa_env_searches_the_web_and_looks_up_in_the_snippets(server):
    env = gymnasium.make(
        "Mulligan/HotpotQA-v0",
        search_backend="web",
        web_search={"endpoint": server.url, "retriever": None, "reranker": None},
    )
    env.reset(seed=0)
    observation, _, terminated, _, info = env.step("Thought: search.\nAction: search[capital cities]")
    assert observation == f" #1: {SNIPPETS[0]} #2:  #3: {SNIPPETS[1]}" and not terminated
    assert info["action_type"] == "search" and server.requests[0]["body"]["q"] == "capital cities"
    observation, *_ = env.step("Action: lookup[eiffel]")
    assert observation == f"(Result 1 / 1) {SNIPPETS[1]}"
    env.close()
    strategy = gymnasium.make(
        "Mulligan/StrategyQA-v0", search_backend="web", web_search={"endpoint": server.url, "reranker": None,
                                                                    "retriever": None},
    )  # fmt: skip
    strategy.reset(seed=0)
    assert strategy.step("Action: search[x]")[0].startswith(" #1: ")
    with pytest.raises(ValueError, match="search_backend must be one of"):
        gymnasium.make("Mulligan/HotpotQA-v0", search_backend="google")
    with pytest.raises(ValueError, match="web_search= configures"):
        gymnasium.make("Mulligan/HotpotQA-v0", web_search={"cache": None})
