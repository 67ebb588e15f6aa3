"""Generated text reads well in a CI log: no word from :data:`AVOIDED_WORDS`, through the real
server and the real client; the vocabulary (and so every token count) is unchanged."""

from __future__ import annotations

import re
import unittest

import openai

from mocksup import MockVLLMServer
from mocksup.vllm.tokenizer import AVOIDED_WORDS, GENERATED_WORDS, TOKENIZER, WORDS
from tests.support import ProcessTestCase


class GeneratedTextTest(ProcessTestCase):
    def test_no_avoided_word_in_long_replies(self) -> None:
        server = self.start_server(MockVLLMServer(port=0))
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        self.addCleanup(client.close)
        words: set[str] = set()
        for seed in range(4):
            reply = client.completions.create(
                model="mock-model", prompt="Tell me a story", max_tokens=3000, seed=seed,
                extra_body={"ignore_eos": True}, n=2,
            )  # fmt: skip
            for choice in reply.choices:
                words.update(w.lower() for w in re.findall(r"[A-Za-z]+", choice.text))
        # Most of the words drawn from, and none of those avoided.
        self.assertGreater(len(words), len(GENERATED_WORDS) * 0.9)
        self.assertEqual(words & AVOIDED_WORDS, set())
        self.assertLessEqual(words, set(GENERATED_WORDS))

    def test_the_vocabulary_keeps_every_word(self) -> None:
        self.assertLessEqual(AVOIDED_WORDS, set(WORDS))
        for word in sorted(AVOIDED_WORDS):
            self.assertEqual(len(TOKENIZER.encode(" " + word)), 1, word)


if __name__ == "__main__":
    unittest.main()
