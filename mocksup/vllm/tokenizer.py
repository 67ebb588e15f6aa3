"""The mock's deterministic tokenizer: one source of token counts for every output.

Usage counts, ``/tokenize``, ``/detokenize``, the metrics and the span all use
:data:`TOKENIZER`, so they always agree. It needs no download and gives the same ids in every
process and run:

* a GPT-2-like pre-tokenizer regex splits text into words with their leading space, runs of
  punctuation and runs of whitespace;
* a piece found in the built-in vocabulary (:data:`WORDS` in four spellings: ``word``,
  `` word``, ``Word``, `` Word``; chat-template markers such as ``<|user|>``;
  punctuation; the reasoning markers ``<think>`` and ``</think>``) is one token with id
  ``256 + index``;
* any other piece falls back to one token per UTF-8 byte (ids 0-255), as byte-level BPE does;
* the vocabulary has :data:`VOCAB_SIZE` ids, as large as a common model's, so token ids an
  application sends (``logit_bias``, prompts of ids) fit as they would on vLLM; the ids past
  the mock's own pieces are unused and decode to nothing.

So every text round-trips through :meth:`MockTokenizer.decode`, and generated text (made of
vocabulary pieces only) re-tokenizes to exactly the tokens generated.
"""

from __future__ import annotations

import re

__all__ = (
    "AVOIDED_WORDS",
    "GENERATED_WORDS",
    "THINK_END",
    "THINK_START",
    "TOKENIZER",
    "VOCAB_SIZE",
    "WORDS",
    "MockTokenizer",
)

#: Token ids the mock's vocabulary has (Qwen's 151,936, as many models' embedding tables).
VOCAB_SIZE = 151_936

#: The words generated text is made of; also the bulk of the vocabulary.
WORDS: tuple[str, ...] = tuple(
    """the of and to in is it that for on with as was at by be this from or an are not have
    but had his they you we all one can her has there been if more when will would who so no
    she other its may these about them than some him time into only do could new two what
    then first also after any like over such our most very through just where much before
    way well back here even between both each few how many must now out own same see still
    under up use while work world year day man life part place case group number point hand
    system program question government school state family fact house night water story
    money month lot study book eye job word business issue side kind head service friend
    power hour game line end member law car city name team minute idea kid body information
    nothing ago lead social whether watch together follow around parent stop face anything
    create public already speak others read level allow add office spend door health person
    art sure war history party within grow result open change morning walk reason low win
    research girl guy early food moment himself air teacher force offer enough education
    across although remember foot second boy maybe toward able age policy everything love
    process music including consider appear actually buy probably human wait serve market
    die send expect sense build stay fall oh nation plan cut college interest death course
    someone experience behind reach local kill six remain effect yeah suggest class control
    raise care perhaps little late hard field else pass former sell major sometimes require
    along development themselves report role better economic effort decide rate strong
    possible heart drug show leader light voice wife whole police mind finally pull return
    free military price less according decision explain son hope develop view relationship
    carry town road drive arm true federal break difference thank receive value
    international building action full model join season society tax director position
    player agree especially record pick wear paper special space ground form support event
    official whose matter everyone center couple site project hit base activity star table
    need court produce eat american oil half situation easy cost industry figure street
    image itself phone either data cover quite picture clear practice piece land recent
    describe product doctor wall patient worker news test movie certain north personal
    simply third technology catch step baby computer type attention draw film tree source
    red nearly organization choose cause hair look point century evidence window difficult
    listen soon culture billion chance brother energy period summer realize hundred
    available plant likely opportunity term short letter condition choice place single
    rule daughter administration south husband floor campaign material population well
    economy medical hospital church close thousand risk current fire future wrong involve
    defense anyone increase security bank myself certainly west sport board seek per
    subject officer private rest behavior deal performance fight throw top quickly past
    goal second bed order author fill represent focus foreign drop blood upon agency push
    nature color recently store reduce sound note fine before near movement page enter
    share than common poor other natural race concern series significant similar hot
    language each usually response dead rise animal factor decade article shoot east save
    seven artist away scene stock career despite central eight thus treatment beyond happy
    exactly protect approach lie size dog fund serious occur media ready sign thought
    list individual simple quality pressure accept answer resource identify left meeting
    determine prepare disease whatever success argue cup particularly amount ability staff
    recognize indicate character growth loss degree wonder attack herself region
    television box training pretty trade deal election everybody physical lay general
    feeling standard bill message fail outside arrive analysis benefit name sex forward
    lawyer present section environmental glass answer skill sister professor operation
    financial crime stage ok compare authority miss design sort one act ten knowledge gun
    station blue state strategy clearly discuss indeed force truth song example democratic
    check environment leg dark public various rather laugh guess executive set study prove
    hang entire rock design enough forget since claim note remove manager help close sound
    enjoy network legal religious cold form final main science green memory card above
    seat cell establish nice trial expert that spring firm democrat radio visit management
    care avoid imagine tonight huge ball no finish yourself talk theory impact respond
    statement maintain charge popular traditional onto reveal direction weapon employee
    cultural contain peace head control base pain apply play measure wide shake fly
    interview manage chair fish particular camera structure politics perform bit weight
    suddenly discover candidate top production treat trip evening affect inside conference
    unit best style adult worry range mention rather far deep front edge individual
    specific writer trouble necessary throughout challenge fear shoulder institution middle
    sea dream bar beautiful property instead improve stuff hello hi please thanks say tell
    write explain joke weather today""".split()  # noqa: SIM905
)

#: Words of the vocabulary that generated text never uses: they read oddly in a CI log or a
#: test report (violence, illness, politics, religion, slang). They stay in the vocabulary, so
#: a prompt's token count does not change.
AVOIDED_WORDS = frozenset(
    """kill die death dead drug gun weapon sex blood shoot war military police crime attack
    disease fight kid guy yeah oh ok democrat democratic religious church politics election
    campaign lie fear pain hospital patient treatment husband wife girl boy american federal
    tax lawyer hang throw defense security trouble worry fail loss dark cold himself
    myself yourself themselves baby""".split()  # noqa: SIM905
)

#: The words generated text is drawn from: :data:`WORDS` less :data:`AVOIDED_WORDS`.
GENERATED_WORDS: tuple[str, ...] = tuple(w for w in dict.fromkeys(WORDS) if w not in AVOIDED_WORDS)

_PUNCTUATION = (".", ",", "!", "?", ":", ";", "\n", "\n\n", " ", "-", "'", '"', "(", ")")

#: Chat-template markers (see :func:`~mocksup.vllm.generate.render_chat`): one token each.
SPECIAL = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|developer|>")

#: The markers around a reasoning model's thinking (``--reasoning-parser``): one token each,
#: as in the models whose parsers count reasoning tokens between them. Last in the
#: vocabulary, so the other pieces keep their ids.
THINK_START, THINK_END = "<think>", "</think>"

# Markers, letters, digits, then punctuation runs (``_`` among them, as in GPT-2's
# pattern), spaces.
_PIECE = re.compile(r"<\|[a-z]+\|>|</?think>| ?[^\W\d_]+| ?\d+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+")


def _vocabulary() -> list[str]:
    seen: dict[str, None] = {}
    for word in dict.fromkeys(WORDS):
        for piece in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            seen.setdefault(piece, None)
    for piece in (*SPECIAL, *_PUNCTUATION, THINK_START, THINK_END):
        seen.setdefault(piece, None)
    return list(seen)


class MockTokenizer:
    """Vocabulary words as single tokens, every other piece as its UTF-8 bytes.

    Token ids 0-255 are bytes, ``256 + i`` the vocabulary's pieces; see the module docstring.
    Instances are immutable and thread-safe.
    """

    def __init__(self) -> None:
        self.pieces: tuple[str, ...] = tuple(_vocabulary())
        self._ids: dict[str, int] = {p: 256 + i for i, p in enumerate(self.pieces)}
        self._bytes: tuple[bytes, ...] = tuple(bytes((b,)) for b in range(256)) + tuple(
            p.encode() for p in self.pieces
        )
        #: The ids of `` word`` pieces: what generation draws from.
        self.spaced_word_ids: tuple[int, ...] = tuple(self._ids[" " + w] for w in GENERATED_WORDS)
        #: The ids of ``Word`` pieces: how generated text starts.
        self.capital_word_ids: tuple[int, ...] = tuple(
            self._ids[w.capitalize()] for w in GENERATED_WORDS
        )
        #: The ids of `` Word`` pieces: how a sentence after a period starts.
        self.spaced_capital_ids: tuple[int, ...] = tuple(
            self._ids[" " + w.capitalize()] for w in GENERATED_WORDS
        )
        self.period_id = self._ids["."]
        self.comma_id = self._ids[","]
        #: The ids of :data:`THINK_START` and :data:`THINK_END`.
        self.think_ids = (self._ids[THINK_START], self._ids[THINK_END])

    @property
    def vocab_size(self) -> int:
        """The number of token ids (:data:`VOCAB_SIZE`; the ids past the mock's pieces are
        unused)."""
        return VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""
        ids: list[int] = []
        lookup = self._ids.get
        for piece in _PIECE.findall(text):
            token = lookup(piece)
            if token is not None:
                ids.append(token)
            else:
                ids.extend(piece.encode())
        return ids

    def count(self, text: str) -> int:
        """``len(encode(text))``."""
        return len(self.encode(text))

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token (an empty string for an id out of range)."""
        return self._bytes[token] if 0 <= token < len(self._bytes) else b""

    def token_str(self, token: int) -> str:
        """One token's text (bytes of a split character decode to U+FFFD)."""
        return self.token_bytes(token).decode("utf-8", "replace")

    def decode(self, tokens: list[int]) -> str:
        """The text of a token sequence."""
        return b"".join(map(self.token_bytes, tokens)).decode("utf-8", "replace")


#: The tokenizer every part of the mock uses.
TOKENIZER = MockTokenizer()
