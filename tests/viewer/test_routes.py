"""The viewer's routes on the collector: the page, and the request journals it shows
(fetched by the collector from the vLLM mock, so the browser talks to one origin)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.request
from typing import Any

import openai
from pydantic import ValidationError

from mocksup import MockOTLPCollector, MockVLLMServer, start_all
from mocksup.harness import default_configs
from tests.otlp.support import in_process
from tests.support import ProcessTestCase

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def inline(html: str, tag: str) -> str:
    (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    return str(block)


def digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class PageTest(ProcessTestCase):
    def test_the_page_is_one_document_whose_policy_allows_only_its_own_code(self) -> None:
        client, _ = in_process()
        for path in ("/mocksup/ui/", "/mocksup/ui"):
            answer = client.get(path)
            self.assertEqual(answer.status_code, 200, path)
            self.assertEqual(answer.headers["Content-Type"], "text/html; charset=utf-8")
        html = answer.get_data(as_text=True)
        policy = answer.headers["Content-Security-Policy"]
        self.assertIn(f"script-src {digest(inline(html, 'script'))};", policy)
        self.assertIn(f"style-src {digest(inline(html, 'style'))};", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        # Offline: nothing is loaded from anywhere (no src=, href= to a host, @import, url()).
        self.assertIsNone(re.search(r"""(src|href)=["']?(https?:)?//""", html))
        self.assertNotIn("@import", html)
        self.assertNotIn("url(", inline(html, "style"))
        boot = json.loads(re.search(r'id="boot">(.*?)</script>', html, re.S)[1])  # type: ignore[index]
        self.assertEqual(boot, {"mode": "live"})
        index = client.get("/mocksup").get_json()
        paths = {route["path"] for route in index["routes"]}
        self.assertTrue({"/mocksup/ui/", "/mocksup/ui/journals"} <= paths)

    def test_journals_are_listed_set_and_removed_with_clear_errors(self) -> None:
        client, _ = in_process(journals={"vllm": "http://127.0.0.1:8000/"})
        listing = client.get("/mocksup/ui/journals").get_json()
        self.assertEqual(listing, {"journals": [{"name": "vllm", "url": "http://127.0.0.1:8000"}]})
        answer = client.put("/mocksup/ui/journals/b", json={"url": "http://[::1]:9"})
        self.assertEqual(answer.status_code, 200)
        self.assertEqual([j["name"] for j in answer.get_json()["journals"]], ["b", "vllm"])
        bad = {
            "ftp://host:1": "a journal URL is a mock's base URL",
            "http://host:1/v1": "a journal URL is a mock's base URL",
            "http://host:99999": "a journal URL with a bad port",
        }
        for url, message in bad.items():
            answer = client.put("/mocksup/ui/journals/c", json={"url": url})
            self.assertEqual(answer.status_code, 400, url)
            self.assertIn(message, answer.get_json()["error"])
        answer = client.put("/mocksup/ui/journals/c", json={"where": "x"})
        self.assertEqual(answer.get_json(), {"error": 'the body is {"url": "http://host:port"}'})
        answer = client.put("/mocksup/ui/journals/-x", json={"url": "http://h:1"})
        self.assertIn("not a valid journal name", answer.get_json()["error"])
        self.assertEqual(client.delete("/mocksup/ui/journals/b").status_code, 200)
        for method in (client.delete, client.get):
            answer = method("/mocksup/ui/journals/b")
            self.assertEqual(answer.status_code, 404)
            self.assertEqual(
                answer.get_json()["error"], "no journal named 'b'; GET /mocksup/ui/journals"
            )
        # Nothing refused changed the list.
        self.assertEqual(client.get("/mocksup/ui/journals").get_json(), listing)

    def test_a_bad_journal_setting_is_refused_at_construction(self) -> None:
        with self.assertRaisesRegex(ValidationError, "a journal URL is a mock's base URL"):
            MockOTLPCollector(journals={"vllm": "127.0.0.1:8000"})
        collector = MockOTLPCollector(port=4318, journals={"v": "http://127.0.0.1:8000"})
        self.assertEqual(collector.endpoints()["ui"], "http://127.0.0.1:4318/mocksup/ui/")
        self.assertEqual(collector.journals, {"v": "http://127.0.0.1:8000"})

    def test_a_journal_that_does_not_answer_is_a_502_that_names_it(self) -> None:
        sock = self.listening_socket()
        port = sock.getsockname()[1]
        sock.close()  # a port nothing listens on
        client, _ = in_process(journals={"gone": f"http://127.0.0.1:{port}"})
        answer = client.get("/mocksup/ui/journals/gone")
        self.assertEqual(answer.status_code, 502)
        self.assertIn(f"journal 'gone' (http://127.0.0.1:{port})", answer.get_json()["error"])


class JournalTest(ProcessTestCase):
    def get(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.load(answer)

    def test_the_default_servers_link_vllm_journal_and_the_collector_fetches_it(self) -> None:
        servers = start_all(default_configs())
        self.addCleanup(servers.stop)
        collector = servers.server_of(MockOTLPCollector)
        vllm = servers.server_of(MockVLLMServer)
        self.assertEqual(vllm.journal_viewer, collector.ui_url)
        # vLLM announces itself once it serves, from a thread: wait for it (with a deadline).
        deadline = time.monotonic() + 20
        while not (journals := self.get(collector.ui_url + "journals")["journals"]):
            self.assertLess(time.monotonic(), deadline, "vLLM never linked its journal")
            time.sleep(0.05)
        self.assertEqual(journals, [{"name": "vllm", "url": vllm.url}])
        client = openai.OpenAI(base_url=vllm.base_url, api_key="k")
        self.addCleanup(client.close)
        model = vllm.served_model_names[0]
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"traceparent": TRACEPARENT})  # fmt: skip
        answer = self.get(collector.ui_url + "journals/vllm")
        (entry,) = answer["requests"]
        self.assertEqual(answer["url"], vllm.url)
        self.assertEqual(
            {k: entry[k] for k in ("method", "path", "status", "traceparent", "model", "stream")},
            {"method": "POST", "path": "/v1/chat/completions", "status": 200,
             "traceparent": TRACEPARENT, "model": model, "stream": False},
        )  # fmt: skip
        self.assertNotIn("body", entry)  # no prompts through the viewer
        self.assertNotIn("headers", entry)
        self.assertGreater(entry["duration"], 0)
        # A long poll, passed on: held until a second request arrives.
        box: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: box.update(
                self.get(collector.ui_url + "journals/vllm?count=2&timeout=30")
            )
        )
        waiter.start()
        self.addCleanup(waiter.join, 40)
        client.completions.create(model=model, prompt="more", max_tokens=2)
        waiter.join(40)
        self.assertEqual(
            [e["path"] for e in box["requests"]], ["/v1/chat/completions", "/v1/completions"]
        )

    def test_a_viewer_that_does_not_answer_costs_vllm_only_a_log_line(self) -> None:
        sock = self.listening_socket()
        port = sock.getsockname()[1]
        sock.close()
        vllm = MockVLLMServer(port=0, journal_viewer=f"http://127.0.0.1:{port}/mocksup/ui/")
        self.start_server(vllm)
        deadline = time.monotonic() + 20
        while "did not answer" not in vllm.log_tail():
            self.assertLess(time.monotonic(), deadline, vllm.log_tail())
            time.sleep(0.05)
        self.assertTrue(vllm.is_running())
