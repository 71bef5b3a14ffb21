"""The openai backend against a scripted server (tests/openai_server.py), a dialogue turn
through it, and against llama-cpp-python's real server on the bundled GGUF (slow)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dialogue import DialogueManager
from bot.errors import ModelError
from bot.generation.base import Prompt
from bot.generation.batching import BatchingGenerator
from bot.generation.openai_generator import OpenAIGenerator, estimate_tokens
from bot.runtime import generator_factory
from bot.settings import GenerationSettings, ModelSettings, OpenAISettings, Settings
from bot.storage import ConversationStore
from bot.types import Decision, UserMessage
from retrieval.index import FaqIndex
from tests.dialogue_support import FAITHFUL, NEAR_MISS, collect, into_generated_band
from tests.openai_server import Call, Completion, Drop, OpenAIServer, Status, Stream

pytestmark = pytest.mark.timeout(60)

PROMPT: Prompt = [{"role": "system", "content": "You answer from the FAQ."},
                  {"role": "user", "content": "How do I return an item?"}]
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=40)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    """A scripted server on a free port, stopped after the test."""
    running = OpenAIServer().start()
    yield running
    running.stop()


def client(server: OpenAIServer | str, **settings: Any) -> OpenAIGenerator:
    url = server if isinstance(server, str) else server.url
    options: dict[str, Any] = {"base_url": url, "model": "scripted-model", "backoff_s": 0.01,
                               "max_retries": 2, "timeout_s": 5.0, **settings}
    return OpenAIGenerator.from_settings(OpenAISettings(**options), 2048)


def streamed(generator: OpenAIGenerator, params: GenerationSettings = GREEDY,
             **kwargs: Any) -> tuple[str, list[str]]:
    """The text of one streamed completion, and the pieces on_text received."""
    pieces: list[str] = []
    result = generator.generate([PROMPT], params, on_text=lambda row, text: pieces.append(text),
                                **kwargs)
    return result[0][0], pieces


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- streaming and what is sent ----------------------------------------------------------------


def test_a_reply_is_streamed_and_its_usage_counted(server: OpenAIServer) -> None:
    server.respond(Stream(["Open ", '"My orders"', " and click Return."], usage=7))
    generator = client(server)
    text, pieces = streamed(generator)
    assert pieces == ["Open ", '"My orders"', " and click Return."]
    assert text == 'Open "My orders" and click Return.'
    assert generator.tokens_generated == 7, "the server's usage wins"
    body = server.completions()[0].body
    assert body is not None and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == PROMPT and body["model"] == "scripted-model"
    server.respond(Stream(["a", "b", "c"]))  # no usage: the pieces are counted
    assert generator.generate([PROMPT], GREEDY) == [["abc"]]
    assert generator.tokens_generated == 10
    generator.close()


def test_sampling_settings_are_mapped(server: OpenAIServer) -> None:
    generator = client(server)
    generator.generate([PROMPT], GenerationSettings(temperature=0.7, top_p=0.8, top_k=20,
                                                    max_new_tokens=33, repetition_penalty=1.2))
    generator.generate([PROMPT], GenerationSettings(temperature=0.0, top_k=0,
                                                    repetition_penalty=1.0))
    sampled, greedy = (c.body or {} for c in server.completions())
    assert {k: sampled[k] for k in ("temperature", "top_p", "top_k", "max_tokens",
                                    "repetition_penalty", "repeat_penalty")} == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_tokens": 33,
        "repetition_penalty": 1.2, "repeat_penalty": 1.2}
    assert "n" not in sampled
    assert greedy["temperature"] == 0.0 and "top_k" not in greedy, "0 (off) is not sent"
    assert greedy["repetition_penalty"] == greedy["repeat_penalty"] == 1.0
    generator.close()


def test_a_server_that_refuses_the_extra_fields_is_asked_again_without_them(
        server: OpenAIServer) -> None:
    server.respond(Status(400, {"error": {"message": "Unrecognized request argument supplied: "
                                          "top_k", "type": "invalid_request_error"}}),
                   Stream(["Fine."]))
    generator = client(server, max_retries=0)
    assert streamed(generator)[0] == "Fine."
    assert generator.generate([PROMPT], GREEDY) == [["Fine."]]
    first, second, third = (c.body or {} for c in server.completions())
    assert "top_k" in first
    for body in (second, third):
        assert not {"top_k", "repetition_penalty", "repeat_penalty", "stream_options"} & set(body)
    generator.close()


def test_the_api_key_is_sent_as_a_bearer_token(server: OpenAIServer) -> None:
    client(server, api_key="sk-test-123").generate([PROMPT], GREEDY)
    client(server).generate([PROMPT], GREEDY)
    with_key, without = server.completions()
    assert with_key.headers.get("Authorization") == "Bearer sk-test-123"
    assert "Authorization" not in without.headers


def test_an_empty_model_is_the_first_the_server_lists_asked_once(server: OpenAIServer) -> None:
    server.models = ["first-model", "second-model"]
    generator = client(server, model="")
    assert generator.generate([PROMPT, PROMPT], GREEDY) == [["Hello there."]] * 2
    assert generator.generate([PROMPT], GREEDY) == [["Hello there."]]
    assert [c.path for c in server.calls if c.method == "GET"] == ["/v1/models"]
    assert {(c.body or {})["model"] for c in server.completions()} == {"first-model"}
    assert generator.name == "first-model"
    server.models = []
    with pytest.raises(ModelError, match=r"model list could not be read: .*lists no models"):
        client(server, model="").generate([PROMPT], GREEDY)


# --- retries and errors ------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(server: OpenAIServer) -> None:
    busy = Status(429, {"error": {"message": "busy"}}, {"Retry-After": "0.3"})
    server.respond(busy, busy, Stream(["At last."]))
    generator = client(server, backoff_s=3.0, max_retries=3)  # Retry-After wins over backoff
    started = time.monotonic()
    assert streamed(generator) == ("At last.", ["At last."])
    assert time.monotonic() - started < 2.5
    times = [c.at for c in server.completions()]
    assert len(times) == 3
    assert all(0.25 <= later - earlier < 1.5 for earlier, later in pairwise(times))


def test_a_failing_server_is_retried_then_named_with_its_status(server: OpenAIServer) -> None:
    server.respond(Status(500, "boom: the GPU caught fire " + "x" * 500))
    generator = client(server, max_retries=3, backoff_s=0.01)
    with pytest.raises(ModelError) as caught:
        streamed(generator)
    message = str(caught.value)
    assert message.startswith(f"the model server at {server.url} answered 500 after 3 retries: "
                              "boom: the GPU caught fire")
    assert len(message) < 300, "the body is cut at 200 characters"
    assert len(server.completions()) == 4, "the first try and 3 retries"


def test_backoff_doubles(server: OpenAIServer) -> None:
    server.respond(Status(503, {"error": {"message": "loading"}}))
    with pytest.raises(ModelError, match="answered 503 after 2 retries: loading"):
        client(server, max_retries=2, backoff_s=0.2).generate([PROMPT], GREEDY)
    times = [c.at for c in server.completions()]
    assert 0.18 <= times[1] - times[0] < 0.6 and 0.38 <= times[2] - times[1] < 0.9


def test_a_stream_dropped_after_text_is_an_error_and_not_repeated(server: OpenAIServer) -> None:
    server.respond(Stream(["One, ", "two, ", "three."], drop_after=2), Stream(["Again."]))
    generator = client(server, max_retries=3)
    pieces: list[str] = []
    with pytest.raises(ModelError, match=r"stopped the stream after 10 characters"):
        generator.generate([PROMPT], GREEDY, on_text=lambda _, text: pieces.append(text))
    assert pieces == ["One, ", "two, "], "the customer saw the prefix once, nothing more"
    assert len(server.completions()) == 1, "no retry once text was shown"


def test_a_stream_cut_short_with_done_but_no_finish_reason_is_an_error(
        server: OpenAIServer) -> None:
    # What llama-cpp-python's server does to a running stream when another request comes in.
    server.respond(Stream(["Half a ", "sentence"], finish=False))
    with pytest.raises(ModelError, match="stopped the stream after 15 characters"):
        streamed(client(server))


@pytest.mark.parametrize("drop", [Drop(), Stream(["never"], drop_after=0)],
                         ids=["no-response", "headers-only"])
def test_a_connection_dropped_before_any_text_is_retried(server: OpenAIServer,
                                                         drop: Drop | Stream) -> None:
    server.respond(drop, Stream(["Second ", "time."]))
    assert streamed(client(server)) == ("Second time.", ["Second ", "time."])
    assert len(server.completions()) == 2


def test_no_first_token_within_the_timeout(server: OpenAIServer) -> None:
    server.respond(Stream(["Too late."], first_delay_s=5.0))
    generator = client(server, timeout_s=0.5, max_retries=1)
    started = time.monotonic()
    with pytest.raises(ModelError, match=rf"no reply from the model server at {server.url} "
                                         r"within 0\.5 s after 1 retries"):
        streamed(generator)
    assert time.monotonic() - started < 2.0
    assert len(server.completions()) == 2


def test_a_stalled_stream_after_text_is_an_error(server: OpenAIServer) -> None:
    server.respond(Stream(["Quick ", "then nothing."], delay_s=5.0))
    with pytest.raises(ModelError, match=r"after 6 characters: nothing more within 0\.5 s"):
        streamed(client(server, timeout_s=0.5))
    assert len(server.completions()) == 1


def test_a_wrong_api_key(server: OpenAIServer) -> None:
    server.respond(Status(401, {"error": {"message": "Invalid API key", "type": "auth"}}))
    with pytest.raises(ModelError, match=r"refused the request \(401\): the api key "
                                         r"\(model.openai.api_key\) is missing or wrong: Invalid"):
        streamed(client(server, api_key="wrong"))
    assert len(server.completions()) == 1, "not retried"


def test_an_unknown_model(server: OpenAIServer) -> None:
    server.respond(Status(404, {"object": "error", "type": "NotFoundError", "code": 404,
                                "message": "The model `nope` does not exist."}))
    with pytest.raises(ModelError, match=r"refused the request \(404\).*: The model `nope` does "
                                         "not exist"):
        client(server, model="nope").generate([PROMPT], GREEDY)
    assert len(server.completions()) == 1, "not retried"


def test_nothing_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelError, match=rf"^cannot reach the model server at {url} after 1 "
                                         "retries: connection refused$"):
        client(url, max_retries=1).generate([PROMPT], GREEDY)
    with pytest.raises(ModelError, match="model list could not be read: cannot reach"):
        client(url, max_retries=0, model="").generate([PROMPT], GREEDY)


def test_a_closed_client_refuses(server: OpenAIServer) -> None:
    generator = client(server)
    generator.close()
    with pytest.raises(ModelError, match="is closed"):
        generator.generate([PROMPT], GREEDY)


# --- stopping, n, batches ----------------------------------------------------------------------


def test_should_stop_ends_the_stream_and_the_server_sees_it(server: OpenAIServer) -> None:
    server.respond(Stream([f"word{i} " for i in range(300)], delay_s=0.02))
    generator = client(server)
    pieces: list[str] = []
    started = time.monotonic()
    [[text]] = generator.generate([PROMPT], GREEDY, on_text=lambda _, t: pieces.append(t),
                                  should_stop=lambda _: len(pieces) >= 3)
    assert text == "word0 word1 word2" and pieces == ["word0 ", "word1 ", "word2 "]
    assert time.monotonic() - started < 1.0
    assert server.disconnected.wait(3), "the server saw the client go away"
    assert generator.tokens_generated == 3


def test_n_completions_from_a_server_that_gives_one_per_request(server: OpenAIServer) -> None:
    server.respond(Completion(["First."]), Completion(["Second."]), Completion(["Third."]))
    generator = client(server)
    params = GenerationSettings(n=3)
    assert generator.generate([PROMPT], params) == [["First.", "Second.", "Third."]]
    bodies = [c.body or {} for c in server.completions()]
    assert [b.get("n", 1) for b in bodies] == [3, 2, 1]
    assert all(b["stream"] is False and "stream_options" not in b for b in bodies)
    assert bodies[0]["temperature"] == params.candidate_temperature, "n > 1 is sampled"


def test_n_completions_from_a_server_that_honours_n(server: OpenAIServer) -> None:
    server.respond(lambda call: Completion([f"Answer {i}." for i in range((call.body or {})["n"])],
                                           usage=12))
    generator = client(server)
    assert generator.generate([PROMPT, PROMPT], GenerationSettings(n=3)) == [
        ["Answer 0.", "Answer 1.", "Answer 2."]] * 2
    assert len(server.completions()) == 2, "one request per prompt"
    assert generator.tokens_generated == 24


def echo(call: Call) -> Stream:
    """Stream the question back, upper-cased, once two requests are in at once (after 0.5 s
    if they never are)."""
    question = (call.body or {})["messages"][-1]["content"]
    return Stream([question.upper()[:4], question.upper()[4:]], first_delay_s=0.5, together=2)


def test_a_batch_is_requested_concurrently_in_order(server: OpenAIServer) -> None:
    server.respond(echo)
    generator = client(server)
    prompts: list[Prompt] = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    seen: list[tuple[int, str]] = []
    started = time.monotonic()
    results = generator.generate(prompts, GREEDY, on_text=lambda row, t: seen.append((row, t)))
    assert results == [[f"QUESTION {i}"] for i in range(4)]
    assert time.monotonic() - started < 1.5, "4 x 0.5 s one after another would take 2 s"
    assert server.max_in_flight >= 2
    assert sorted(seen) == sorted([(i, "QUES") for i in range(4)] +
                                  [(i, f"TION {i}") for i in range(4)])


def test_the_runtime_sends_concurrent_requests(server: OpenAIServer) -> None:
    settings = ModelSettings(backend="openai",
                             openai=OpenAISettings(base_url=server.url, concurrency=4))
    generator = generator_factory(settings)()
    assert isinstance(generator, BatchingGenerator)
    server.respond(echo)
    futures = [generator.submit([[{"role": "user", "content": f"turn {i}"}]], GREEDY)
               for i in range(4)]
    assert [f.result(10) for f in futures] == [[[f"TURN {i}"]] for i in range(4)]
    assert server.max_in_flight >= 2
    assert generator.tokens_generated == 8
    generator.close()
    assert isinstance(generator.inner, OpenAIGenerator) and generator.inner._closed.is_set(), \
        "closing the runtime's generator closes the client's connections"


# --- token counting ----------------------------------------------------------------------------


def test_the_estimate_never_undercounts_and_the_tokenizer_counts_exactly(
        bundled_model_dir: Path, sample_index: FaqIndex) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir))
    faq = "\n\n".join(f"Q: {e.questions[0]}\nA: {e.answer}" for e in sample_index.entries)
    texts = [faq, "Order 1234567890, call +1 555 0100 2931, total 1,299.95 EUR on 2024-03-15.",
             "Wie kann ich meine Bestellung verfolgen? Öffnen Sie Meine Bestellungen.",
             "Как отследить мой заказ? Откройте Мои заказы.", "我怎样才能跟踪我的订单",
             "Thanks!! 😀👍 https://help.kestrel-outfitters.example/track?id=AB12"]
    exact = client("http://127.0.0.1:1/v1", tokenizer=str(bundled_model_dir))
    for text in texts:
        prompt: Prompt = [{"role": "system", "content": "Answer from the FAQ."},
                          {"role": "user", "content": text}]
        rendered = tokenizer.apply_chat_template(prompt, tokenize=False,
                                                 add_generation_prompt=True)
        real = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        assert exact.count_tokens(prompt) == real
        assert real <= estimate_tokens(prompt) <= 2 * real + 20, text[:30]
    with pytest.raises(ModelError, match=r"model\.openai\.tokenizer: cannot load"):
        client("http://127.0.0.1:1/v1", tokenizer=str(bundled_model_dir / "missing"))


# --- a dialogue turn through the backend -------------------------------------------------------


async def test_a_dialogue_turn_generated_by_a_model_server(
        server: OpenAIServer, sample_index: FaqIndex, store: ConversationStore) -> None:
    words = FAITHFUL.split(" ")
    server.respond(Stream([w if i == 0 else f" {w}" for i, w in enumerate(words)]))
    settings = into_generated_band(Settings(), sample_index)
    settings.model.backend = "openai"
    settings.model.openai.base_url = server.url  # model "": the first of /models
    dm = DialogueManager(sample_index, store, settings.persona, settings.retrieval,
                         settings.dialogue, settings.model.generation,
                         generator_factory(settings.model))
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.GENERATE and reply.text == FAITHFUL
    assert "".join(pieces) == FAITHFUL
    sent = json.dumps((server.completions()[0].body or {})["messages"])
    assert "Return items" in sent and NEAR_MISS in sent, "the prompt carries the FAQ entry"
    assert dm.tokens_generated == len(words)
    stored = await store.last_bot_message("c")
    assert stored is not None and stored.text == FAITHFUL
    dm.close()


# --- llama-cpp-python's own server on the bundled GGUF ----------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on the bundled GGUF; its API root once /v1/models answers."""
    # llama-cpp-python[server] is a dev dependency (the Makefile installs it): no skipping.
    from bot.generation.bundled import bundled_gguf

    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # interrupt_requests off: by default a new request cuts the running stream short.
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
               "--n_threads", "1", "--n_threads_batch", "1",
               "--interrupt_requests", "false"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({process.returncode}):\n"
                            f"{log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.25)
        yield url
    finally:
        process.kill()
        process.wait(10)


FAQ_PROMPT: Prompt = [
    {"role": "system", "content": "You are a support assistant. Answer only from this FAQ.\n"
     "Q: How do I return an item?\nA: Go to My orders, choose the order and click Return "
     "items. Returns are accepted within 30 days."},
    {"role": "user", "content": "How many days do I have to return something?"}]


@pytest.mark.slow
def test_llama_cpp_server_streams_a_greedy_answer(llama_server: str) -> None:
    generator = client(llama_server, model="", timeout_s=60.0)
    params = GenerationSettings(temperature=0.0, max_new_tokens=30)
    pieces: list[str] = []
    [[text]] = generator.generate([FAQ_PROMPT], params,
                                  on_text=lambda _, piece: pieces.append(piece))
    assert text and "".join(pieces).strip() == text
    assert len(pieces) > 1, "streamed in pieces"
    assert generator.tokens_generated >= len(pieces) > 1
    assert generator.name.endswith(".gguf"), "the model id the server lists"
    [[again]] = generator.generate([FAQ_PROMPT], params)
    assert again == text, "greedy: the same answer"
    generator.close()


@pytest.mark.slow
def test_llama_cpp_server_answers_a_batch_and_several_candidates(llama_server: str) -> None:
    generator = client(llama_server, model="", timeout_s=60.0)
    second: Prompt = [FAQ_PROMPT[0], {"role": "user", "content": "How do I send an item back?"}]
    before = generator.tokens_generated
    results = generator.generate([FAQ_PROMPT, second],
                                 GenerationSettings(temperature=0.0, max_new_tokens=20))
    assert len(results) == 2 and all(len(r) == 1 and r[0] for r in results)
    assert generator.tokens_generated > before
    candidates = generator.generate([FAQ_PROMPT], GenerationSettings(n=2, max_new_tokens=12))
    assert len(candidates[0]) == 2 and all(candidates[0]), "n is ignored: asked twice"
    generator.close()


@pytest.mark.slow
def test_llama_cpp_server_sees_a_stopped_stream_go(llama_server: str) -> None:
    generator = client(llama_server, model="", timeout_s=60.0)
    pieces: list[str] = []
    started = time.monotonic()
    [[text]] = generator.generate(
        [FAQ_PROMPT], GenerationSettings(temperature=0.0, max_new_tokens=200),
        on_text=lambda _, piece: pieces.append(piece), should_stop=lambda _: len(pieces) >= 2)
    assert len(pieces) == 2 and text == "".join(pieces).strip()
    assert time.monotonic() - started < 30
    # The server stops generating for a client that went away: the next request is served.
    done = threading.Event()
    threading.Thread(target=lambda: (generator.generate([FAQ_PROMPT], GREEDY), done.set()),
                     daemon=True).start()
    assert done.wait(30)
    generator.close()
