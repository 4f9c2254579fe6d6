"""A deterministic training corpus for the demo model's tokenizer.

The demo tokenizer must come out byte-identical on every machine, so its training text cannot
depend on anything installed (the Python stdlib differs between patch releases). The text is
built here from fixed word lists and a fixed linear congruential generator, which uses only
integer arithmetic and so gives the same sequence everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

_SEED_TEXT = """\
The switchboard connects callers to the line they ask for. An operator listens, plugs a cord
into the right jack, and rings the other end. When every line is busy, new callers wait in a
queue until a cord is free. A good operator keeps the queue short and never drops a call.
Language models answer requests one token at a time. A server that batches many requests
together keeps the processor busy and answers everyone sooner. Each request brings a prompt, a
limit on new tokens, and sampling settings such as temperature, top_k and top_p.
def generate(prompt: str, max_new_tokens: int = 20) -> str:
    tokens = tokenizer.encode(prompt)
    for _ in range(max_new_tokens):
        logits = model(tokens)
        tokens.append(int(logits.argmax()))
    return tokenizer.decode(tokens)
{"inputs": "Hello, world!", "parameters": {"max_new_tokens": 16, "do_sample": false}}
<|system|> You are a helpful assistant. <|user|> What is the capital of France? <|assistant|>
The capital of France is Paris. 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 1000, 2048, 4096.
"""

_WORDS = """\
the a an and or but if then else when while for with without to from into onto of off on in
out over under between among through during before after above below up down near far here
there this that these those it its they them their we us our you your he him his she her
is are was were be been being have has had do does did will would can could should may might
must shall not no yes all any some many much more most few less least each every other another
such same different new old good bad great small large big little long short high low early
late young first last next previous right left true false open close start stop begin end
time year day week month hour minute second moment today tomorrow yesterday morning evening
night people person man woman child friend family group team company country city world home
house room door window table chair book paper letter word sentence page story question answer
problem solution idea reason result example number point part place case fact system program
server client request response token model batch queue cache memory thread process network
message stream event error value key list array string integer float boolean object class
function method module package library import return yield async await lambda raise except
try finally assert global print input output file path folder line column row field record
data base index search query filter sort merge split join count sum average minimum maximum
switch board operator cord jack call caller line ring busy wait free drop connect route
prompt sample temperature probability logit penalty sequence length limit budget ratio
python rust django starlette uvicorn torch tensor matrix vector layer weight bias attention
head hidden state position embedding vocabulary merge byte pair encoding decode encode
green blue red yellow black white orange purple brown grey silver gold light dark bright
water fire earth air stone wood metal glass river mountain forest ocean island valley field
walk run jump swim fly drive ride read write speak listen think know learn teach build make
give take bring send receive keep hold move turn change grow fall rise show hide find lose
quickly slowly carefully easily clearly simply really very quite almost always never often
""".split()  # noqa: SIM905 (a word list reads better as text)

_PUNCTUATION = (".", ",", "!", "?", ";", ":", " -", "...")


def _lcg(seed: int) -> Iterator[int]:
    # Numerical Recipes constants; 32-bit integer arithmetic is identical on every platform.
    state = seed & 0xFFFFFFFF
    while True:
        state = (1664525 * state + 1013904223) & 0xFFFFFFFF
        yield state >> 8


def _sentence(rng: Iterator[int]) -> str:
    length = 4 + next(rng) % 12
    words = [_WORDS[next(rng) % len(_WORDS)] for _ in range(length)]
    if next(rng) % 5 == 0:
        words.insert(next(rng) % length, str(next(rng) % 10_000))
    words[0] = words[0].capitalize()
    if next(rng) % 7 == 0:
        words[-1] = words[-1].upper()
    return " ".join(words) + _PUNCTUATION[next(rng) % len(_PUNCTUATION)]


def corpus_lines(*, sentences: int = 6000, seed: int = 20261128) -> list[str]:
    """The training text: the seed paragraphs, then `sentences` generated sentences."""
    rng = _lcg(seed)
    lines = _SEED_TEXT.splitlines()
    paragraph: list[str] = []
    for _ in range(sentences):
        paragraph.append(_sentence(rng))
        if len(paragraph) == 6:
            lines.append(" ".join(paragraph))
            paragraph = []
    if paragraph:
        lines.append(" ".join(paragraph))
    return lines
