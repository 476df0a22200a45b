"""What the task modules share to declare their parity comparison and built-in samples.

Each task module (embeddings, classification, tokens, qa) defines

    PARITY_GATE: {threshold name: (per-sample column, "mean" | "min")}
    parity_samples(split)  -> list[ParitySample]   ("eval" or "calibration": disjoint, deterministic)
    parity_metrics(runtime, samples, encodings, reference, candidate) -> {column: per-sample array}

and export asks the registry (functions.tasks.parity_module) for them. The text generator here
is deterministic (fixed seeds, no hub, no files): the same set on every machine and every run.
Classes name what kind of input a sample is, so a report can say which kind drifts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

EVAL, CALIBRATION = "eval", "calibration"
SPLITS = (EVAL, CALIBRATION)
_SEEDS = {EVAL: 13, CALIBRATION: 7919}  # different seeds: calibration never sees an evaluated text


@dataclass(frozen=True)
class ParitySample:
    """One input of a parity set: the text (QA: the question), its pair (QA: the context), a label, a class."""

    text: str
    pair: str | None = None
    label: str | None = None  # gold answer where one is known (classification: a label name)
    kind: str = "user"  # class for reporting: "short", "long", "code", "cjk", ... ("user": an --eval-file line)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays; rows that are both zero count as identical."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return np.where((na == 0) & (nb == 0), 1.0, cos)


# -- the generator ---------------------------------------------------------------------------------

_NOUNS = ("model function request city river report answer server window garden market doctor teacher "
          "student price ticket train weather coffee letter computer phone network account password email "
          "movie book song team game language question problem idea company product customer order").split()
_VERBS = ("opens closes answers sends reads writes builds finds needs loves hates changes starts stops "
          "moves helps checks explains describes follows").split()
_ADJS = ("quick slow new old small large happy sad bright dark cheap expensive quiet loud simple strange "
         "careful broken warm cold").split()
_NAMES = ("Mary Smith", "John Miller", "Ana García", "Li Wei", "Fatima Khan", "Olga Ivanova", "Kenji Sato",
          "Pierre Dubois", "Amara Okafor", "Lars Nilsson")
_PLACES = ("Paris", "London", "Berlin", "Tokyo", "Madrid", "Cairo", "Lima", "Toronto", "Mumbai", "Sydney",
           "Oslo", "Nairobi")
_ORGS = ("Google", "the United Nations", "Siemens", "Toyota", "the BBC", "Amazon", "Nestlé", "the Red Cross")

MULTILINGUAL: dict[str, tuple[str, ...]] = {
    "latin-accents": ("Der schnelle braune Fuchs springt über den faulen Hund.",
                      "Café, naïve, résumé — les accents comptent.", "¿Dónde está la estación de tren?",
                      "Ça coûte vingt-cinq euros, s'il vous plaît.", "Ødegaard spilte godt på lørdag.",
                      "Zażółć gęślą jaźń.", "A ação começou às três horas."),
    "cyrillic": ("Привет, как дела?", "Москва — столица России.", "Я люблю читать книги вечером."),
    "greek": ("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "Καλημέρα σας!"),
    "cjk": ("東京は日本の首都です。", "我喜欢喝茶。", "今天天气很好，我们去公园吧。", "机器学习模型需要数据。"),
    "korean": ("서울은 한국의 수도입니다.", "감사합니다!"),
    "arabic": ("القاهرة هي عاصمة مصر.", "شكرا جزيلا"),
    "hebrew": ("ירושלים היא עיר עתיקה.",),
    "devanagari": ("नमस्ते, आप कैसे हैं?", "दिल्ली भारत की राजधानी है।"),
    "thai": ("กรุงเทพเป็นเมืองหลวงของประเทศไทย",),
    "emoji": ("🙂", "great job 👍🎉", "🔥🔥🔥 so hot today ☀️"),
    "mixed-script": ("The meeting in 東京 starts at 9:00 — très important!", "Order #42: 3× café au lait, ¥1200"),
}
NEAR_EMPTY = (".", "a", "?", "!", "ok", "  ok  ", "\tx\n", "…", "-", "I", "0", "OK.", "hm", "#", "no")
CODE = ("def add(a, b):\n    return a + b", "for (let i = 0; i < n; i++) { sum += arr[i]; }",
        "SELECT name, price FROM products WHERE price > 10 ORDER BY price DESC;",
        '{"id": 17, "tags": ["a", "b"], "ok": true}', "https://example.com/path?q=search&page=2",
        "user.name+tag@example.org", "git commit -m \"fix: handle empty input\"", "x = [i ** 2 for i in range(10)]",
        "<div class=\"row\"><span>Hello</span></div>", "sudo apt-get install -y python3-pip",
        "if err != nil { return nil, err }", "C:\\Users\\me\\Documents\\report.docx", "#include <stdio.h>",
        "lambda x: x * 2", "SyntaxError: invalid syntax (line 3)", "a_b_c = foo.bar(baz)[0]")
PUNCTUATION = ("Wait... what?!", "Yes!!! Absolutely!!!", "(this is in parentheses)", "\"quoted\" and 'single'",
               "well — sort of; maybe: yes?", "*** important ***", "a, b, c; d: e.", "...", "?!?!", "— – -",
               "[1] see note (a) {b}", "50% off!! Only $9.99!!!")
DIGITS = ("12345", "3.14159", "+1 (555) 123-4567", "2026-12-05T03:15:00Z", "$1,299.99", "42",
          "0.0001 and 1e-9", "Room 101, floor 7", "Call 911", "1 2 3 4 5 6 7 8 9 10", "v1.2.3-rc4", "1/2 + 3/4 = 5/4")


def _sentence(rng: random.Random) -> str:
    shapes = (
        lambda: f"The {rng.choice(_ADJS)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the {rng.choice(_NOUNS)}.",
        lambda: f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} a {rng.choice(_ADJS)} {rng.choice(_NOUNS)} in {rng.choice(_PLACES)}.",
        lambda: f"Why does the {rng.choice(_NOUNS)} feel so {rng.choice(_ADJS)} today?",
        lambda: f"How do I reset the {rng.choice(_NOUNS)} when the {rng.choice(_NOUNS)} is {rng.choice(_ADJS)}?",
        lambda: f"{rng.choice(_ORGS)} {rng.choice(_VERBS)} every {rng.choice(_NOUNS)} near {rng.choice(_PLACES)}.",
    )
    return rng.choice(shapes)()


def _words(rng: random.Random, count: int) -> str:
    text: list[str] = []
    while len(text) < count:
        text.extend(_sentence(rng).split())
    return " ".join(text[:count])


def _casing(text: str, how: int) -> str:
    return (text.upper(), text.lower(), text.title(),
            "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text)))[how % 4]


def text_samples(split: str = EVAL, *, scale: int = 1) -> list[ParitySample]:
    """A few hundred texts spanning length (1 word to past any max_tokens), scripts, casing, digits,
    punctuation, code, repetition and near-empty inputs; ``kind`` names each one's class."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    rng = random.Random(_SEEDS[split])
    out: list[ParitySample] = []
    calibration = split == CALIBRATION

    def add(kind: str, text: str) -> None:
        out.append(ParitySample(text=text, kind=kind))

    # length ladder: 1 word to ~600 words (past 512 tokens), several texts per rung
    for count in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610):
        kind = "short" if count <= 3 else "sentence" if count <= 34 else "long"
        # past ~100 words every model truncates alike: two texts per rung suffice there, and they cost most
        for _ in range(1 if calibration else (5 if count < 100 else 2) * scale):
            add(kind, _words(rng, count))
    for _ in range(8 if calibration else 80 * scale):
        add("sentence", _sentence(rng))
    for _ in range(4 if calibration else 30 * scale):
        add("casing", _casing(_sentence(rng), rng.randrange(4)))
    for _ in range(3 if calibration else 16 * scale):  # numbers inside ordinary text
        add("digits", rng.choice((f"Order {rng.randrange(10**6)} ships on {rng.randrange(1, 29)}/{rng.randrange(1, 13)}.",
                                  f"It costs ${rng.randrange(1, 5000)}.{rng.randrange(100):02d} plus {rng.randrange(5, 25)}% tax.",
                                  f"{rng.randrange(10**9, 10**10)}", f"{rng.random() * 1000:.4f}")))
    for _ in range(3 if calibration else 16 * scale):  # ordinary text with emoji, odd punctuation
        add("mixed", _sentence(rng).rstrip(".?") + rng.choice((" 🙂", "!!!", "?!", " :)", " ...", " #win", " (sic)")))
    fixed = [("near-empty", NEAR_EMPTY), ("code", CODE), ("punctuation", PUNCTUATION), ("digits", DIGITS)]
    fixed += [(script, texts) for script, texts in MULTILINGUAL.items()]
    for kind, texts in fixed:
        # calibration gets every third text of a class, evaluation the rest: the splits never share one
        picked = texts[1::3] if calibration else tuple(t for i, t in enumerate(texts) if i % 3 != 1)
        for text in picked:
            add(kind, text)
    for word, times in (("the", 24), ("data", 120), ("ha", 50), ("ok", 7), ("🙂", 30), ("0", 64)):
        times = times // 2 + 1 if calibration else times  # other counts: other texts
        add("repetition", " ".join([word] * times) if word != "ha" else word * times)
    for _ in range(2 if calibration else 6 * scale):  # one sentence repeated until it is long
        add("repetition", " ".join([_sentence(rng)] * rng.randrange(5, 40)))
    return _held_out(out, lambda split: text_samples(split, scale=scale)) if calibration else out


def _held_out(calibration: list[ParitySample], generate) -> list[ParitySample]:
    """Calibration samples minus any the evaluation split also holds (short generated texts can repeat)."""
    evaluation = {(s.text, s.pair) for s in generate(EVAL)}
    return [s for s in calibration if (s.text, s.pair) not in evaluation]


SENTIMENT_POSITIVE = ("I loved this {n}, it was wonderful.", "What a great {n}!", "The {n} works perfectly and I am happy.",
                      "Absolutely fantastic {n}, highly recommended.", "This {n} made my day.")
SENTIMENT_NEGATIVE = ("I hated this {n}, it was terrible.", "What an awful {n}.", "The {n} is broken and I am angry.",
                      "Worst {n} ever, do not buy it.", "This {n} ruined my evening.")


def sentiment_samples(split: str = EVAL) -> list[ParitySample]:
    """Texts with a gold sentiment label ("positive"/"negative"): scored for accuracy only when the
    model's own labels carry those names."""
    rng = random.Random(_SEEDS[split] + 1)
    out = []
    for _ in range(6 if split == CALIBRATION else 30):
        noun = rng.choice(_NOUNS)
        out.append(ParitySample(rng.choice(SENTIMENT_POSITIVE).format(n=noun), label="positive", kind="sentiment"))
        out.append(ParitySample(rng.choice(SENTIMENT_NEGATIVE).format(n=noun), label="negative", kind="sentiment"))
    return _held_out(out, sentiment_samples) if split == CALIBRATION else out


def entity_samples(split: str = EVAL) -> list[ParitySample]:
    """Sentences dense with person, place and organisation names, in several casings."""
    rng = random.Random(_SEEDS[split] + 2)
    out = []
    for i in range(8 if split == CALIBRATION else 40):
        text = (f"{rng.choice(_NAMES)} flew from {rng.choice(_PLACES)} to {rng.choice(_PLACES)} "
                f"to meet {rng.choice(_NAMES)} of {rng.choice(_ORGS)}.")
        out.append(ParitySample(_casing(text, i) if i % 5 == 4 else text, kind="entities"))
    return _held_out(out, entity_samples) if split == CALIBRATION else out


def qa_samples(split: str = EVAL) -> list[ParitySample]:
    """Question/context pairs with a known answer span (``label``): short, long (several windows'
    worth), repetitive, multilingual and near-empty contexts."""
    rng = random.Random(_SEEDS[split] + 3)
    out = []
    rounds = 8 if split == CALIBRATION else 120
    for i in range(rounds):
        name, place, org = rng.choice(_NAMES), rng.choice(_PLACES), rng.choice(_ORGS)
        fact = f"{name} works for {org} in {place}."
        filler = " ".join(_sentence(rng) for _ in range((0, 1, 4, 12, 40)[i % 5]))
        context = f"{filler} {fact} {_sentence(rng)}".strip() if i % 2 else f"{fact} {filler}".strip()
        question, answer = ((f"Where does {name} work?", place), (f"Who works for {org}?", name),
                            (f"Which company does {name} work for?", org))[i % 3]
        kind = "qa-long" if len(filler) > 400 else "qa-short"
        out.append(ParitySample(question, pair=context, label=answer, kind=kind))
    extras = [("qa-near-empty", "?", "ok"), ("qa-near-empty", "Who?", "Mary."),
              ("qa-repetition", "What is repeated?", "data " * 120),
              ("qa-multilingual", "Wo liegt München?", "München liegt in Bayern, im Süden von Deutschland."),
              ("qa-multilingual", "東京はどこですか？", "東京は日本の首都です。"),
              ("qa-digits", "How much does it cost?", "The ticket costs $1,299.99 before tax, or 1.2k euros."),
              ("qa-code", "What does the function return?", "def add(a, b):\n    return a + b"),
              ("qa-casing", "WHERE IS THE RIVER?", "THE RIVER RUNS THROUGH BERLIN, THE CAPITAL OF GERMANY.")]
    for j, (kind, question, context) in enumerate(extras):
        if (split == CALIBRATION) == (j % 3 == 1):
            out.append(ParitySample(question, pair=context, kind=kind))
    return _held_out(out, qa_samples) if split == CALIBRATION else out


__all__ = ["CALIBRATION", "EVAL", "SPLITS", "ParitySample", "cosine_rows", "entity_samples", "qa_samples",
           "sentiment_samples", "text_samples"]
