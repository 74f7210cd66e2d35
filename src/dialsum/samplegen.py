"""Synthetic Korean dialogue-summarization data in the competition format (`data/sample/`).

    dialsum make-sample --out data/sample --force              # regenerate the shipped sample
    dialsum make-sample --out /tmp/s --seed 7 --train 100 --dev 20 --test 20
    pytest tests/test_samplegen.py

Writes `train.csv` and `dev.csv` (`fname,dialogue,summary,topic`), `test.csv` (`fname,dialogue`) and
`test_gold.csv` (`fname,summary1,summary2,summary3`). Each dialogue comes from one of the everyday
scenarios below: 2 to 4 speakers, 4 to 16 turns (`#PersonN#: ...`), polite, formal or casual speech,
fillers and small talk that the summary leaves out, and masked personal data (`#PhoneNumber#`,
`#Address#`, `#Email#`, `#DateOfBirth#`, `#CarNumber#`, `#CardNumber#`). Slot values (places, dishes,
items, times, dates, counts, prices) and outcomes are drawn independently per dialogue, so a model
has to read the dialogue; the summary is written from an observer's view in the plain form and
names the speakers by their mask tokens. One `random.Random(seed)` drives everything: the same
arguments give byte-identical files.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_rows
from dialsum.paths import check_folder

T = TypeVar("T")

SAMPLE_DIR = Path("data/sample")
SAMPLE_ARGS: dict[str, int] = {"seed": 42, "train": 2000, "dev": 200, "test": 200}
MAX_ROWS = 200_000
MIN_TURNS, MAX_TURNS = 4, 16
MAX_DIALOGUE_CHARS = 900
FILLER_RATE = 0.12

# ---------------------------------------------------------------------------------------------
# Korean particles: the form depends on whether the last syllable ends in a consonant (batchim).
# ---------------------------------------------------------------------------------------------
# fmt: off
_PARTICLE_PAIRS = (
    ("은", "는"), ("이", "가"), ("을", "를"), ("과", "와"), ("으로", "로"), ("이랑", "랑"), ("아", "야"),
    ("이에요", "예요"), ("이라고", "라고"), ("이고", "고"), ("이나", "나"), ("이다", "다"), ("이라", "라"), ("이지만", "지만"),
)
# fmt: on
PARTICLES: dict[str, tuple[str, str]] = {form: pair for pair in _PARTICLE_PAIRS for form in pair}
# digit -> (has a final consonant, that consonant is ㄹ), as read in Sino-Korean (일, 이, 삼 ...)
# fmt: off
_DIGIT_FINALS = {
    "0": (True, False), "1": (True, True), "2": (False, False), "3": (True, False), "4": (False, False),
    "5": (False, False), "6": (True, False), "7": (True, True), "8": (True, True), "9": (False, False),
}
# fmt: on
# Latin letters read by their Korean names: 엘, 엠, 엔, 알 end in a consonant
_LETTER_FINALS = {"L": (True, True), "M": (True, False), "N": (True, False), "R": (True, True)}
_RIEUL = 8  # index of ㄹ among the final consonants of a Hangul syllable


def final_sound(word: str) -> tuple[bool, bool]:
    """(has a final consonant, the final consonant is ㄹ) for the last pronounced character of `word`.

    Hangul syllables are decoded; digits are read as Sino-Korean numbers (`10` 십, `300` 백, `1000` 천);
    Latin letters by their names (`KTX` 엑스, `SQL` 엘). Trailing marks such as `#`, `)` or `.` are skipped.
    """
    text = word.rstrip(" #)]}\"'.,!?%")
    if not text:
        return False, False
    last = text[-1]
    if "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28
        return final != 0, final == _RIEUL
    if last.isdigit():
        return _number_final(text)
    return _LETTER_FINALS.get(last.upper(), (False, False))


def _number_final(text: str) -> tuple[bool, bool]:
    digits = re.search(r"[\d,]+$", text).group().replace(",", "")
    if digits[-1] != "0" or not digits.strip("0"):
        return _DIGIT_FINALS[digits[-1]]
    return True, False  # 십, 백, 천, 만, 억 all end in a consonant other than ㄹ


def has_final_consonant(word: str) -> bool:
    """True when the last syllable of `word` has a batchim (`책` yes, `사과` no, `#Person1#` yes: 일)."""
    return final_sound(word)[0]


def josa(word: str, particle: str) -> str:
    """`word` followed by the right form of `particle`: josa('식당', '는') -> '식당은'.

    `particle` may be either form of a pair (은/는, 이/가, 을/를, 과/와, 으로/로, 이랑/랑, 아/야,
    이에요/예요, 이라고/라고, 이고/고, 이나/나, 이다/다, 이라/라). 으로 becomes 로 after ㄹ too.
    """
    if particle not in PARTICLES:
        raise ValueError(f"unknown particle {particle!r}; known: {', '.join(PARTICLES)}")
    with_final, without_final = PARTICLES[particle]
    has_final, rieul = final_sound(word)
    if with_final == "으로" and rieul:
        return word + without_final
    return word + (with_final if has_final else without_final)


_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")


def fill(template: str, slots: dict[str, str]) -> str:
    """Replace `{key}` by `slots[key]` and `{key:을}` by the value with the matching particle."""

    def value(match: re.Match[str]) -> str:
        text = slots[match.group(1)]
        return josa(text, match.group(2)) if match.group(2) else text

    return _SLOT.sub(value, template)


# ---------------------------------------------------------------------------------------------
# Shared value pools and slot makers
# ---------------------------------------------------------------------------------------------
# fmt: off
_AREAS = (
    "서초", "마포", "합정", "연남", "성수", "종로", "을지로", "신촌", "잠실", "강남", "홍대", "이태원",
    "여의도", "목동", "노원", "건대", "왕십리", "사당", "신림", "영등포", "구로", "천호", "미아", "수유",
    "상암", "판교", "분당", "일산", "부평", "수원", "광명", "안양", "의정부", "해운대", "서면", "동성로",
    "둔산", "청주", "전주", "송도",
)
_PREFIXES = (
    "한솔", "바다", "소나무", "별빛", "푸른", "하늘", "온누리", "미소", "해담", "달빛", "청기와", "들꽃",
    "참새", "나무", "솔향", "은하수", "보름달", "무지개", "봄날", "다온", "가온", "새벽", "초록", "마루",
    "구름", "물결", "동백", "느티", "한빛", "산들", "노을", "햇살", "이음", "가람", "버들", "아름",
)
_SURNAMES = ("김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신", "권", "황", "안", "송")
_GIVEN = (
    "민수", "지훈", "서연", "지민", "하은", "준호", "수빈", "예린", "도윤", "현우", "유진", "태민", "소희",
    "은지", "재원", "민지", "상우", "다은", "성민", "혜진", "동현", "보람", "진영", "가영", "승현", "나래",
    "우진", "채원", "한결", "세린",
)
# fmt: on
_WEEKDAYS = ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일")
_COLORS = (
    "검은색",
    "흰색",
    "남색",
    "회색",
    "베이지색",
    "빨간색",
    "하늘색",
    "초록색",
    "분홍색",
    "갈색",
    "노란색",
    "보라색",
)
_HOURS = {"오전": (9, 10, 11), "낮": (12,), "오후": (1, 2, 3, 4, 5), "저녁": (5, 6, 7, 8, 9)}
_NATIVE_COUNTS = ("두", "세", "네", "다섯", "여섯")


def _clock(rng: random.Random, periods: Sequence[str] = ("오전", "낮", "오후", "저녁")) -> str:
    period = rng.choice(periods)
    hour = rng.choice(_HOURS[period])
    return f"{period} {hour}시" + (" 반" if rng.random() < 0.4 else "")


def _other_clock(rng: random.Random, taken: str, periods: Sequence[str] = ("오후", "저녁")) -> str:
    while (value := _clock(rng, periods)) == taken:
        pass
    return value


def _date(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.randint(1, 12)}월 {rng.randint(1, 28)}일"
    return f"{rng.choice(('이번 주', '다음 주'))} {rng.choice(_WEEKDAYS)}"


def _won(amount: int) -> str:
    """Korean money text: 35000 -> '3만 5천 원', 250000000 -> '2억 5천만 원'."""
    eok, rest = divmod(amount, 100_000_000)
    man, rest = divmod(rest, 10_000)
    parts = [f"{eok}억"] if eok else []
    if man:
        parts.append(f"{man // 1000}천만" if man % 1000 == 0 and man >= 1000 else f"{man:,}만")
    if rest >= 1000:
        parts.append(f"{rest // 1000}천")
    return " ".join(parts) + " 원"


def _price(rng: random.Random, low: int, high: int, step: int = 1000) -> tuple[int, str]:
    amount = rng.randrange(low, high + 1, step)
    return amount, _won(amount)


def _person_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN)


def _shop(rng: random.Random, kind: str) -> str:
    return f"{rng.choice(_PREFIXES)} {kind}"


def _group(roles: Sequence[str], particle: str = "") -> str:
    """Template text naming several speakers: ('A','B','C'), '은' -> '{A}, {B:과} {C:은}'."""
    last = f"{{{roles[-1]}:{particle}}}" if particle else f"{{{roles[-1]}}}"
    if len(roles) == 1:
        return last
    pair = f"{{{roles[-2]}:과}} {last}"
    head = ", ".join(f"{{{r}}}" for r in roles[:-2])
    return f"{head}, {pair}" if head else pair


def fp(formal: str, polite: str) -> dict[str, str]:
    """One line in 합쇼체 (formal) and 해요체 (polite); the speaker's voice picks one."""
    return {"F": formal, "P": polite}


# ---------------------------------------------------------------------------------------------
# A scene: the turns of one dialogue, its slots and its summary templates
# ---------------------------------------------------------------------------------------------
_FILLERS = {"F": ("음.. ", "아, "), "P": ("음.. ", "아, ", "어.. "), "C": ("음.. ", "아, ", "어, ")}
_INTERJECTION = re.compile(r"(음|아|어|네|야|와|오)\b")
# fmt: off
_REACTIONS = {
    "F": ("아, 그렇군요.", "네, 알겠습니다.", "아, 네. 그렇군요."),
    "P": ("아 그렇군요.", "아, 네.", "아 그래요?", "네, 알겠어요."),
    "C": ("아 그래?", "오케이.", "알겠어.", "아 진짜?"),
}
_WEATHER = (  # polite remark, casual remark, polite reply, casual reply
    ("오늘 날씨가 정말 덥네요.", "오늘 진짜 덥다.", "그러게요, 벌써 여름 같아요.", "그러게, 완전 여름이야."),
    ("비가 꽤 많이 오네요.", "비 엄청 온다.", "네, 아침부터 계속 내리네요.", "응, 우산 없었으면 큰일 날 뻔했어."),
    ("오늘 바람이 많이 차네요.", "오늘 바람 진짜 차다.", "네, 이제 겨울인가 봐요.", "그러니까, 패딩 꺼내야겠어."),
    ("오늘 미세먼지가 심하대요.", "오늘 미세먼지 심하대.", "아 그래요? 마스크 써야겠네요.", "헐, 마스크 챙길 걸."),
    ("날씨 정말 좋네요.", "날씨 진짜 좋다.", "네, 산책하기 딱 좋은 날씨예요.", "그러게, 놀러 가고 싶다."),
    ("하늘이 흐린 게 눈이 오려나 봐요.", "눈 오려나 봐, 하늘 흐리다.", "그러게요, 길이 미끄러울까 봐 걱정이에요.", "그러게, 길 미끄럽겠다."),
)
# fmt: on


@dataclass
class _Scene:
    rng: random.Random
    voice: dict[str, str] = field(default_factory=dict)  # role -> "F" (합쇼체) | "P" (해요체) | "C" (반말)
    slots: dict[str, str] = field(default_factory=dict)
    turns: list[tuple[str, str]] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def say(self, role: str, *options: str | dict[str, str]) -> None:
        """Add a turn: one of `options` (a plain line, or an `fp(...)` pair chosen by the voice)."""
        option = self.rng.choice(options)
        if isinstance(option, dict):
            option = option.get(self.voice[role]) or next(iter(option.values()))
        text = fill(option, self.slots)
        if self.rng.random() < FILLER_RATE and not _INTERJECTION.match(text):
            text = self.rng.choice(_FILLERS[self.voice[role]]) + text
        self.turns.append((role, text))

    def react(self, role: str, p: float = 0.35) -> None:
        """A short reaction ("아 그렇군요.") to what the other speaker just said."""
        if self.turns and self.turns[-1][0] != role and self.chance(p):
            self.turns.append((role, self.pick(_REACTIONS[self.voice[role]])))

    def smalltalk(self, first: str, second: str, p: float = 0.3) -> None:
        """Weather talk the summary leaves out."""
        if self.chance(p):
            polite, casual, reply_polite, reply_casual = self.pick(_WEATHER)
            self.turns.append((first, casual if self.voice[first] == "C" else polite))
            self.turns.append((second, reply_casual if self.voice[second] == "C" else reply_polite))

    def summary(self, *templates: str) -> None:
        self.summaries.extend(templates)

    def set(self, **values: str) -> None:
        self.slots.update(values)


@dataclass(frozen=True)
class Dialogue:
    """One generated example: the dialogue text, its topic and its summary wordings (3 or more)."""

    dialogue: str
    topic: str
    summaries: tuple[str, ...]
    turns: int


def _merge_turns(lines: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One speaker's consecutive lines become one turn."""
    turns: list[tuple[str, str]] = []
    for role, line in lines:
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]} {line}")
        else:
            turns.append((role, line))
    return turns


def _render(scene: _Scene, topic: str) -> Dialogue:
    """Number the speakers by first appearance and fill the summary templates with their tokens."""
    turns = _merge_turns(scene.turns)
    tokens: dict[str, str] = {}
    for role, _ in turns:
        tokens.setdefault(role, f"#Person{len(tokens) + 1}#")
    slots = {**scene.slots, **tokens}
    text = "\n".join(f"{tokens[role]}: {line}" for role, line in turns)
    summaries = tuple(dict.fromkeys(fill(t, slots) for t in scene.summaries))
    return Dialogue(text, topic, summaries, len(turns))


# ---------------------------------------------------------------------------------------------
# Scenarios. Each fills a scene: voices, slots, turns, and at least three summary wordings.
# ---------------------------------------------------------------------------------------------
# fmt: off
_RESTAURANT_KINDS = (
    "식당", "한정식", "갈비", "파스타", "스시", "비스트로", "칼국수", "곱창", "횟집", "중화요리", "쌈밥",
    "브런치 카페", "스테이크 하우스", "삼계탕", "이탈리안 키친",
)
# fmt: on
_TABLE_REQUESTS = (
    "창가 자리",
    "조용한 룸",
    "유아 의자",
    "생일 케이크 보관",
    "주차 공간",
    "채식 메뉴",
    "단체석",
)


def _restaurant_booking(s: _Scene) -> None:
    s.voice.update(C="P", S=s.pick("FP"))
    s.set(
        rest=_shop(s.rng, s.pick(_RESTAURANT_KINDS)),
        date=_date(s.rng),
        n=f"{s.rng.randint(2, 12)}명",
        time=_clock(s.rng, ("낮", "저녁")),
        name=_person_name(s.rng),
        phone="#PhoneNumber#",
        req=s.pick(_TABLE_REQUESTS),
    )
    s.set(alt=_other_clock(s.rng, s.slots["time"], ("낮", "저녁")))
    if s.chance(0.5):
        s.say("S", fp("감사합니다, {rest}입니다.", "네, {rest}입니다."))
        s.say("C", "안녕하세요, 예약 좀 하려고 하는데요.", "여보세요, 자리 예약 가능할까요?")
    else:
        s.say(
            "C", "여보세요, {rest} 맞죠? 예약 좀 하려고요.", "안녕하세요, 거기 {rest}죠? 예약 문의드리려고요."
        )
        s.say("S", fp("네, 맞습니다. 언제로 예약해 드릴까요?", "네, 맞아요. 언제 오실 건가요?"))
    s.say("C", "{date} {time}에 {n:이} 갈 건데 자리 있을까요?", "{date} {time}에 {n} 자리 부탁드려요.")
    full = s.chance(0.4)
    if full:
        s.say(
            "S",
            fp(
                "죄송합니다만 그 시간은 예약이 다 찼습니다. {alt}에는 자리가 있습니다.",
                "어쩌죠, 그 시간은 자리가 다 찼어요. {alt}에는 가능해요.",
            ),
        )
        s.say("C", "음.. 그럼 {alt:으로} 해 주세요.", "아쉽네요. 그럼 {alt:으로} 할게요.")
    else:
        s.say("S", fp("네, 그 시간에 {n} 자리 가능합니다.", "네, 그 시간 괜찮아요."))
    s.say("S", fp("예약자 성함과 연락처 부탁드립니다.", "성함이랑 연락처 알려 주시겠어요?"))
    s.say("C", "{name:이고}, 번호는 {phone:이에요}.", "이름은 {name}, 연락처는 {phone:이에요}.")
    request = s.chance(0.4)
    if request:
        s.say("C", "그리고 혹시 {req} 부탁드려도 될까요?", "아, 그리고 {req}도 가능할까요?")
        s.say("S", fp("네, 준비해 두겠습니다.", "네, 준비해 둘게요."))
    s.smalltalk("S", "C", 0.15)
    s.say("S", fp("예약 완료되었습니다. 그날 뵙겠습니다.", "예약됐어요. 그날 뵐게요."))
    _restaurant_summaries(s, full, request)


def _restaurant_summaries(s: _Scene, full: bool, request: bool) -> None:
    extra = " {C:은} {req}도 부탁한다." if request else ""
    if full:
        s.summary(
            "{C:은} {date} {time}에 {n} 자리를 예약하려 하지만 자리가 없어 {alt:으로} 예약한다." + extra,
            "{S:은} {time}에는 자리가 다 찼다고 하고, {C:은} {date} {alt:으로} {n} 예약을 한다." + extra,
            "{C:은} {rest}에 {n} 예약을 문의하고, 원하던 {time:이} 차서 {alt:으로} 시간을 바꾼다." + extra,
        )
    else:
        s.summary(
            "{C:은} {rest}에 전화해 {date} {time}에 {n} 자리를 예약한다." + extra,
            "{C:은} {S}에게 {date} {time}에 {n:이} 식사할 자리를 예약하고 연락처를 남긴다." + extra,
            "{S:은} {C}의 전화를 받아 {date} {time} {n} 예약을 잡아 준다." + extra,
        )


# fmt: off
_SYMPTOMS = (  # symptom, possible diagnoses
    ("기침", ("감기", "기관지염")), ("목 통증", ("인후염", "편도선염")), ("두통", ("긴장성 두통", "편두통")),
    ("복통", ("장염", "급성 위염")), ("허리 통증", ("근육 염좌", "허리 디스크 초기 증상")),
    ("가려움", ("알레르기성 피부염", "두드러기")), ("발목 통증", ("발목 염좌", "인대 손상")),
    ("어지럼증", ("빈혈", "이석증")), ("콧물", ("알레르기성 비염", "코감기")), ("속쓰림", ("역류성 식도염", "위염")),
    ("눈 충혈", ("결막염", "안구 건조증")), ("몸살", ("독감", "몸살감기")),
)
# fmt: on
_SINCE = ("이틀", "사흘", "나흘", "닷새", "일주일", "열흘", "2주", "3주", "보름", "한 달")
# fmt: off
_ADVICE = (  # doctor's words, summary words
    ("물을 많이 드시고 푹 쉬세요", "푹 쉬라고"), ("당분간 맵고 짠 음식은 피하세요", "자극적인 음식을 피하라고"),
    ("무리한 운동은 당분간 하지 마세요", "운동을 쉬라고"), ("술은 당분간 드시지 마세요", "술을 마시지 말라고"),
    ("스트레칭을 자주 해 주세요", "스트레칭을 자주 하라고"), ("잠을 충분히 주무세요", "잠을 충분히 자라고"),
    ("따뜻한 물을 자주 드세요", "따뜻한 물을 자주 마시라고"), ("찬 바람 쐬지 마시고 따뜻하게 입으세요", "따뜻하게 입으라고"),
)
_DOCTOR_QUESTIONS = (  # doctor's question, patient's answer (small details the summary leaves out)
    (fp("열은 없으셨습니까?", "혹시 열도 나세요?"), "어젯밤에 열이 좀 났어요."),
    (fp("열은 없으셨습니까?", "혹시 열도 나세요?"), "아니요, 열은 없어요."),
    ("밤에 잠은 잘 주무세요?", "잘 못 자요. 자꾸 깨요."),
    (fp("드시는 약이 있으십니까?", "혹시 드시는 약 있으세요?"), "아니요, 따로 먹는 약은 없어요."),
    ("식사는 잘 하세요?", "입맛이 없어서 조금밖에 못 먹어요."),
)
# fmt: on
_TESTS = ("혈액 검사", "엑스레이 촬영", "소변 검사", "초음파 검사")


def _doctor_visit(s: _Scene) -> None:
    symptom, diagnoses = s.pick(_SYMPTOMS)
    advice, advice_sum = s.pick(_ADVICE)
    s.voice.update(P="P", D=s.pick("FP"), N="P")
    s.set(
        sym=symptom,
        diag=s.pick(diagnoses),
        since=s.pick(_SINCE),
        days=s.pick(("3일", "5일", "일주일", "열흘")),
        advice=advice,
        advice_sum=advice_sum,
        test=s.pick(_TESTS),
        back=_date(s.rng),
        name=_person_name(s.rng),
    )
    nurse = s.chance(0.35)
    if nurse:
        s.say(
            "N",
            "접수 도와드릴게요. 성함이랑 생년월일 말씀해 주세요.",
            "어떻게 오셨어요? 처음 오셨으면 성함부터 알려 주세요.",
        )
        s.say("P", "{name:이고}, 생년월일은 #DateOfBirth#입니다.", "{name:이에요}. 생일은 #DateOfBirth#예요.")
        s.say("N", "네, 잠시 기다리시면 진료실로 안내해 드릴게요.", "확인됐어요. 들어가시면 돼요.")
    s.say("D", fp("어디가 불편해서 오셨습니까?", "어디가 불편해서 오셨어요?"))
    s.say("P", "{since} 전부터 {sym:이} 심해요.", "음.. {since} 전부터 {sym} 때문에 너무 힘들어요.")
    question, answer = s.pick(_DOCTOR_QUESTIONS)
    s.say("D", question)
    s.say("P", answer)
    s.say("D", fp("진찰해 보니 {diag:으로} 보입니다.", "진찰해 보니까 {diag} 같네요."))
    tested = s.chance(0.35)
    if tested:
        s.say(
            "D",
            fp(
                "정확히 보려고 {test:을} 해 보겠습니다. 결과는 {back}에 나옵니다.",
                "혹시 모르니 {test:을} 해 볼게요. 결과는 {back}에 나와요.",
            ),
        )
        s.react("P", 0.5)
    s.say(
        "D",
        fp("{days}치 약을 처방해 드리겠습니다. 그리고 {advice}.", "{days}치 약 처방해 드릴게요. {advice}."),
    )
    s.say("P", "네, 감사합니다.", "알겠습니다. 감사합니다, 선생님.")
    _doctor_summaries(s, nurse, tested)


def _doctor_summaries(s: _Scene, nurse: bool, tested: bool) -> None:
    visit = "{N}에게 접수하고 진료를 받는다" if nurse else "병원에 온다"
    desk = "{N}에게 접수하고 " if nurse else ""
    test = " {test} 결과는 {back}에 나온다." if tested else ""
    s.summary(
        f"{{P:은}} {{since}} 전부터 {{sym:이}} 심해 {visit}. {{D:은}} {{diag:이라고}} 보고 {{days}}치 약을 처방한다."
        + test,
        "{D:은} {sym:이} 심한 {P}에게 {diag:이라고} 말하며 {days}치 약을 주고 {advice_sum} 한다." + test,
        f"{{P:은}} {{sym}} 때문에 {desk}진료를 받는다. {{D:은}} {{diag:이라고}} 진단하고 {{advice_sum}} 조언한다."
        + test,
    )


# fmt: off
_CLOTHES = (
    "코트", "셔츠", "청바지", "원피스", "니트", "운동화", "패딩", "블라우스", "슬랙스", "후드티", "구두", "가디건",
    "트렌치코트", "반바지", "스커트",
)
_GADGETS = (
    "무선 이어폰", "전기 주전자", "가습기", "헤어드라이어", "무선 마우스", "블루투스 스피커", "커피 머신", "키보드",
    "보조 배터리", "전기면도기", "탁상 선풍기", "스마트워치", "믹서기", "공기청정기", "전동 칫솔",
)
_CLOTHES_FAULTS = (  # customer's words, summary words, what to exchange for
    ("입어 보니까 사이즈가 좀 작더라고요", "사이즈가 작아서", "한 치수 큰 것"),
    ("입어 보니까 너무 크더라고요", "사이즈가 커서", "한 치수 작은 것"),
    ("색이 화면에서 본 거랑 너무 달라서요", "색이 화면과 달라서", "{color2} 제품"),
    ("지퍼가 처음부터 고장 나 있었어요", "지퍼가 고장 나 있어서", "새 제품"),
    ("박음질이 뜯어져 있더라고요", "박음질이 뜯어져 있어서", "새 제품"),
)
_GADGET_FAULTS = (
    ("전원이 아예 안 켜져요", "전원이 켜지지 않아서", "새 제품"),
    ("소음이 너무 심해서요", "소음이 심해서", "새 제품"),
    ("겉에 흠집이 나 있더라고요", "흠집이 있어서", "새 제품"),
    ("충전이 안 돼요", "충전이 되지 않아서", "새 제품"),
    ("색이 생각했던 거랑 달라서요", "색이 생각과 달라서", "{color2} 제품"),
)
# fmt: on
_WHEN_BOUGHT = ("지난주에", "사흘 전에", "어제", "지난 주말에", "그저께", "열흘 전에")


def _product_return(s: _Scene) -> None:
    clothes = s.chance(0.5)
    fault, fault_sum, target = s.pick(_CLOTHES_FAULTS if clothes else _GADGET_FAULTS)
    color, color2 = s.rng.sample(_COLORS, 2)
    s.voice.update(C="P", S=s.pick("FP"))
    s.set(
        item=f"{color} {s.pick(_CLOTHES if clothes else _GADGETS)}",
        fault=fault,
        fault_sum=fault_sum,
        when=s.pick(_WHEN_BOUGHT),
        color2=color2,
        price=_price(s.rng, 19000, 289000)[1],
    )
    s.set(target=fill(target, s.slots))
    if s.chance(0.5):
        s.say("S", fp("어서 오십시오. 무엇을 도와드릴까요?", "어서 오세요. 뭘 도와드릴까요?"))
        s.say("C", "{when} 여기서 {item:을} 샀는데요, {fault}.")
    else:
        s.say("C", "저기요, {when} 산 {item} 반품하려고 왔는데요. {fault}.")
    s.say(
        "S",
        fp("아, 불편을 드려 죄송합니다. 영수증 가지고 오셨습니까?", "아, 불편하셨겠어요. 영수증 있으세요?"),
    )
    receipt = s.chance(0.75)
    refund = receipt and s.chance(0.55)
    if not receipt:
        s.say("C", "아.. 영수증은 버렸는데요.", "영수증을 잃어버렸어요. 안 될까요?")
        s.say(
            "S",
            fp(
                "영수증이 없으시면 환불은 어렵고 교환만 가능합니다.",
                "영수증이 없으면 환불은 안 되고 교환만 돼요.",
            ),
        )
        s.say("C", "그럼 {target:으로} 바꿔 주세요.")
    elif refund:
        s.say("C", "네, 여기요. 그냥 환불해 주세요.", "여기 있어요. 환불받고 싶어요.")
        s.say(
            "S",
            fp(
                "네, {price} 결제하신 카드로 취소해 드리겠습니다. 사흘 정도 걸립니다.",
                "네, {price} 카드로 취소해 드릴게요. 사흘쯤 걸려요.",
            ),
        )
    else:
        s.say("C", "네, 여기요. 혹시 {target:으로} 교환할 수 있을까요?")
        s.say(
            "S",
            fp(
                "잠시만요, 재고 확인해 보겠습니다. 네, 있습니다. 바로 바꿔 드리겠습니다.",
                "잠깐만요, 재고 볼게요. 있네요, 바로 바꿔 드릴게요.",
            ),
        )
    s.react("C", 0.3)
    s.say("S", fp("이용해 주셔서 감사합니다.", "불편 드려서 죄송해요. 또 오세요."))
    _return_summaries(s, receipt, refund)


def _return_summaries(s: _Scene, receipt: bool, refund: bool) -> None:
    if refund:
        s.summary(
            "{C:은} {when} 산 {item:이} {fault_sum} 반품하러 온다. {S:은} 영수증을 확인하고 {price:을} 카드로 환불해 준다.",
            "{C:은} {fault_sum} {item:을} 반품하고 {price:을} 환불받는다.",
            "{S:은} {item:이} {fault_sum} 가게에 온 {C}에게 {price:을} 환불해 준다.",
        )
        return
    note = " 영수증이 없어 환불은 되지 않는다." if not receipt else ""
    s.summary(
        "{C:은} {when} 산 {item:이} {fault_sum} 가게를 찾아와 {target:으로} 교환한다." + note,
        "{C:은} {fault_sum} {item:을} 바꾸고 싶어 하고, {S:은} {target:으로} 교환해 준다." + note,
        "{S:은} {C}의 {item:을} {target:으로} 바꿔 준다. {item:이} {fault_sum} 교환을 요청했기 때문이다."
        + note,
    )


# fmt: off
_FACILITIES = ("도서관", "우체국", "구청", "보건소", "전통시장", "미술관", "체육공원", "주민센터", "버스터미널", "세무서", "박물관", "문화회관")
_LANDMARKS = ("편의점", "약국", "은행", "주유소", "카페", "빵집", "꽃집", "세탁소", "초등학교", "사거리", "경찰서", "우체통", "공영 주차장")
# fmt: on


def _asking_the_way(s: _Scene) -> None:
    area, station = s.rng.sample(_AREAS, 2)
    lm, lm2 = s.rng.sample(_LANDMARKS, 2)
    s.voice.update(A="P", B=s.pick("PF"))
    s.set(
        dest=f"{area} {s.pick(_FACILITIES)}",
        lm=lm,
        lm2=lm2,
        dir=s.pick(("오른쪽", "왼쪽")),
        mins=f"{s.rng.randint(3, 20)}분",
        bus=str(s.rng.randint(100, 9999)),
        stops=f"{s.pick(_NATIVE_COUNTS)} 정거장",
        line=f"{s.rng.randint(1, 9)}호선",
        station=f"{station}역",
    )
    s.say("A", "실례합니다. 혹시 {dest:이} 어디 있는지 아세요?", "저기요, {dest}에 어떻게 가야 하나요?")
    mode = s.pick(("walk", "bus", "subway"))
    if mode == "walk":
        s.say("B", fp("네, 압니다. 걸어서 {mins} 정도 걸립니다.", "아, {dest}요? 걸어서 {mins} 정도면 가요."))
        s.say("A", "다행이네요. 어느 쪽으로 가면 돼요?", "걸어갈 수 있군요. 어떻게 가요?")
        s.say(
            "B",
            fp(
                "이 길로 쭉 가시다가 {lm}에서 {dir:으로} 도십시오.",
                "이 길로 쭉 가다가 {lm}에서 {dir:으로} 도세요.",
            ),
        )
        s.say("B", fp("그러면 {lm2} 옆에 바로 보입니다.", "그럼 {lm2} 옆에 바로 보일 거예요."))
    elif mode == "bus":
        s.say(
            "B",
            fp(
                "걸어가기엔 좀 멉니다. {bus}번 버스를 타시는 게 좋습니다.",
                "걸어가긴 좀 멀어요. {bus}번 버스 타세요.",
            ),
        )
        s.say("A", "{bus}번이요? 정류장은 어디예요?")
        s.say(
            "B",
            fp(
                "저기 {lm} 앞에 있습니다. {stops} 가서 내리시면 됩니다.",
                "저기 {lm} 앞에 있어요. {stops} 가서 내리면 돼요.",
            ),
        )
    else:
        s.say(
            "B",
            fp(
                "거기는 지하철이 편합니다. {line:을} 타고 {station}에서 내리십시오.",
                "거긴 지하철이 편해요. {line} 타고 {station}에서 내리세요.",
            ),
        )
        s.say("A", "역에서 멀어요?", "내려서 또 걸어야 하나요?")
        s.say(
            "B",
            fp(
                "역에서 나와서 {lm} 쪽으로 {mins} 정도 걸으시면 됩니다.",
                "역에서 나와서 {lm} 쪽으로 {mins}만 걸으면 돼요.",
            ),
        )
    s.smalltalk("A", "B", 0.2)
    s.say("A", "아 그렇군요. 정말 감사합니다.", "덕분에 살았어요. 감사합니다!")
    s.say("B", fp("천만에요. 조심히 가십시오.", "아니에요, 조심히 가세요."))
    _way_summaries(s, mode)


def _way_summaries(s: _Scene, mode: str) -> None:
    ask = "{A:은} {B}에게 {dest:으로} 가는 길을 묻는다. "
    if mode == "walk":
        s.summary(
            ask + "{B:은} 이 길로 가다가 {lm}에서 {dir:으로} 돌면 걸어서 {mins} 거리라고 알려 준다.",
            "{B:은} {dest:을} 찾는 {A}에게 {lm}에서 {dir:으로} 돌라고 알려 준다. 걸어서 {mins} 정도 걸린다.",
            "{A:은} {dest}에 가는 길을 묻고, {lm}에서 {dir:으로} 돌면 {lm2} 옆에 있다는 설명을 듣는다.",
        )
    elif mode == "bus":
        s.summary(
            ask + "{B:은} {lm} 앞 정류장에서 {bus}번 버스를 타고 {stops} 가라고 알려 준다.",
            "{B:은} {dest:이} 걸어가기엔 멀다며 {A}에게 {bus}번 버스를 타라고 한다. {stops} 가서 내리면 된다.",
            "{A:은} {dest}에 가려고 길을 묻고, {lm} 앞에서 {bus}번 버스를 타면 된다는 안내를 받는다.",
        )
    else:
        s.summary(
            ask + "{B:은} {line:을} 타고 {station}에서 내린 뒤 {lm} 쪽으로 {mins} 걸으라고 알려 준다.",
            "{B:은} {dest:을} 찾는 {A}에게 지하철 {line:을} 타고 {station}에서 내리라고 한다.",
            "{A:은} {dest}에 가는 길을 묻고, {line:으로} {station}까지 간 다음 {mins} 걸으면 된다는 설명을 듣는다.",
        )


_COMPANY_KINDS = (
    "전자",
    "물산",
    "소프트",
    "디자인",
    "푸드",
    "제약",
    "건설",
    "물류",
    "테크",
    "화학",
    "에너지",
    "미디어",
)
# fmt: off
_POSITIONS = (
    "마케팅팀 인턴", "회계 담당자", "웹 개발자", "영업 사원", "그래픽 디자이너", "물류 관리자", "번역가", "고객 상담원",
    "연구 보조원", "인사팀 신입 사원", "데이터 분석가", "홍보 담당자", "품질 관리자", "앱 개발자", "기획팀 사원",
)
_PRIOR_JOBS = (
    "작은 광고 회사", "무역 회사", "스타트업", "출판사", "호텔", "대학 연구실", "은행", "온라인 쇼핑몰", "게임 회사",
    "여행사", "병원 행정실", "방송국", "편의점 본사", "건축 사무소",
)
# fmt: on
_SKILLS = (
    "엑셀",
    "파이썬",
    "영어 회화",
    "포토샵",
    "일본어",
    "중국어",
    "데이터 분석",
    "영상 편집",
    "SQL",
    "프레젠테이션",
)
# fmt: off
_MOTIVES = (
    "{company}의 제품을 오래 써 왔고, 직접 만들어 보고 싶어서 지원했습니다.",
    "더 큰 회사에서 제 경험을 살려 보고 싶었습니다.",
    "회사의 성장 속도가 빠르다고 들어서 함께 성장하고 싶었습니다.",
)
# fmt: on


def _job_interview(s: _Scene) -> None:
    s.voice.update(I="F", J="F", K="F")
    s.set(
        company=_shop(s.rng, s.pick(_COMPANY_KINDS)),
        position=s.pick(_POSITIONS),
        prior=s.pick(_PRIOR_JOBS),
        years=s.pick(("6개월", "1년", "2년", "3년", "4년", "5년", "7년")),
        skill=s.pick(_SKILLS),
        start=s.pick(("다음 달 1일", "다음 주 월요일", "2주 뒤", "이번 달 말")),
        date2=_date(s.rng),
        time=_clock(s.rng, ("오전", "오후")),
        result_day=s.pick(("이번 주 금요일", "다음 주 월요일", "다음 주 수요일")),
    )
    second = s.chance(0.4)
    asker = "K" if second else "I"
    s.say("I", "안녕하세요. {company} {position} 면접에 오신 걸 환영합니다. 간단히 자기소개 부탁드립니다.")
    s.say(
        "J",
        "안녕하십니까. 저는 {prior}에서 {years} 동안 일했습니다.",
        "안녕하십니까. {prior}에서 {years} 근무하고 지원하게 되었습니다.",
    )
    s.say("I", "저희 회사에는 왜 지원하셨습니까?")
    s.say("J", *_MOTIVES)
    s.say(asker, "{skill:은} 어느 정도 하십니까?", "혹시 {skill}도 하실 수 있습니까?")
    strong = s.chance(0.6)
    s.say(
        "J",
        "네, 지난 회사에서 {skill:을} 매일 썼습니다."
        if strong
        else "아직 부족하지만 지금 {skill:을} 배우고 있습니다.",
    )
    s.say("I", "언제부터 출근하실 수 있습니까?")
    s.say("J", "{start}부터 가능합니다.")
    outcome = s.pick(("email", "second", "phone"))
    if outcome == "email":
        s.say("I", "결과는 {result_day}까지 이메일로 알려 드리겠습니다. 주소가 #Email# 맞으시죠?")
        s.say("J", "네, 맞습니다. 감사합니다.")
    elif outcome == "second":
        s.say("I", "2차 면접은 {date2} {time}에 있습니다. 참석 가능하십니까?")
        s.say("J", "네, 가능합니다. 꼭 참석하겠습니다.")
    else:
        s.say("I", "결과는 {result_day}까지 #PhoneNumber#로 연락드리겠습니다.")
        s.say("J", "감사합니다. 좋은 소식 기다리겠습니다.")
    _interview_summaries(s, second, strong, outcome)


def _interview_summaries(s: _Scene, second: bool, strong: bool, outcome: str) -> None:
    who = "{I:과} {K:은}" if second else "{I:은}"
    skill = "{skill:을} 실무에서 썼다고" if strong else "{skill:을} 배우는 중이라고"
    result = {
        "email": "결과는 {result_day}까지 이메일로 알려 주기로 한다.",
        "second": "{date2} {time}에 2차 면접을 보기로 한다.",
        "phone": "결과는 {result_day}까지 전화로 알려 주기로 한다.",
    }[outcome]
    s.summary(
        f"{{J:은}} {{company}}의 {{position}} 면접을 본다. {who} {{J}}의 경력과 지원 동기를 묻고, " + result,
        f"{{J:은}} {{prior}}에서 {{years}} 일한 경력을 말하고 {skill} 답한다. " + result,
        f"{who} {{position}} 자리에 지원한 {{J:을}} 면접한다. {{J:은}} {{start}}부터 출근 가능하다고 한다. "
        + result,
    )


# fmt: off
_BILL_CAUSES = (  # explanation, cause for the summary, customer's request, agent's fix, fix for the summary
    ("데이터를 기본 제공량보다 많이 쓰셔서 초과 요금이 붙었습니다", "데이터 초과 사용",
     "그럼 데이터 많이 주는 요금제로 바꿀 수 있을까요?", "네, {plan:으로} 변경해 드리겠습니다. 다음 달부터 적용됩니다.",
     "요금제를 {plan:으로} 바꾼다"),
    ("해외 로밍 요금이 청구되었습니다", "해외 로밍 요금", "출장 때문이었군요. 다음엔 미리 로밍 요금제를 신청할게요.",
     "네, 출국 전에 신청하시면 훨씬 저렴합니다.", "다음에는 로밍 요금제를 미리 신청하기로 한다"),
    ("소액결제로 게임 아이템 결제가 있었습니다", "소액결제", "아이가 한 것 같네요. 소액결제 차단해 주세요.",
     "네, 지금 바로 소액결제를 차단해 드리겠습니다.", "소액결제 차단을 신청한다"),
    ("음악 스트리밍 부가서비스가 가입되어 있습니다", "부가서비스 요금", "그런 걸 가입한 적이 없는데요. 해지해 주세요.",
     "확인해 보니 무료 기간이 끝나 유료로 바뀌었습니다. 바로 해지해 드리겠습니다.", "부가서비스를 해지한다"),
    ("약정 할인이 지난달로 끝났습니다", "약정 할인 종료", "그럼 약정을 다시 할 수 있나요?",
     "네, {contract} 약정으로 다시 할인해 드리겠습니다.", "{contract} 약정을 다시 맺는다"),
)
# fmt: on
_PLANS = (
    "데이터 무제한 요금제",
    "5G 슬림 요금제",
    "10GB 요금제",
    "30GB 요금제",
    "50GB 요금제",
    "100GB 요금제",
    "청년 요금제",
)


def _phone_bill(s: _Scene) -> None:
    explain, cause, ask, fix, fix_sum = s.pick(_BILL_CAUSES)
    s.voice.update(C="P", S="F")
    s.set(
        amount=_price(s.rng, 80000, 260000)[1],
        usual=_price(s.rng, 30000, 70000, 5000)[1],
        plan=s.pick(_PLANS),
        contract=s.pick(("1년", "2년")),
        phone="#PhoneNumber#",
    )
    s.set(
        explain=fill(explain, s.slots),
        cause=cause,
        ask=fill(ask, s.slots),
        fix=fill(fix, s.slots),
        fix_sum=fill(fix_sum, s.slots),
    )
    s.say(
        "S",
        "안녕하십니까, 고객센터 상담원입니다. 무엇을 도와드릴까요?",
        "감사합니다, 고객센터입니다. 무엇을 도와드릴까요?",
    )
    s.say(
        "C",
        "이번 달 요금이 {amount:이나} 나와서요. 평소엔 {usual} 정도 나오거든요.",
        "요금이 너무 많이 나와서 전화했어요. 이번 달에 {amount:이} 나왔어요.",
    )
    s.say("S", "확인을 위해 휴대폰 번호와 생년월일을 말씀해 주시겠습니까?")
    s.say("C", "번호는 {phone:이고}, 생년월일은 #DateOfBirth#입니다.")
    s.say("S", "확인 감사합니다. 조회해 보니 {explain}.")
    s.react("C", 0.4)
    s.say("C", "{ask}")
    s.say("S", "{fix}")
    if s.chance(0.4):
        s.say("S", "더 궁금하신 점 있으십니까?")
        s.say("C", "아니요, 없어요. 감사합니다.")
    else:
        s.say("C", "네, 감사합니다.", "알겠습니다. 수고하세요.")
    s.summary(
        "{C:은} 이번 달 휴대폰 요금이 {amount:이나} 나와 고객센터에 문의한다. {S:은} {cause} 때문이라고 설명하고, {C:은} {fix_sum}.",
        "{S:은} {C}의 요금이 {amount:이나} 나온 이유가 {cause:이라고} 알려 준다. {C:은} {fix_sum}.",
        "{C:은} 평소 {usual} 정도이던 요금이 {amount:으로} 오른 이유를 묻는다. {cause} 때문임을 듣고 {fix_sum}.",
    )


# fmt: off
_TRIPS = (  # destination, ways to get there
    ("제주도", ("비행기", "배")), ("부산", ("KTX", "고속버스", "렌터카")), ("강릉", ("KTX", "고속버스", "렌터카")),
    ("경주", ("KTX", "고속버스", "렌터카")), ("여수", ("KTX", "고속버스", "렌터카")), ("전주", ("KTX", "고속버스", "렌터카")),
    ("속초", ("고속버스", "렌터카")), ("통영", ("고속버스", "렌터카")), ("안동", ("기차", "고속버스", "렌터카")),
    ("남해", ("고속버스", "렌터카")), ("오사카", ("비행기",)), ("도쿄", ("비행기",)), ("후쿠오카", ("비행기", "배")),
    ("다낭", ("비행기",)), ("방콕", ("비행기",)), ("타이베이", ("비행기",)), ("홍콩", ("비행기",)), ("삿포로", ("비행기",)),
)
# fmt: on
_STAYS = ("게스트하우스", "호텔", "펜션", "에어비앤비", "리조트", "한옥 스테이", "캠핑장")
_ACTIVITIES = (
    "맛집 투어 하기",
    "바다 구경하기",
    "시장 구경하기",
    "야경 보기",
    "온천 가기",
    "자전거 타기",
    "쇼핑하기",
    "산책하기",
)
# fmt: off
_TRIP_REASONS = {  # why a friend turns a way of travel down
    "비행기": "표가 너무 비싸", "배": "시간이 너무 오래 걸려", "KTX": "표가 벌써 거의 매진이래",
    "고속버스": "시간이 너무 오래 걸려", "렌터카": "운전하기 너무 피곤해", "기차": "시간이 너무 오래 걸려",
}
# fmt: on


def _trip_planning(s: _Scene) -> None:
    dest, ways = s.pick(_TRIPS)
    people = ("F1", "F2", "F3", "F4")[: s.pick((2, 2, 3, 3, 4))]
    s.voice.update(dict.fromkeys(people, "C"))
    month = s.rng.randint(1, 12)
    s.set(
        dest=dest,
        when=s.pick(
            (f"{month}월 초에", f"{month}월 말에", "다음 달에", "이번 방학에", "여름휴가 때", "추석 연휴에")
        ),
        length=s.pick(("1박 2일", "2박 3일", "3박 4일", "4박 5일")),
        stay=s.pick(_STAYS),
        act=s.pick(_ACTIVITIES),
        budget=_price(s.rng, 150000, 1500000, 50000)[1],
        name=s.pick(_GIVEN),
    )
    first, *others = list(ways) if len(ways) == 1 else s.rng.sample(ways, 2)
    s.set(way=first, way2=others[0] if others else first, reason=_TRIP_REASONS[first])
    s.say("F1", "{name:아}, {when} 우리 여행 갈래?", "우리 {when} 어디 놀러 가자.")
    s.say("F2", "좋지! 어디로 갈까?", "오, 좋아. 어디 생각해 둔 데 있어?")
    s.say("F1", "{dest} 어때? {act} 좋대.")
    if "F3" in people:
        s.say("F3", "나도 끼워 줘! {dest} 완전 가 보고 싶었어.")
    s.say("F2", "좋아. 며칠 갈 건데?")
    s.say("F1", "{length} 정도면 괜찮지 않아?")
    s.smalltalk("F2", "F1", 0.2)
    s.say(people[-1], "{way} 타고 갈까?")
    changed = bool(others) and s.chance(0.5)
    if changed:
        s.say("F2" if people[-1] != "F2" else "F1", "{way:은} {reason}. {way2:이} 낫지 않아?")
        s.say(people[-1], "그래, 그럼 {way2:으로} 가자.")
    else:
        s.say("F2" if people[-1] != "F2" else "F1", "좋아, {way:이} 제일 편하겠다.", "응, {way:으로} 가자.")
    s.set(final=s.slots["way2"] if changed else s.slots["way"])
    booker = s.pick(people)
    s.say(booker, "숙소는 {stay:으로} 잡자. 내가 예약할게.")
    s.say("F1", "1인당 {budget} 정도면 되겠지?", "예산은 1인당 {budget} 정도로 하자.")
    s.say("F2", "응, 그 정도면 충분해.", "오케이, 딱 좋다.")
    if "F4" in people:
        s.say("F4", "그럼 맛집은 내가 찾아볼게.")
    _trip_summaries(s, people, booker)


def _trip_summaries(s: _Scene, people: Sequence[str], booker: str) -> None:
    group, others = _group(people, "은"), _group(people[1:])
    book = f"숙소는 {{{booker}:이}} {{stay:으로}} 예약한다."
    s.summary(
        f"{group} {{when}} {{length:으로}} {{dest}} 여행을 가기로 한다. {{final:을}} 타고 가고, " + book,
        f"{{F1:은}} {others}에게 {{dest}} 여행을 제안한다. 모두 {{when}} {{final:을}} 타고 가기로 하고, 예산은 1인당 {{budget:으로}} 정한다.",
        f"{group} {{dest:으로}} {{length}} 여행을 계획한다. 1인당 예산은 {{budget:이고}}, " + book,
    )


_HOMES = ("원룸", "투룸", "오피스텔", "아파트", "빌라", "복층 원룸", "쓰리룸")
# fmt: off
_DONGS = (
    "망원동", "성수동", "연희동", "상도동", "정자동", "행신동", "신림동", "봉천동", "화곡동", "창천동", "합정동", "문래동",
    "공덕동", "중계동", "석촌동", "방이동", "길음동", "자양동", "대흥동", "신정동", "역삼동", "불광동", "면목동", "도화동",
)
_HOME_FEATURES = (
    "역에서 걸어서 {walk:이에요}", "남향이라 햇빛이 잘 들어요", "주차도 한 대 가능해요", "반려동물도 키울 수 있어요",
    "작년에 리모델링을 했어요", "베란다가 넓어요", "엘리베이터가 있어요",
)
# fmt: on


def _apartment_rental(s: _Scene) -> None:
    s.voice.update(A=s.pick("FP"), T="P", U="P")
    deposit = s.pick((3_000_000, 5_000_000, 10_000_000, 20_000_000, 30_000_000, 50_000_000))
    rent = s.rng.randrange(400_000, 1_500_001, 10_000)
    s.set(
        home=s.pick(_HOMES),
        area=s.pick(_DONGS),
        deposit=_won(deposit),
        rent=_won(rent),
        rent2=_won(rent - s.pick((20_000, 30_000, 50_000))),
        floor=f"{s.rng.randint(2, 15)}층",
        walk=f"{s.rng.randint(3, 15)}분",
        movein=_date(s.rng),
        addr="#Address#",
    )
    s.set(feature=fill(s.pick(_HOME_FEATURES), s.slots))
    partner = s.chance(0.35)
    s.say(
        "A",
        fp(
            "여기가 말씀드린 {area} {home}입니다. 들어와서 보십시오.",
            "여기가 말씀드린 {area} {home:이에요}. 들어와서 보세요.",
        ),
    )
    s.say("T", "생각보다 넓네요. 몇 층이에요?", "와, 밝네요. 여기 몇 층이죠?")
    s.say("A", fp("{floor}이고, {feature}.", "{floor:이고}, {feature}."))
    s.say("T", "조건이 어떻게 돼요?", "보증금이랑 월세는 얼마예요?")
    s.say("A", fp("보증금 {deposit}에 월세 {rent}입니다.", "보증금 {deposit}에 월세 {rent:이에요}."))
    if partner:
        s.say("U", "괜찮은데? 회사까지도 가깝고.", "여기 마음에 든다. 부엌도 넓어.")
        s.say("T", "응, 나도 좋아.", "그러게, 나도 마음에 들어.")
    outcome = s.pick(("sign", "haggle", "think"))
    if outcome == "haggle":
        s.say("T", "월세를 조금만 깎아 주실 수 있나요?")
        s.say(
            "A",
            fp(
                "집주인분께 여쭤보니 {rent2}까지는 해 주신답니다.",
                "집주인분께 여쭤보니 {rent2}까지는 해 주신대요.",
            ),
        )
    if outcome == "think":
        s.say("T", "좋긴 한데 조금 더 생각해 볼게요. 다른 집도 보고 싶어요.")
        s.say(
            "A",
            fp("네, 그러면 근처 다른 매물도 보여 드리겠습니다.", "네, 그럼 근처 다른 집도 보여 드릴게요."),
        )
    else:
        s.say("T", "그럼 계약할게요. {movein}에 들어올 수 있죠?")
        s.say(
            "A",
            fp(
                "네, 가능합니다. 계약서에 쓸 주소는 {addr}입니다.",
                "네, 돼요. 계약서에 쓸 주소는 {addr:이에요}.",
            ),
        )
    _rental_summaries(s, partner, outcome)


def _rental_summaries(s: _Scene, partner: bool, outcome: str) -> None:
    who = "{T:과} {U:은}" if partner else "{T:은}"
    if outcome == "think":
        s.summary(
            f"{who} {{A:와}} 함께 {{area}}의 {{home:을}} 보지만 바로 계약하지 않고 다른 집도 더 보기로 한다.",
            f"{{A:은}} 보증금 {{deposit}}에 월세 {{rent}}인 {{area}} {{home:을}} 보여 주고, {who} 더 생각해 보기로 한다.",
            f"{who} {{area}} {{home}}의 조건을 듣는다. 월세는 {{rent:이지만}} 다른 집도 보고 결정하기로 한다.",
        )
        return
    final = "{rent2}" if outcome == "haggle" else "{rent}"
    haggle = "월세를 깎아 달라고 해 " if outcome == "haggle" else ""
    s.summary(
        f"{who} {{area}}의 {{home:을}} 보고 보증금 {{deposit}}, 월세 {final}에 계약하기로 한다. 입주는 {{movein:이다}}.",
        f"{{A:은}} {{area}} {{home:을}} 보여 주고, {who} {haggle}월세 {final}에 계약한다. {{movein}}에 입주한다.",
        f"{who} {{floor}}에 있는 {{area}} {{home:을}} 마음에 들어 한다. {haggle}보증금 {{deposit}}, 월세 {final}에 계약하고 {{movein}}에 들어온다.",
    )


# fmt: off
_MENUS = (
    ("치킨", ("후라이드 치킨", "양념 치킨", "간장 치킨", "파닭", "순살 치킨", "치즈볼", "감자튀김")),
    ("중국집", ("짜장면", "짬뽕", "탕수육", "볶음밥", "군만두", "마파두부", "깐풍기", "울면")),
    ("분식", ("떡볶이", "순대", "김밥", "튀김", "라볶이", "어묵탕", "쫄면")),
    ("피자", ("페퍼로니 피자", "불고기 피자", "포테이토 피자", "고구마 피자", "치즈 오븐 스파게티", "콤비네이션 피자")),
    ("족발", ("족발", "보쌈", "막국수", "쟁반국수", "주먹밥")),
    ("한식당", ("제육볶음", "김치찌개", "된장찌개", "불고기 덮밥", "계란말이", "순두부찌개", "오징어볶음")),
    ("버거", ("치즈버거", "새우버거", "불고기버거", "치킨버거", "어니언링", "너겟")),
)
# fmt: on
_QUANTITIES = ("하나", "두 개", "세 개")
_PAYMENTS = ("카드", "현금", "계좌 이체", "지역 화폐")


def _food_delivery(s: _Scene) -> None:
    kind, dishes = s.pick(_MENUS)
    d1, d2, d3 = s.rng.sample(dishes, 3)
    s.voice.update(H="P", G="C", S=s.pick("FP"))
    s.set(
        kind=kind,
        shop=_shop(s.rng, kind),
        d1=d1,
        d2=d2,
        d3=d3,
        q1=s.pick(_QUANTITIES),
        q2=s.pick(_QUANTITIES),
        eta=s.pick(("30분", "40분", "50분", "한 시간")),
        pay=s.pick(_PAYMENTS),
        addr="#Address#",
        total=_price(s.rng, 15000, 65000)[1],
    )
    friend = s.chance(0.4)
    if friend:
        s.voice["H"] = "C"
        s.say("H", "배고프다. 우리 저녁 시켜 먹을까?", "오늘 밥하기 귀찮은데 배달시킬까?")
        s.say("G", "좋아. {kind} 어때? {d1} 먹고 싶어.")
        s.say("H", "그래, {d2}도 하나 시키자.")
        s.voice["H"] = "P"
    s.say("S", fp("네, {shop}입니다.", "네, {shop:이에요}."))
    s.say("H", "배달 주문하려고요. {d1} {q1:이랑} {d2} {q2} 주세요.")
    soldout = s.chance(0.3)
    if soldout:
        s.say(
            "S", fp("죄송하지만 {d2:은} 오늘 재료가 다 떨어졌습니다.", "죄송한데 {d2:은} 오늘 다 떨어졌어요.")
        )
        s.say("H", "그럼 {d3:으로} 주세요.", "아쉽네요. 그럼 대신 {d3:으로} 할게요.")
    s.say("S", fp("주소 말씀해 주시겠습니까?", "주소 불러 주세요."))
    s.say("H", "주소는 {addr:이에요}.", "{addr}입니다. 문 앞에 놓아 주세요.")
    s.say("S", fp("{total}입니다. 결제는 어떻게 하시겠습니까?", "{total:이에요}. 결제는 어떻게 하세요?"))
    s.say("H", "{pay:으로} 할게요.", "{pay:으로} 계산할게요.")
    s.say("S", fp("네, {eta} 정도 걸립니다. 감사합니다.", "{eta} 정도 걸려요. 감사합니다."))
    s.set(final=d3 if soldout else d2)
    _delivery_summaries(s, friend, soldout)


def _delivery_summaries(s: _Scene, friend: bool, soldout: bool) -> None:
    who = "{H:과} {G:은} 저녁으로" if friend else "{H:은}"
    swap = " {d2:이} 다 떨어져 {d3:으로} 바꾼다." if soldout else ""
    s.summary(
        who + " {shop}에 {d1} {q1:과} {final} {q2:을} 배달 주문한다." + swap + " 음식은 {eta} 뒤에 온다.",
        who + " {S}에게 {d1:과} {final:을} 주문하고 {pay:으로} {total:을} 낸다." + swap,
        "{S:은} {H}의 배달 주문을 받는다. {d1} {q1:과} {final} {q2:이고}, {eta} 정도 걸린다." + swap,
    )


_ACCOUNT_USES = (
    "월급 통장",
    "생활비 통장",
    "비상금 통장",
    "여행 자금 통장",
    "아이 용돈 통장",
    "사업용 통장",
    "모임 통장",
)
_CARD_FEATURES = (
    "교통카드 기능",
    "해외 결제 기능",
    "편의점 할인 혜택",
    "커피 할인 혜택",
    "주유 할인 혜택",
    "캐시백 혜택",
)


def _bank_account(s: _Scene) -> None:
    s.voice.update(C="P", S="F")
    rate = s.rng.randint(25, 45)
    s.set(
        monthly=_price(s.rng, 100000, 1000000, 50000)[1],
        period=s.pick(("1년", "2년", "3년")),
        lump=_won(s.pick((5, 10, 20, 30, 50)) * 1_000_000),
        term=s.pick(("6개월", "1년")),
        rate=f"{rate / 10:.1f}%",
        rate2=f"{(rate + s.pick((2, 3, 5))) / 10:.1f}%",
        back=s.pick(("내일", "주말에", "다음 주에", "오후에")),
        phone="#PhoneNumber#",
        use=s.pick(_ACCOUNT_USES),
        feature=s.pick(_CARD_FEATURES),
        bank=_shop(s.rng, "은행"),
    )
    product = s.pick(("saving", "account", "deposit"))
    s.say(
        "S", "어서 오십시오, {bank}입니다. 어떤 업무 보러 오셨습니까?", "기다리셨습니다. 무엇을 도와드릴까요?"
    )
    s.say(
        "C",
        {
            "saving": "적금 하나 들고 싶어서요.",
            "account": "{use:으로} 쓸 통장을 하나 만들려고요.",
            "deposit": "목돈을 정기 예금에 넣으려고요.",
        }[product],
    )
    s.smalltalk("S", "C", 0.15)
    s.say("S", "그럼 신분증 먼저 보여 주시겠습니까?")
    if s.chance(0.15):
        s.say("C", "어, 신분증을 집에 두고 왔네요.")
        s.say("S", "죄송하지만 신분증이 없으면 개설이 어렵습니다. 다음에 꼭 가져와 주십시오.")
        s.say("C", "아 그렇군요. 그럼 {back} 다시 올게요.")
        s.summary(*_no_id_summaries(product))
        return
    s.say("C", "여기 있습니다.", "네, 여기요.")
    s.say("S", "연락처와 생년월일 확인 부탁드립니다.")
    s.say("C", "{phone:이고}요, 생년월일은 #DateOfBirth#입니다.")
    {"saving": _bank_saving, "account": _bank_checking, "deposit": _bank_deposit}[product](s)
    s.say("S", "여기 서명해 주시면 끝납니다.", "마지막으로 여기에 서명 부탁드립니다.")


def _no_id_summaries(product: str) -> tuple[str, ...]:
    what = {"saving": "적금에 가입하러", "account": "통장을 만들러", "deposit": "정기 예금을 들러"}[product]
    return (
        f"{{C:은}} {what} 은행에 오지만 신분증이 없어 {{back}} 다시 오기로 한다.",
        "{S:은} 신분증을 두고 온 {C}에게 신분증 없이는 개설이 안 된다고 한다. {C:은} {back} 다시 온다.",
        f"{{C:은}} {what} 왔다가 신분증을 안 가져와 {{S}}에게 {{back}} 다시 오겠다고 한다.",
    )


def _bank_saving(s: _Scene) -> None:
    s.say("S", "매달 얼마씩 넣으실 생각이십니까?")
    s.say("C", "{monthly}씩 {period} 동안 넣고 싶어요.")
    s.say("S", "기본 금리는 연 {rate}이고, 급여 이체를 하시면 {rate2}까지 드립니다.")
    if s.chance(0.5):
        s.say("C", "그럼 급여 이체도 같이 해 주세요.")
        s.summary(
            "{C:은} 매달 {monthly}씩 {period} 동안 넣는 적금에 가입한다. 급여 이체를 신청해 연 {rate2} 금리를 받는다.",
            "{S:은} {C}에게 적금 금리를 설명하고, {C:은} 급여 이체를 해서 연 {rate2}를 받기로 한다.",
            "{C:은} {period} 적금을 들고 매달 {monthly:을} 넣기로 한다. 급여 이체로 금리는 {rate2:이다}.",
        )
    else:
        s.say("C", "급여 이체는 어려워서요. 기본 금리로 할게요.")
        s.summary(
            "{C:은} 매달 {monthly}씩 {period} 동안 넣는 적금에 가입한다. 급여 이체는 하지 않아 금리는 연 {rate:이다}.",
            "{S:은} {C}에게 적금 금리를 설명하고, {C:은} 기본 금리 연 {rate:으로} 적금을 든다.",
            "{C:은} {period} 적금을 들고 매달 {monthly:을} 넣기로 한다. 금리는 기본 {rate:이다}.",
        )


def _bank_checking(s: _Scene) -> None:
    s.say("S", "체크카드도 같이 만들어 드릴까요?")
    if s.chance(0.6):
        s.say("C", "네, {feature} 있는 걸로 해 주세요.")
        s.say("S", "네, 카드는 일주일 안에 댁으로 배송됩니다.")
        s.summary(
            "{C:은} 은행에서 {use:으로} 쓸 통장을 만들고 {feature:이} 있는 체크카드도 신청한다.",
            "{S:은} {C}에게 {use:을} 개설해 주고, {feature:이} 있는 체크카드는 일주일 안에 배송된다고 안내한다.",
            "{C:은} 신분증을 보여 주고 {use:을} 개설한다. {feature:이} 있는 체크카드도 집으로 받기로 한다.",
        )
    else:
        s.say("C", "아니요, 통장만 있으면 돼요.")
        s.say("S", "네, 모바일 뱅킹은 앱에서 바로 가입하실 수 있습니다.")
        s.summary(
            "{C:은} 은행에서 {use:으로} 쓸 통장을 만들고 체크카드는 만들지 않는다.",
            "{S:은} {C}에게 {use:을} 개설해 주고 모바일 뱅킹은 앱에서 가입하면 된다고 안내한다.",
            "{C:은} 신분증을 보여 주고 {use}만 개설한다. 체크카드는 필요 없다고 한다.",
        )


def _bank_deposit(s: _Scene) -> None:
    s.say("S", "얼마를 얼마 동안 맡기실 생각이십니까?")
    s.say("C", "{lump:을} {term} 동안 넣어 두려고요.")
    s.say("S", "그러면 연 {rate} 금리가 적용됩니다. 중간에 찾으시면 이자가 줄어듭니다.")
    s.react("C", 0.6)
    s.summary(
        "{C:은} {lump:을} {term} 동안 정기 예금에 넣는다. 금리는 연 {rate:이다}.",
        "{S:은} {C}의 {lump} 정기 예금을 만들어 주고, 중간에 찾으면 이자가 줄어든다고 설명한다.",
        "{C:은} 은행에서 {term} 만기 정기 예금에 {lump:을} 맡기고 연 {rate} 금리를 받는다.",
    )


# fmt: off
_LOST_ITEMS = ("지갑", "휴대폰", "우산", "노트북", "백팩", "쇼핑백", "카드 지갑", "태블릿", "무선 이어폰", "목도리", "모자", "안경집", "필통", "장갑")
_LOST_MARKS = (  # customer's words, summary words
    ("안에 신분증이랑 카드가 들어 있어요", "신분증과 카드가 든"), ("곰 인형 열쇠고리가 달려 있어요", "곰 인형 열쇠고리가 달린"),
    ("이름 스티커가 붙어 있어요", "이름 스티커가 붙은"), ("손잡이에 리본이 묶여 있어요", "손잡이에 리본이 묶인"),
    ("구석에 작은 흠집이 있어요", "구석에 흠집이 있는"),
)
# fmt: on


def _lost_item(s: _Scene) -> None:
    mark, mark_sum = s.pick(_LOST_MARKS)
    s.voice.update(C="P", S=s.pick("FP"))
    s.set(
        item=f"{s.pick(_COLORS)} {s.pick(_LOST_ITEMS)}",
        mark=mark,
        mark_sum=mark_sum,
        time=_clock(s.rng),
        where=s.pick(
            (
                f"지하철 {s.rng.randint(1, 9)}호선",
                f"{s.rng.randint(100, 9999)}번 버스",
                "택시",
                "공항 리무진 버스",
            )
        ),
        day=s.pick(("오늘", "어제")),
        pickup=f"{s.pick(_AREAS)}역 유실물 센터",
        phone="#PhoneNumber#",
    )
    s.say(
        "C", "저기요, {day} {where}에서 {item:을} 잃어버렸는데요.", "안녕하세요. {item:을} 잃어버려서 왔어요."
    )
    s.say("S", fp("언제쯤 어디에서 잃어버리셨습니까?", "언제, 어디서 잃어버리셨어요?"))
    s.say("C", "{day} {time}쯤 {where}에서 내릴 때 두고 내린 것 같아요.")
    s.say("S", fp("특징을 말씀해 주시겠습니까?", "특징 좀 말해 주세요."))
    s.say("C", "{mark}.")
    outcome = s.pick(("here", "there", "none"))
    if outcome == "here":
        s.say("S", fp("잠시만 기다려 주십시오. 혹시 이것 맞습니까?", "잠깐만요. 혹시 이거 맞아요?"))
        s.say("C", "네, 맞아요! 정말 다행이다.")
        s.say("S", fp("신분증 확인 후 돌려드리겠습니다.", "신분증 확인하고 드릴게요."))
    elif outcome == "there":
        s.say(
            "S",
            fp(
                "비슷한 물건이 {pickup}에 접수되어 있습니다. 신분증을 가지고 가시면 됩니다.",
                "비슷한 게 {pickup}에 들어와 있네요. 신분증 가지고 가시면 돼요.",
            ),
        )
        s.react("C", 0.5)
    else:
        s.say(
            "S",
            fp(
                "아직 들어온 물건은 없습니다. 연락처를 남겨 주시면 찾는 대로 연락드리겠습니다.",
                "아직 들어온 게 없네요. 연락처 남겨 주시면 찾는 대로 연락드릴게요.",
            ),
        )
        s.say("C", "{phone:으로} 연락 주세요. 꼭 좀 부탁드려요.")
    s.say("C", "정말 감사합니다.", "감사합니다, 수고하세요.")
    _lost_summaries(s, outcome)


def _lost_summaries(s: _Scene, outcome: str) -> None:
    lost = "{C:은} {day} {where}에서 {mark_sum} {item:을} 잃어버렸다. "
    if outcome == "here":
        s.summary(
            lost + "{S:은} 보관 중이던 {item:을} 찾아 신분증을 확인한 뒤 돌려준다.",
            "{S:은} {C:이} {where}에 두고 내린 {item:을} 찾아 준다. {C:은} 신분증을 보여 주고 돌려받는다.",
            "{C:은} {mark_sum} {item:을} 찾으러 오고, {S}에게서 바로 {item:을} 돌려받는다.",
        )
    elif outcome == "there":
        s.summary(
            lost + "{S:은} 비슷한 물건이 {pickup}에 있다며 신분증을 가지고 가라고 한다.",
            "{S:은} {C:이} {where}에서 잃어버린 {item:이} {pickup}에 접수되어 있다고 알려 준다.",
            "{C:은} {item:을} 찾으러 오고, {pickup}에 가서 신분증을 보여 주고 찾기로 한다.",
        )
    else:
        s.summary(
            lost + "{S:은} 아직 들어온 물건이 없어 찾으면 연락하기로 한다.",
            "{S:은} {C}의 {item:이} 아직 접수되지 않았다며 연락처를 받아 둔다.",
            "{C:은} {where}에서 잃어버린 {item:을} 찾으러 오지만 아직 없어 연락처를 남긴다.",
        )


_GYM_CLASSES = ("요가", "필라테스", "스피닝", "수영", "크로스핏", "줌바 댄스", "복싱", "에어로빅")
_GYM_PLANS = (("1개월", 1), ("3개월", 3), ("6개월", 6), ("1년", 12))


def _gym_membership(s: _Scene) -> None:
    plan, months = s.pick(_GYM_PLANS)
    monthly = s.rng.randrange(50_000, 100_001, 5_000)
    pt = s.pick((10, 20, 30))
    s.voice.update(S="P", C="P", D="P")
    s.set(
        gym=_shop(s.rng, "피트니스"),
        plan=plan,
        price=_won(monthly * months * (90 if months > 1 else 100) // 100),
        cls=s.pick(_GYM_CLASSES),
        pt=f"PT {pt}회",
        pt_price=_won(pt * s.rng.randrange(40_000, 70_001, 5_000)),
        open=f"새벽 {s.pick((5, 6))}시",
        close=f"밤 {s.pick((10, 11, 12))}시",
    )
    friend = s.chance(0.35)
    s.say("S", "안녕하세요, {gym}입니다. 등록 상담 받으러 오셨어요?")
    s.say("C", "네, 헬스 등록하려고요. {plan:은} 얼마예요?")
    s.say("S", "{plan:은} {price:이에요}. {cls} 수업도 무료로 들으실 수 있어요.")
    s.say("C", "운영 시간은 어떻게 돼요?")
    s.say("S", "{open}부터 {close}까지 해요.")
    if friend:
        s.say("D", "우리 같이 등록할까? 친구랑 같이 하면 할인된대.")
        s.say("S", "네, 두 분이 같이 하시면 10% 더 할인해 드려요.")
    with_pt = s.chance(0.4)
    s.say("S", "PT도 받으시면 좋아요. {pt:은} {pt_price:이에요}.")
    s.say("C", "그럼 {pt}도 같이 할게요." if with_pt else "PT는 괜찮아요. 혼자 해 볼게요.")
    trial = not with_pt and s.chance(0.3)
    s.say("C", "오늘은 일단 하루 체험만 해 볼게요." if trial else "{plan:으로} 등록할게요.")
    _gym_summaries(s, friend, with_pt, trial)


def _gym_summaries(s: _Scene, friend: bool, with_pt: bool, trial: bool) -> None:
    who = "{C:과} {D:은}" if friend else "{C:은}"
    pt = " {pt}도 함께 받기로 한다." if with_pt else ""
    discount = " 둘이 함께 등록해 10% 할인을 받는다." if friend and not trial else ""
    if trial:
        s.summary(
            f"{who} {{gym}}에서 상담을 받는다. {{plan:은}} {{price:이지만}} 오늘은 하루 체험만 하기로 한다.",
            f"{{S:은}} {{plan}} 이용료가 {{price:이라고}} 안내하지만, {who} 등록 대신 하루 체험을 한다.",
            f"{who} 헬스장 가격과 운영 시간을 묻고, PT 없이 하루만 체험해 보기로 한다.",
        )
        return
    s.summary(
        f"{who} {{gym}}에 {{plan}} 회원으로 등록한다. 가격은 {{price:이고}} {{cls}} 수업도 들을 수 있다."
        + pt
        + discount,
        f"{{S:은}} {{plan}} 이용료가 {{price:이라고}} 안내하고, {who} {{plan:으로}} 등록한다."
        + pt
        + discount,
        f"{who} 운영 시간과 가격을 물어본 뒤 {{price}}에 {{plan}} 등록을 한다." + pt + discount,
    )


# fmt: off
_CUT, _PERM = ((15_000, 40_000), ("30분", "40분", "한 시간")), ((60_000, 200_000), ("두 시간", "두 시간 반", "세 시간"))
_HAIR_SERVICES = (  # customer's request, summary words, (price range, durations)
    ("어깨 정도 길이로 잘라 주세요", "어깨 길이 커트", _CUT), ("짧은 단발로 잘라 주세요", "단발 커트", _CUT),
    ("앞머리만 다듬어 주세요", "앞머리 커트", ((5_000, 10_000), ("10분", "15분", "20분"))),
    ("옆머리는 짧게 투블럭으로 해 주세요", "투블럭 커트", _CUT),
    ("자연스러운 웨이브 파마를 하고 싶어요", "웨이브 파마", _PERM),
    ("옆머리가 너무 뜨는데 다운펌 해 주세요", "다운펌", ((30_000, 60_000), ("40분", "한 시간"))),
    ("{hue:으로} 염색하고 싶어요", "{hue} 염색", _PERM), ("볼륨 매직 하려고요", "볼륨 매직", _PERM),
)
# fmt: on
_HUES = (
    "애쉬 브라운",
    "밀크티 베이지",
    "다크 브라운",
    "와인색",
    "애쉬 그레이",
    "카키 브라운",
    "핑크 브라운",
    "블루 블랙",
)
_HAIR_ADDONS = ("두피 스케일링", "헤어 클리닉", "영양 트리트먼트", "손상 케어")


def _hair_salon(s: _Scene) -> None:
    want, want_sum, ((low, high), durations) = s.pick(_HAIR_SERVICES)
    base = s.rng.randrange(low, high + 1, 1_000 if high <= 10_000 else 5_000)
    extra = s.rng.randrange(10_000, 50_001, 5_000)
    s.voice.update(S="P", C="P")
    s.set(
        hue=s.pick(_HUES),
        price=_won(base),
        addon=s.pick(_HAIR_ADDONS),
        addon_price=_won(extra),
        total=_won(base + extra),
        dur=s.pick(durations),
        designer=f"{s.pick(_GIVEN)} 디자이너",
        wait=s.pick(("10분", "20분", "30분")),
        time=_clock(s.rng, ("오전", "오후")),
    )
    s.set(want=fill(want, s.slots), want_sum=fill(want_sum, s.slots))
    s.say("S", "어서 오세요. 예약하셨어요?")
    walk_in = s.chance(0.35)
    if walk_in:
        s.say("C", "아니요, 예약은 안 했는데 지금 가능할까요?")
        s.say("S", "지금은 {designer:이} 손님이 있어서 {wait} 정도 기다리셔야 해요.")
        s.say("C", "괜찮아요, 기다릴게요.")
    else:
        s.say("C", "네, {time}에 {designer}한테 예약했어요.")
    s.smalltalk("S", "C", 0.3)
    s.say("S", "오늘은 어떻게 해 드릴까요?")
    s.say("C", "{want}.")
    s.say("S", "네, {price:이고} {dur} 정도 걸려요.")
    s.say("S", "머릿결이 좀 상했는데 {addon}도 같이 받으시면 좋아요. {addon_price} 추가돼요.")
    take = s.chance(0.5)
    s.say("C", "그럼 그것도 같이 해 주세요." if take else "오늘은 괜찮아요. 그냥 {want_sum}만 할게요.")
    _salon_summaries(s, walk_in, take)


def _salon_summaries(s: _Scene, walk_in: bool, take: bool) -> None:
    wait = " 예약 없이 와서 {wait} 기다린다." if walk_in else ""
    if take:
        s.summary(
            "{C:은} 미용실에서 {want_sum:을} 받는다. {S:이} 권한 {addon}도 함께 받아 모두 {total:이} 든다."
            + wait,
            "{S:은} {want_sum:을} 하러 온 {C}에게 {addon:을} 권하고, {C:은} 같이 받기로 한다. 총 {total:이다}."
            + wait,
            "{C:은} {want_sum:과} {addon:을} 함께 하기로 한다. 시술에는 {dur} 정도 걸린다." + wait,
        )
    else:
        s.summary(
            "{C:은} 미용실에서 {want_sum:을} 받는다. {S:이} {addon:을} 권하지만 {C:은} 거절한다." + wait,
            "{S:은} {want_sum:을} 하러 온 {C}에게 {addon:을} 권하고, {C:은} {want_sum}만 한다. 가격은 {price:이다}."
            + wait,
            "{C:은} {price}에 {want_sum:을} 하기로 하고 {addon:은} 받지 않는다. 시술에는 {dur} 정도 걸린다."
            + wait,
        )


# fmt: off
_CAR_PROBLEMS = (  # customer's words, summary words, mechanic's finding, repair for the summary
    ("브레이크를 밟을 때마다 끼익 소리가 나요", "브레이크에서 소리가 나서", "브레이크 패드가 다 닳았네요", "브레이크 패드를 교체"),
    ("계기판에 엔진 경고등이 켜졌어요", "엔진 경고등이 켜져서", "산소 센서가 고장 났네요", "산소 센서를 교체"),
    ("에어컨을 틀어도 찬바람이 안 나와요", "에어컨에서 찬바람이 나오지 않아", "에어컨 냉매가 부족하네요", "냉매를 충전"),
    ("타이어 공기가 자꾸 빠져요", "타이어 공기가 자꾸 빠져서", "타이어에 못이 박혀 있네요", "타이어를 수리"),
    ("아침마다 시동이 잘 안 걸려요", "시동이 잘 걸리지 않아", "배터리 수명이 다 됐네요", "배터리를 교체"),
    ("핸들이 자꾸 한쪽으로 쏠려요", "핸들이 한쪽으로 쏠려서", "휠 얼라인먼트가 틀어졌네요", "휠 얼라인먼트를 조정"),
    ("엔진 오일 갈 때가 된 것 같아요", "엔진 오일을 갈 때가 되어", "오일이 많이 더러워졌네요", "엔진 오일을 교환"),
)
# fmt: on


def _car_repair(s: _Scene) -> None:
    words, words_sum, finding, fix = s.pick(_CAR_PROBLEMS)
    s.voice.update(C="P", M=s.pick("FP"))
    s.set(
        words=words,
        words_sum=words_sum,
        finding=finding,
        fix=fix,
        cost=_price(s.rng, 30000, 600000, 5000)[1],
        ready=s.pick(("오늘 오후 5시", "오늘 저녁", "내일 오전", "내일 오후", "모레")),
        parts_day=_date(s.rng),
        phone="#PhoneNumber#",
    )
    s.say("M", fp("어서 오십시오. 차에 무슨 문제가 있으십니까?", "어서 오세요. 차가 어디 안 좋으세요?"))
    s.say("C", "{words}.", "요즘 {words}. 좀 봐 주세요.")
    s.say("M", fp("차 번호 말씀해 주시면 바로 점검해 보겠습니다.", "차 번호 알려 주시면 바로 볼게요."))
    s.say("C", "#CarNumber#입니다.")
    s.say("M", fp("점검해 보니 {finding}.", "봤더니 {finding}."))
    s.say("C", "수리비는 얼마나 나와요?", "고치는 데 얼마나 들까요?")
    parts = s.chance(0.3)
    if parts:
        s.say(
            "M",
            fp(
                "부품을 주문해야 해서 {parts_day}에 끝납니다. 비용은 {cost}입니다.",
                "부품을 주문해야 해서 {parts_day}에 돼요. 비용은 {cost:이에요}.",
            ),
        )
    else:
        s.say("M", fp("{cost}이고, {ready}까지 해 드리겠습니다.", "{cost:이고}, {ready}까지 해 드릴게요."))
    s.react("C", 0.4)
    s.say("C", "그렇게 해 주세요. 다 되면 {phone:으로} 연락 주세요.")
    s.say("M", fp("알겠습니다. 끝나면 바로 연락드리겠습니다.", "네, 끝나면 연락드릴게요."))
    _car_summaries(s, parts)


def _car_summaries(s: _Scene, parts: bool) -> None:
    when = "부품을 주문해야 해서 수리는 {parts_day}에 끝난다." if parts else "수리는 {ready}까지 끝난다."
    s.summary(
        "{C:은} {words_sum} 정비소를 찾는다. {M:은} {fix}하기로 하고 비용은 {cost:이라고} 한다. " + when,
        "{M:은} {C}의 차를 점검하고 {fix}해야 한다고 말한다. 수리비는 {cost:이고}, " + when,
        "{C:은} 차의 {words_sum} 수리를 맡긴다. {M:은} {cost:을} 받고 {fix}한다. " + when,
    )


_TITLE_HEADS = (
    "마지막",
    "여름의",
    "바다의",
    "검은",
    "비밀의",
    "작은",
    "푸른",
    "한밤의",
    "잃어버린",
    "두 번째",
    "조용한",
    "겨울",
)
_TITLE_TAILS = ("약속", "정원", "도시", "항해", "편지", "열차", "기억", "섬", "목격자", "계절", "탐정", "별")
_GENRES = ("공포 영화", "로맨스 영화", "액션 영화", "애니메이션", "코미디 영화", "스릴러")
_AFTER_MOVIE = ("떡볶이", "삼겹살", "파스타", "초밥", "치킨", "마라탕", "쌀국수", "햄버거", "돈가스", "곱창")


def _movie_date(s: _Scene) -> None:
    titles = [
        f"{h} {t}" for h, t in zip(s.rng.sample(_TITLE_HEADS, 2), s.rng.sample(_TITLE_TAILS, 2), strict=True)
    ]
    genre, genre2 = s.rng.sample(_GENRES, 2)
    s.voice.update(A="C", B="C")
    s.set(
        name=s.pick(_GIVEN),
        title=titles[0],
        title2=titles[1],
        genre=genre,
        genre2=genre2,
        date=_date(s.rng),
        time=_clock(s.rng, ("오후", "저녁")),
        theater=f"{s.pick(_AREAS)} {s.pick(('시네마', '영화관', '극장'))}",
        food=s.pick(_AFTER_MOVIE),
    )
    s.set(alt=_other_clock(s.rng, s.slots["time"]))
    s.say("A", "{name:아}, {date}에 뭐 해?", "{name:아}, 너 {date}에 시간 돼?")
    s.say("B", "별일 없어. 왜?", "아무 약속 없는데, 왜?")
    s.say("A", "같이 영화 보자. {title:이라고} {genre} 새로 나왔대.")
    swapped = s.chance(0.4)
    if swapped:
        s.say("B", "나 {genre:은} 별로야. {title2:은} 어때? {genre2:이라}더라.")
        s.say("A", "오, 그것도 재밌대. 그거 보자.")
    else:
        s.say("B", "좋아! 나도 그거 보고 싶었어.")
    s.set(movie=s.slots["title2" if swapped else "title"])
    s.say("A", "{theater}에서 {time} 거 예매할까?")
    soldout = s.chance(0.35)
    if soldout:
        s.say("B", "잠깐, 앱 보니까 {time} 거는 매진이야. {alt}에는 자리 있어.")
        s.say("A", "그럼 {alt:으로} 하자.")
    s.set(final=s.slots["alt" if soldout else "time"])
    s.smalltalk("B", "A", 0.2)
    s.say("B", "영화 끝나고 {food} 먹으러 가자.", "끝나고 {food} 어때? 나 요즘 {food} 땡겨.")
    s.say("A", "좋아! 그럼 그날 보자.", "콜! 내가 예매할게.")
    _movie_summaries(s, swapped, soldout)


def _movie_summaries(s: _Scene, swapped: bool, soldout: bool) -> None:
    pick = " {B:은} {genre:을} 좋아하지 않아 {title2:을} 고른다." if swapped else ""
    sold = " 원래 보려던 {time} 상영은 매진이었다." if soldout else ""
    s.summary(
        "{A:은} {B}에게 영화를 보자고 하고, 둘은 {date} {final}에 {theater}에서 {movie:을} 보기로 한다."
        + pick,
        "{A:과} {B:은} {date} {final}에 {movie:을} 보고 {food:을} 먹기로 한다." + (sold or pick),
        "{B:은} {A:와} {date}에 {theater}에서 영화를 본다. {movie:은} {final} 상영이고, 끝나면 {food:을} 먹는다.",
    )


_ROOMS = ("디럭스 더블룸", "트윈룸", "스탠다드 더블룸", "패밀리룸", "스위트룸", "오션뷰 디럭스룸", "싱글룸")


def _hotel_checkin(s: _Scene) -> None:
    s.voice.update(G="P", S="F")
    room, better = s.rng.sample(_ROOMS, 2)
    s.set(
        hotel=_shop(s.rng, "호텔"),
        room=room,
        better=better,
        nights=f"{s.rng.randint(1, 4)}박",
        name=_person_name(s.rng),
        floor=f"{s.rng.randint(2, 20)}층",
        bfloor=f"{s.rng.randint(1, 3)}층",
        bstart=f"{s.pick((6, 7))}시",
        bend=f"{s.pick((9, 10))}시 반",
        late=s.pick(("12시", "1시", "2시")),
        fee=_price(s.rng, 10000, 50000, 5000)[1],
        card="#CardNumber#",
    )
    s.say("S", "어서 오십시오, {hotel}입니다. 체크인 도와드리겠습니다.")
    s.say("G", "{name} 이름으로 {room} {nights} 예약했어요.")
    s.say("S", "확인되었습니다. 보증금 결제를 위해 카드 부탁드립니다.")
    s.say("G", "여기요. 카드 번호는 {card:이에요}.")
    s.smalltalk("S", "G", 0.2)
    s.say("S", "객실은 {floor}이고, 조식은 {bfloor} 레스토랑에서 {bstart}부터 {bend}까지입니다.")
    request = s.pick(("late", "upgrade", "none"))
    granted = s.chance(0.6)
    if request == "late":
        s.say("G", "혹시 체크아웃을 좀 늦게 할 수 있을까요?")
        s.say(
            "S",
            "{late}까지 가능하고, 추가 요금 {fee:이} 있습니다."
            if granted
            else "죄송하지만 내일은 만실이라 어렵습니다.",
        )
    elif request == "upgrade":
        s.say("G", "혹시 {better:으로} 바꿀 수 있을까요?")
        s.say(
            "S",
            "마침 빈 방이 있어서 {fee}만 더 내시면 됩니다."
            if granted
            else "죄송하지만 오늘은 빈 방이 없습니다.",
        )
    s.say("G", "네, 감사합니다.")
    _hotel_summaries(s, request, granted)


def _hotel_summaries(s: _Scene, request: str, granted: bool) -> None:
    extra = {
        ("late", True): " {G:은} {fee:을} 더 내고 {late}까지 늦게 체크아웃하기로 한다.",
        ("late", False): " 늦은 체크아웃은 만실이라 안 된다.",
        ("upgrade", True): " {G:은} {fee:을} 더 내고 {better:으로} 방을 바꾼다.",
        ("upgrade", False): " {better:으로} 바꾸려 하지만 빈 방이 없다.",
    }.get((request, granted), "")
    s.summary(
        "{G:은} {hotel}에 {room} {nights:을} 예약해 체크인한다. {S:은} 조식이 {bstart}부터라고 안내한다."
        + extra,
        "{S:은} {G}의 체크인을 돕고 카드로 보증금을 받는다. 방은 {floor}의 {room:이다}." + extra,
        "{G:은} {nights} 묵을 {room}에 체크인하고 {bfloor}에서 조식을 먹을 수 있다는 안내를 받는다." + extra,
    )


_PARCELS = (
    "운동화",
    "책 세 권",
    "화장품 세트",
    "전자레인지",
    "겨울 이불",
    "강아지 사료",
    "노트북 거치대",
    "캠핑 의자",
    "커튼",
    "영양제",
)
_DROP_SPOTS = ("경비실", "문 앞", "무인 택배함", "관리사무소")


def _parcel_inquiry(s: _Scene) -> None:
    s.voice.update(C="P", S=s.pick("FP"))
    s.set(
        parcel=s.pick(_PARCELS),
        day=_date(s.rng),
        hub=f"{s.pick(_AREAS)} 물류 센터",
        time=_clock(s.rng, ("오후", "저녁")),
        spot=s.pick(_DROP_SPOTS),
        ordered=s.pick(("지난주에", "사흘 전에", "그저께", "닷새 전에", "지난 주말에")),
        addr="#Address#",
    )
    s.say("S", fp("감사합니다, 택배 고객센터입니다.", "네, 택배 고객센터예요."))
    s.say("C", "{ordered} {parcel:을} 주문했는데 아직 안 와서요.")
    s.say("S", fp("받는 분 연락처를 말씀해 주시겠습니까?", "받는 분 연락처 알려 주세요."))
    s.say("C", "#PhoneNumber#입니다.")
    status = s.pick(("hub", "today", "address"))
    if status == "hub":
        s.say(
            "S",
            fp(
                "지금 {hub}에 있고, {day}에 도착할 예정입니다.", "지금 {hub}에 있어요. {day}에 도착할 거예요."
            ),
        )
    elif status == "today":
        s.say(
            "S",
            fp(
                "오늘 배송 출발했습니다. {time} 전에 도착합니다.",
                "오늘 배송 출발했어요. {time} 전에 도착해요.",
            ),
        )
    else:
        s.say(
            "S",
            fp(
                "주소가 잘못 입력되어 보류 중입니다. 정확한 주소를 알려 주시겠습니까?",
                "주소가 잘못 들어가서 멈춰 있어요. 정확한 주소 알려 주시겠어요?",
            ),
        )
        s.say("C", "{addr}입니다. 죄송해요.")
        s.say("S", fp("수정했습니다. {day}에 다시 배송됩니다.", "고쳤어요. {day}에 다시 배송돼요."))
    s.say("C", "그럼 {spot}에 맡겨 주세요.", "받을 사람이 없으니 {spot}에 놔 주세요.")
    s.say("S", fp("네, 기사님께 전달하겠습니다.", "네, 기사님께 전달할게요."))
    _parcel_summaries(s, status)


def _parcel_summaries(s: _Scene, status: str) -> None:
    where = {
        "hub": "택배는 {hub}에 있고 {day}에 도착한다.",
        "today": "택배는 오늘 {time} 전에 도착한다.",
        "address": "주소가 잘못되어 있어 {C:이} 주소를 고쳐 주고, 택배는 {day}에 다시 온다.",
    }[status]
    s.summary(
        "{C:은} {ordered} 주문한 {parcel:이} 오지 않아 고객센터에 문의한다. " + where,
        "{S:은} {C}의 택배를 조회해 준다. " + where + " 택배는 {spot}에 맡기기로 한다.",
        where + " {C:은} {S}에게 {parcel:을} {spot}에 두어 달라고 부탁한다.",
    )


# fmt: off
SCENARIOS: tuple[tuple[str, Callable[[_Scene], None]], ...] = (
    ("식당 예약", _restaurant_booking), ("병원 진료", _doctor_visit), ("물건 반품", _product_return),
    ("길 찾기", _asking_the_way), ("취업 면접", _job_interview), ("휴대폰 요금", _phone_bill),
    ("여행 계획", _trip_planning), ("집 구하기", _apartment_rental), ("음식 배달", _food_delivery),
    ("은행 업무", _bank_account), ("분실물 찾기", _lost_item), ("헬스장 등록", _gym_membership),
    ("미용실", _hair_salon), ("자동차 수리", _car_repair), ("영화 약속", _movie_date),
    ("호텔 체크인", _hotel_checkin), ("택배 문의", _parcel_inquiry),
)
# fmt: on


# ---------------------------------------------------------------------------------------------
# Splits and files
# ---------------------------------------------------------------------------------------------
def make_dialogue(rng: random.Random) -> Dialogue:
    """One dialogue of a random scenario, redrawn until it has 4..16 turns and at most 900 characters."""
    topic, build = rng.choice(SCENARIOS)
    for _ in range(100):
        scene = _Scene(rng)
        build(scene)
        dialogue = _render(scene, topic)
        if MIN_TURNS <= dialogue.turns <= MAX_TURNS and len(dialogue.dialogue) <= MAX_DIALOGUE_CHARS:
            return dialogue
    raise RuntimeError(f"scenario {topic}: no dialogue within {MIN_TURNS}..{MAX_TURNS} turns in 100 draws")


def generate(seed: int, train: int, dev: int, test: int) -> dict[str, list[Dialogue]]:
    """Draw train, dev and test dialogues; no dialogue text appears twice across all splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[Dialogue]] = {}
    for split, count in (("train", train), ("dev", dev), ("test", test)):
        rows: list[Dialogue] = []
        misses = 0
        while len(rows) < count:
            dialogue = make_dialogue(rng)
            if dialogue.dialogue in seen:
                misses += 1
                if misses > 1000 + count:
                    raise DialsumError(
                        f"make-sample: cannot draw {count} distinct {split} dialogues; ask for fewer rows"
                    )
                continue
            seen.add(dialogue.dialogue)
            rows.append(dialogue)
        splits[split] = rows
    return splits


def check_args(seed: int, train: int, dev: int, test: int) -> None:
    """Reject counts outside 1..MAX_ROWS and negative seeds, naming the option and the fix."""
    if seed < 0:
        raise DialsumError(f"make-sample: --seed {seed} is negative; use a seed >= 0")
    for name, count in (("train", train), ("dev", dev), ("test", test)):
        if not 1 <= count <= MAX_ROWS:
            raise DialsumError(f"make-sample: --{name} {count} is out of range; use 1 to {MAX_ROWS} rows")
    if train + dev + test > MAX_ROWS:
        raise DialsumError(f"make-sample: {train + dev + test} rows in all; ask for at most {MAX_ROWS}")


OUTPUT_FILES = ("train.csv", "dev.csv", "test.csv", "test_gold.csv")


def write_sample(out: str | Path, seed: int, train: int, dev: int, test: int, force: bool = False) -> dict[str, Path]:
    """Generate the four competition-format CSV files into `out`; return their paths by name.

    Files already there are replaced only with `force`: a user's competition CSVs are never lost.
    """
    check_args(seed, train, dev, test)
    out = check_folder(out, "--out")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not force:
        raise DialsumError(f"--out {out}: already holds {', '.join(existing)}; add --force to replace them, "
                           "or choose another folder")
    rng = random.Random(f"summaries-{seed}")
    splits = generate(seed, train, dev, test)
    paths = {}
    for split in ("train", "dev"):
        rows = [
            (f"{split}_{i}", d.dialogue, rng.choice(d.summaries), d.topic)
            for i, d in enumerate(splits[split])
        ]
        paths[split] = atomic_write_rows(
            out / f"{split}.csv", ("fname", "dialogue", "summary", "topic"), rows
        )
    tests = [(f"test_{i}", d) for i, d in enumerate(splits["test"])]
    paths["test"] = atomic_write_rows(
        out / "test.csv", ("fname", "dialogue"), [(f, d.dialogue) for f, d in tests]
    )
    gold = [(f, *rng.sample(d.summaries, 3)) for f, d in tests]
    paths["test_gold"] = atomic_write_rows(
        out / "test_gold.csv", ("fname", "summary1", "summary2", "summary3"), gold
    )
    return paths


def make_sample(
    out: str | Path | None = None,
    seed: int | None = None,
    train: int | None = None,
    dev: int | None = None,
    test: int | None = None,
    force: bool = False,
) -> list[str]:
    """The `dialsum make-sample` command: unset arguments take the shipped sample's values."""
    args = {
        k: v if v is not None else SAMPLE_ARGS[k]
        for k, v in (("seed", seed), ("train", train), ("dev", dev), ("test", test))
    }
    paths = write_sample(out if out is not None else SAMPLE_DIR, **args, force=force)
    counts = {"train": args["train"], "dev": args["dev"], "test": args["test"], "test_gold": args["test"]}
    return [f"wrote {path} ({counts[name]} rows)" for name, path in paths.items()]
