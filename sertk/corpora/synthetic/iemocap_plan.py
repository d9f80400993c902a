"""The plan of a synthetic IEMOCAP_full_release tree: every labelled turn's metadata, without audio.

``plan_corpus(size, seed)`` lays out the turns the way the real release has them: ten speakers (one F and
one M actor per session), improvised and scripted dialogs with the five suffixed dialog names
(Ses03M_impro05a/05b/08a/08b, Ses05M_script01_1b), all eleven label codes in IEMOCAP's published
proportions, rater votes that disagree where the label is ambiguous or ``xxx``, attribute ratings and
random transcripts. ``synthetic/iemocap.py`` writes the files and the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sertk.corpora.iemocap import CATEGORY_CODES, LABEL_CODES
from sertk.corpora.synthetic.voice import SAMPLE_RATE
from sertk.errors import SertkError

SESSIONS = (1, 2, 3, 4, 5)

# The label codes and rater category names are the parser's, so the two can never drift apart.
CODES = LABEL_CODES
CATEGORY_NAMES = {code: name.capitalize() for name, code in CATEGORY_CODES.items()}
FOUR_CLASS_CODES = ("neu", "hap", "exc", "ang", "sad")

# Published IEMOCAP counts (10,039 utterances). Improvised counts of neu/hap/ang/sad/exc are published
# (2280 improvised with hap only, 2943 with hap+exc); the split of the other codes is not, so it is chosen
# to put about 41% of them in improvised dialogs, which gives the real corpus's ~4,780 improvised turns.
PUBLISHED_COUNTS = {
    "xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
    "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2,
}  # fmt: skip
IMPRO_COUNTS = {
    "xxx": 1080, "fru": 680, "neu": 1099, "ang": 289, "sad": 608, "exc": 663,
    "hap": 284, "sur": 55, "fea": 24, "oth": 1, "dis": 1,
}  # fmt: skip
# Per session: all utterances, and those in the 4 classes with hap+exc (1085/1023/1151/1031/1241).
SESSION_TOTALS = (1819, 1811, 2136, 2103, 2170)
SESSION_FOUR_CLASS = (1085, 1023, 1151, 1031, 1241)

IMPRO_NAMES = tuple(f"impro{i:02d}" for i in range(1, 9))
SCRIPT_NAMES = (
    "script01_1",
    "script01_2",
    "script01_3",
    "script02_1",
    "script02_2",
    "script03_1",
    "script03_2",
)
# The real release splits these dialogs into parts; their names must parse like the others.
SUFFIXED_DIALOGS = {
    "Ses03M_impro05": ("Ses03M_impro05a", "Ses03M_impro05b"),
    "Ses03M_impro08": ("Ses03M_impro08a", "Ses03M_impro08b"),
    "Ses05M_script01_1": ("Ses05M_script01_1b",),
}


@dataclass(frozen=True)
class CorpusSize:
    """How many utterances, how many dialogs per session and style, and their duration distribution."""

    utterances: int
    dialogs_per_style: int  # per session and style, before the suffixed ones are added; 0 = all
    median_duration: float  # seconds; durations are lognormal around it
    duration_sigma: float
    min_duration: float
    max_duration: float


# full: IEMOCAP's 10,039 turns, lognormal with median 3.5 s and mean ~4.5 s, 0.6-35 s like the real range.
SIZES = {
    "tiny": CorpusSize(200, 2, 1.0, 0.25, 0.6, 1.6),
    "small": CorpusSize(1000, 4, 3.5, 0.71, 0.6, 35.0),
    "full": CorpusSize(10039, 0, 3.5, 0.71, 0.6, 35.0),
}


@dataclass
class UttPlan:
    """Everything written about one labelled turn except its audio."""

    index: int  # position in plan_corpus()'s list; seeds the turn's audio
    utt: str  # Ses01F_impro01_M003
    session: int
    dialog: str
    speaker: str  # Ses01M: the session's actor of the id's last-token letter
    gender: str
    style: str  # impro | script
    label: str  # summary-line code
    votes: list[list[str]]  # per external rater (C-E lines), that rater's codes
    evaluators: list[str]  # E1..E6, one per vote
    self_rating: list[str] | None  # the actor's own C-F1/C-M1 codes (not a vote)
    vad: tuple[float, float, float]  # mean of the A-E lines
    attributes: list[tuple[str, int, int, int]]  # (rater, val, act, dom) per A-E line
    start: float
    end: float
    duration: float
    text: str

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * SAMPLE_RATE))


# ---------------------------------------------------------------------------------------------- the plan

# Which categories raters mix up (first = most often): drives disagreeing and multi-label votes.
NEIGHBOURS = {
    "neu": ("fru", "sad", "exc", "oth"),
    "hap": ("exc", "sur", "neu"),
    "exc": ("hap", "sur", "neu"),
    "ang": ("fru", "dis", "exc"),
    "sad": ("neu", "fru", "fea"),
    "fru": ("ang", "neu", "sad"),
    "sur": ("exc", "hap", "fea"),
    "fea": ("sad", "sur", "fru"),
    "dis": ("ang", "fru", "neu"),
    "oth": ("fru", "neu", "exc"),
}
# What raters say when they disagree (the xxx turns): IEMOCAP's ambiguous turns are mostly fru/neu/ang/exc.
NO_MAJORITY_POOL = ("fru", "neu", "ang", "exc", "sad", "hap", "sur", "fea", "oth")
NO_MAJORITY_POOL_P = (0.30, 0.25, 0.14, 0.11, 0.08, 0.05, 0.03, 0.02, 0.02)
# Valence, activation, dominance targets (1-5 scale) of the A-E attribute ratings.
VAD_TARGETS = {
    "neu": (2.9, 2.5, 2.7), "hap": (3.9, 3.1, 3.0), "exc": (3.8, 3.6, 3.3), "ang": (1.8, 3.8, 3.8),
    "sad": (2.0, 2.3, 2.3), "fru": (2.0, 3.1, 3.1), "sur": (3.4, 3.7, 2.9), "fea": (2.0, 3.4, 2.2),
    "dis": (1.7, 3.2, 3.4), "oth": (2.6, 2.9, 2.8),
}  # fmt: skip
OTHER_WORDS = ("annoyed", "amused", "bored", "nervous", "curious", "confused", "embarrassed")
COMMENTS = ("mildly aggravated but staying polite", "curious", "sarcastic", "teasing", "tired", "hesitant")

WORDS = (
    "I you we they it that this what where when why how yes no okay well just really maybe never always "
    "know think want need mean said told going come look see get take give feel tell say make leave "
    "here there now today tomorrow again back home work car money time people thing way day night "
    "the a my your our some all about with for from to of and but so because if not right good fine "
    "little long wait listen please sorry honey mother father friend job flight line office letter"
).split()
CUE_WORDS = {
    "ang": ("damn", "ridiculous", "stupid", "hell"),
    "hap": ("great", "wonderful", "love", "lovely"),
    "exc": ("amazing", "wow", "fantastic", "great"),
    "sad": ("miss", "sorry", "alone", "lost"),
    "fru": ("again", "ridiculous", "seriously", "whatever"),
    "neu": (),
}


def _size_spec(size: str) -> CorpusSize:
    if size not in SIZES:
        raise SertkError(f"unknown synthetic corpus size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _largest_remainder(weights: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to ``total`` proportional to ``weights`` (Hamilton's method, random ties)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    # The jitter only breaks ties between equal remainders, so counts stay deterministic per seed.
    order = np.argsort(-(exact - counts + rng.uniform(0, 1e-9, exact.shape)), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _label_style_counts(n: int, rng: np.random.Generator) -> dict[tuple[str, str], int]:
    """(code, style) -> count for ``n`` turns, scaled from the published counts, every code at least once."""
    cells = [(code, style) for code in CODES for style in ("impro", "script")]
    weights = np.array(
        [IMPRO_COUNTS[c] if s == "impro" else PUBLISHED_COUNTS[c] - IMPRO_COUNTS[c] for c, s in cells], float
    )
    counts = dict(zip(cells, _largest_remainder(weights, n, rng).tolist(), strict=True))
    for code in CODES:
        if counts[(code, "impro")] + counts[(code, "script")] == 0:
            counts[(code, "impro" if IMPRO_COUNTS[code] * 2 >= PUBLISHED_COUNTS[code] else "script")] = 1
            counts[max(counts, key=counts.get)] -= 1
    return counts


def _dialog_names(session: int, style: str) -> list[str]:
    """The real release's dialogs of one session and style, suffixed parts first."""
    names = []
    for base in IMPRO_NAMES if style == "impro" else SCRIPT_NAMES:
        for prefix in ("F", "M"):
            name = f"Ses{session:02d}{prefix}_{base}"
            names.extend(SUFFIXED_DIALOGS.get(name, (name,)))
    suffixed = [n for n in names if n[-1] in "ab"]
    return suffixed + [n for n in names if n not in suffixed]


def _choose_dialogs(spec: CorpusSize, session: int, style: str, rng: np.random.Generator) -> list[str]:
    names = _dialog_names(session, style)
    if spec.dialogs_per_style == 0:
        return names
    forced = [n for n in names if n[-1] in "ab"]
    others = [n for n in names if n not in forced]
    extra = max(0, spec.dialogs_per_style - len(forced))
    return forced + [others[i] for i in sorted(rng.choice(len(others), extra, replace=False))]


def _vote_counts(votes: list[list[str]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for vote in votes:
        for code in vote:
            counts[code] = counts.get(code, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])


def _majority(votes: list[list[str]]) -> str | None:
    """The code more than half the raters chose and more often than any other, else None."""
    counts = _vote_counts(votes)
    unique = len(counts) == 1 or counts[1][1] < counts[0][1]
    return counts[0][0] if unique and counts[0][1] * 2 > len(votes) else None


def _draw_votes(label: str, num: int, rng: np.random.Generator) -> list[list[str]]:
    """Per-rater codes whose majority is ``label`` (or that have no majority when ``label`` is xxx)."""
    for _ in range(50):
        if label == "xxx":
            votes = [[str(c)] for c in rng.choice(NO_MAJORITY_POOL, num, p=NO_MAJORITY_POOL_P)]
            for vote in votes:
                if rng.uniform() < 0.25:
                    second = str(rng.choice(NEIGHBOURS[vote[0]]))
                    vote.append(second)
            # xxx: no code chosen by more than half of the raters.
            if _vote_counts(votes)[0][1] * 2 <= num:
                return votes
            continue
        # Anything from a bare majority to unanimity: the soft labels derived from votes vary per turn.
        agree = int(rng.integers(num // 2 + 1, num + 1))
        near = NEIGHBOURS[label]
        votes = [[label] for _ in range(agree)]
        votes += [[str(rng.choice(near, p=_neighbour_p(len(near))))] for _ in range(num - agree)]
        for vote in votes:
            if rng.uniform() < 0.2:
                extra = str(rng.choice(near)) if vote[0] == label else label
                vote.append(extra)
        if _majority(votes) == label:
            return votes
    # Practically unreachable; still a valid answer: all different (xxx) or unanimous.
    return [[c] for c in NO_MAJORITY_POOL[:num]] if label == "xxx" else [[label] for _ in range(num)]


def _neighbour_p(n: int) -> np.ndarray:
    p = 0.5 ** np.arange(n)
    return p / p.sum()


def _words(label: str, duration: float, rng: np.random.Generator) -> str:
    count = max(1, int(round(duration * rng.uniform(1.8, 2.8))))
    words = [str(w) for w in rng.choice(WORDS, count)]
    cues = CUE_WORDS.get(label, ())
    if cues and rng.uniform() < 0.3:
        words[int(rng.integers(count))] = str(rng.choice(cues))
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:] + str(rng.choice([".", ".", "?", "!"]))


def _draw_durations(spec: CorpusSize, n: int, rng: np.random.Generator) -> np.ndarray:
    d = np.exp(rng.normal(np.log(spec.median_duration), spec.duration_sigma, n))
    return np.clip(d, spec.min_duration, spec.max_duration)


def plan_corpus(size: str = "tiny", seed: int = 0) -> list[UttPlan]:
    """The deterministic metadata of the corpus ``generate_corpus(out, size, seed)`` writes, without audio.

    One UttPlan per labelled turn, ordered by session, dialog and time; ``index`` is the list position.
    """
    spec = _size_spec(size)
    rng = np.random.default_rng([seed, 0])
    cell_counts = _label_style_counts(spec.utterances, rng)
    four = np.array(SESSION_FOUR_CLASS, float)
    rest = np.array(SESSION_TOTALS, float) - four
    # (session, style) -> labels of its turns.
    pools: dict[tuple[int, str], list[str]] = {(s, st): [] for s in SESSIONS for st in ("impro", "script")}
    for (code, style), count in cell_counts.items():
        per_session = _largest_remainder(four if code in FOUR_CLASS_CODES else rest, count, rng)
        for session, k in zip(SESSIONS, per_session, strict=True):
            pools[(session, style)].extend([code] * int(k))

    plans: list[UttPlan] = []
    for session in SESSIONS:
        dialog_labels: dict[str, list[str]] = {}
        for style in ("impro", "script"):
            labels = pools[(session, style)]
            rng.shuffle(labels)
            dialogs = _choose_dialogs(spec, session, style, rng)
            # Every chosen dialog gets one turn first (the suffixed ones come first), then the rest at random.
            for i, code in enumerate(labels):
                name = dialogs[i] if i < len(dialogs) else dialogs[int(rng.integers(len(dialogs)))]
                dialog_labels.setdefault(name, []).append(code)
        for dialog in sorted(dialog_labels):
            plans.extend(_plan_dialog(spec, session, dialog, dialog_labels[dialog], rng))
    for i, plan in enumerate(plans):
        plan.index = i
    return plans


def _plan_dialog(
    spec: CorpusSize, session: int, dialog: str, labels: list[str], rng: np.random.Generator
) -> list[UttPlan]:
    style = "impro" if "_impro" in dialog else "script"
    evaluators = sorted(str(e) for e in rng.choice([f"E{i}" for i in range(1, 7)], 4, replace=False))
    durations = _draw_durations(spec, len(labels), rng)
    gender = str(rng.choice(["F", "M"]))
    turns = {"F": 0, "M": 0}
    clock = int(round(rng.uniform(1.5, 6.0) * 1e4))  # time in 1e-4 s ticks: the files' 4 decimals, exactly
    plans = []
    for code, duration in zip(labels, durations, strict=True):
        # Dialog partners mostly alternate; now and then one actor holds the floor for two turns.
        if rng.uniform() < 0.8:
            gender = "M" if gender == "F" else "F"
        dur_ticks = int(round(duration * 1e4))
        num = int(rng.choice([2, 3, 4], p=[0.08, 0.84, 0.08]))
        raters = sorted(str(e) for e in rng.choice(evaluators, num, replace=False))
        votes = _draw_votes(code, num, rng)
        base = votes[0][0] if code == "xxx" else code
        attributes = []
        for rater in rng.choice(evaluators, 2, replace=False):
            val, act, dom = np.clip(np.rint(np.array(VAD_TARGETS[base]) + rng.normal(0, 0.7, 3)), 1, 5)
            attributes.append((str(rater), int(val), int(act), int(dom)))
        vad = (
            float(np.mean([a[1] for a in attributes])),
            float(np.mean([a[2] for a in attributes])),
            float(np.mean([a[3] for a in attributes])),
        )
        self_rating = None
        if rng.uniform() < 0.4:
            self_rating = [base if rng.uniform() < 0.7 else str(rng.choice(NEIGHBOURS[base]))]
        utt = f"{dialog}_{gender}{turns[gender]:03d}"
        turns[gender] += 1
        plans.append(
            UttPlan(
                index=-1,
                utt=utt,
                session=session,
                dialog=dialog,
                speaker=f"Ses{session:02d}{gender}",
                gender=gender,
                style=style,
                label=code,
                votes=votes,
                evaluators=raters,
                self_rating=self_rating,
                vad=vad,
                attributes=attributes,
                start=clock / 1e4,
                end=(clock + dur_ticks) / 1e4,
                duration=dur_ticks / 1e4,
                text=_words(code, duration, rng),
            )
        )
        clock += dur_ticks + int(round(rng.uniform(0.05, 1.5) * 1e4))
    return plans
