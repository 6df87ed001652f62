"""Differential check of SMS segment counting against Twilio's segment calculator.

The reference is the npm package `sms-segments-calculator`, run with node. It is not a dependency of
the project: install it in a folder of your own and name that folder.

    mkdir -p /tmp/smsdiff && (cd /tmp/smsdiff && npm install sms-segments-calculator@1.3.0)
    python3 dev.py run python scripts/sms_differential.py --calculator /tmp/smsdiff --count 20000

It generates a corpus of messages (seeded, so a run can be repeated), counts each with
`service.domain.sms_segments.count_segments` and with the calculator, and prints every mismatch in
segment count or encoding. `--write-table PATH` also writes the corpus with the calculator's answers
(gzipped JSON), the table `tests/unit/test_sms_segments_reference.py` checks against (so the suite
needs no node).

`--write-break-table` regenerates `service/domain/sms_grapheme_table.py`, the Grapheme_Cluster_Break
property of every code point as the calculator's segmenter (grapheme-splitter, UAX #29 of Unicode
10.0) has it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

from service.domain.sms_segments import SmsEncoding, count_segments

_CALCULATOR_JS = """
const { SegmentedMessage } = require('sms-segments-calculator');
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
  const answers = JSON.parse(input).map((body) => {
    const message = new SegmentedMessage(body);
    return [message.segmentsCount, message.encodingName];
  });
  process.stdout.write(JSON.stringify(answers));
});
"""

_BREAK_PROPERTIES_JS = """
const fs = require('fs');
const path = require.resolve('grapheme-splitter');
let source = fs.readFileSync(path, 'utf8');
source = source.replace(/return this;\\r?\\n}/, 'this.property = getGraphemeBreakProperty; return this;}');
const module_ = { exports: {} };
new Function('module', source)(module_);
const splitter = new module_.exports();
const names = ['CR', 'LF', 'Control', 'Extend', 'Regional_Indicator', 'SpacingMark', 'L', 'V', 'T', 'LV',
  'LVT', 'Other', 'Prepend', 'E_Base', 'E_Modifier', 'ZWJ', 'Glue_After_Zwj', 'E_Base_GAZ'];
const ranges = [];
let start = 0, current = splitter.property(0);
for (let code = 1; code <= 0x110000; code++) {
  const property = code <= 0x10ffff ? splitter.property(code) : -1;
  if (property !== current) {
    ranges.push([start, code - 1, names[current]]);
    start = code;
    current = property;
  }
}
process.stdout.write(JSON.stringify(ranges));
"""

_TABLE_MODULE = Path(__file__).resolve().parent.parent / "service" / "domain" / "sms_grapheme_table.py"

_ENCODING_NAMES = {"GSM-7": SmsEncoding.GSM7, "UCS-2": SmsEncoding.UCS2}

ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'-:;()"
GSM_NON_ASCII = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà"
GSM_EXTENSION = "^{}\\[~]|€\f"
LINE_BREAKS = ["\n", "\r\n", "\r"]
CYRILLIC = "абвгдежзийклмнопрстуфхцчшщъыьэюяЖЩЯ"
GREEK_NON_GSM = "αβγδεζηθικλμνξοπρστυφχψω"
CJK = "中文字的一是不了人我在有他这为之大来以个国到说们"
ARABIC = "مرحباالعربيةشكرا"
HEBREW = "שלוםעולם"
THAI = ["ก", "ข", "ค", "น", "ม", "ส", "ห", "อ", "ำ", "ี", "่", "้", "ุ", "ั"]
DEVANAGARI = ["न", "म", "स्", "ते", "क्ष", "त्र", "ज्ञ", "श्र", "हि", "न्दी", "र्", "ं", "ः", "्"]
BENGALI = ["ক্ষ", "ন্ত", "বা", "ংলা", "স্ক"]
HANGUL = ["한", "국", "어", "\u1100\u1161", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab"]
COMBINING = [chr(c) for c in range(0x0300, 0x0370)] + ["\u20dd", "\u20e3", "\u1ab0", "\u1dc0"]
SMP_EMOJI = ["😀", "😂", "🙏", "👍", "🎉", "🔥", "💯", "🤔", "🥳", "🦄", "🧑", "👩", "👨", "👧", "👦"]
NEW_EMOJI = ["🫠", "🫶", "🪿", "🫎", "🩷", "🫨", "🪼", "🫧", "🥹", "🫡", "🪾", "🫟", "🫩"]
BMP_EMOJI = ["☺", "♥", "✈", "☀", "⚽", "✅", "❤", "✌", "☝", "⭐"]
SKIN_TONES = [chr(c) for c in range(0x1F3FB, 0x1F400)]
ZWJ_SEQUENCES = [
    "👨\u200d👩\u200d👧\u200d👦",
    "👩\u200d❤\ufe0f\u200d💋\u200d👨",
    "🧑\u200d💻",
    "👩🏽\u200d🚀",
    "🏳\ufe0f\u200d🌈",
    "🏴\u200d☠\ufe0f",
    "🐦\u200d🔥",
    "🍋\u200d🟩",
    "🙂\u200d↔\ufe0f",
    "🧑\u200d🦰",
    "👁\u200d🗨",
    "🧑🏿\u200d🤝\u200d🧑🏻",
    "🫱🏻\u200d🫲🏿",
    "🏃\u200d♀\ufe0f\u200d➡\ufe0f",
]
FLAGS = ["🇫🇷", "🇺🇸", "🇯🇵", "🇩🇪", "🇧🇷", "🇺🇦"]
REGIONAL_INDICATORS = [chr(c) for c in range(0x1F1E6, 0x1F200)]
TAG_FLAGS = ["🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"]
KEYCAPS = ["#\ufe0f\u20e3", "1\ufe0f\u20e3", "*\u20e3"]
ODD = ["\u200d", "\u200c", "\ufeff", "\ufe0f", "\ufe0e", "\ue000", "\U0010fffd", "\u0600", "\u0903", "\u00ad"]


def _atom(rng: random.Random, style: str) -> str:
    if style == "any":
        # Any assigned or unassigned code point but a surrogate: the property table end to end.
        code = rng.choice(
            [
                rng.randint(0, 0x2FFF),
                rng.randint(0, 0xFFFF),
                rng.randint(0x1F000, 0x1FAFF),
                rng.randint(0, 0x10FFFF),
            ]
        )
        return chr(code) if not 0xD800 <= code <= 0xDFFF else "x"
    if style == "gsm":
        roll = rng.random()
        if roll < 0.8:
            return rng.choice(ASCII)
        if roll < 0.9:
            return rng.choice(GSM_NON_ASCII)
        if roll < 0.97:
            return rng.choice(GSM_EXTENSION)
        return rng.choice(LINE_BREAKS)
    pools: list[tuple[float, list[str] | str]] = [
        (30, ASCII),
        (3, GSM_EXTENSION),
        (2, LINE_BREAKS),
        (6, CYRILLIC),
        (2, GREEK_NON_GSM),
        (4, CJK),
        (2, ARABIC),
        (1, HEBREW),
        (3, THAI),
        (3, DEVANAGARI),
        (1, BENGALI),
        (2, HANGUL),
        (8, SMP_EMOJI),
        (3, NEW_EMOJI),
        (3, BMP_EMOJI),
        (6, ZWJ_SEQUENCES),
        (3, FLAGS),
        (1, REGIONAL_INDICATORS),
        (1, TAG_FLAGS),
        (1, KEYCAPS),
        (1, ODD),
    ]
    roll = rng.uniform(0, sum(weight for weight, _ in pools))
    pool: list[str] | str = ASCII
    for weight, pool in pools:  # noqa: B007 - the pool the roll lands in is used after the loop
        roll -= weight
        if roll <= 0:
            break
    atom = rng.choice(pool)
    if pool is SMP_EMOJI and rng.random() < 0.4:
        atom += rng.choice(SKIN_TONES)
    if pool is BMP_EMOJI and rng.random() < 0.5:
        atom += "\ufe0f"
    if pool is ASCII and rng.random() < 0.04:
        atom += "".join(rng.choice(COMBINING) for _ in range(rng.choice([1, 1, 2, 3, 8])))
    return atom


def generate_corpus(count: int, seed: int) -> list[str]:
    """Messages around the segment boundaries: mostly 50 to 220 code units, some much longer."""
    rng = random.Random(seed)
    bodies: list[str] = []
    for _ in range(count):
        style = rng.choices(["gsm", "mixed", "any"], weights=[2, 7, 1])[0]
        target = rng.choice(
            [rng.randint(50, 220), rng.randint(60, 80), rng.randint(125, 145), rng.randint(1, 700)]
        )
        parts: list[str] = []
        length = 0
        while length < target:
            atom = _atom(rng, style)
            parts.append(atom)
            length += len(atom.encode("utf-16-le")) // 2
        if style != "gsm" and rng.random() < 0.5:
            # Mostly plain text with one special cluster near the end, so it often straddles a boundary.
            parts = [rng.choice(ASCII) for _ in range(rng.randint(60, 210))]
            parts.insert(rng.randint(max(0, len(parts) - 12), len(parts)), _atom(rng, style))
        bodies.append("".join(parts))
    return bodies


def calculator_answers(calculator_dir: Path, bodies: list[str]) -> list[tuple[int, SmsEncoding]]:
    answers = json.loads(_node(calculator_dir, _CALCULATOR_JS, json.dumps(bodies)))
    return [(segments, _ENCODING_NAMES[name]) for segments, name in answers]


def _node(calculator_dir: Path, script: str, stdin: str) -> str:
    completed = subprocess.run(
        ["node", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=calculator_dir,
        env={"NODE_PATH": str(calculator_dir / "node_modules"), "PATH": "/usr/bin:/usr/local/bin:/bin"},
        check=True,
    )
    return completed.stdout


def render_break_table(ranges: list[tuple[int, int, str]]) -> str:
    """The table module: per property, its ranges as hex `FIRST-LAST` words, a few lines each."""
    by_property: dict[str, list[str]] = {}
    for first, last, name in ranges:
        if name not in ("Other", "LV", "LVT"):
            word = f"{first:04X}" if first == last else f"{first:04X}-{last:04X}"
            by_property.setdefault(name, []).append(word)
    lines = [
        '"""Grapheme_Cluster_Break of each code point, as UAX #29 of Unicode 10.0 gives it (generated).',
        "",
        "Generated by `scripts/sms_differential.py --write-break-table` from the segmenter of Twilio's",
        "segment calculator (grapheme-splitter); do not edit. Code points not listed are Other, except the",
        "Hangul syllables, which `service/domain/sms_graphemes.py` derives from their code points.",
        "Each property's ranges are hex words, `FIRST-LAST` or a single code point.",
        '"""',
        "",
        "_RANGES_BY_PROPERTY = {",
    ]
    for name in sorted(by_property):
        words, row, rows = by_property[name], "", []
        for word in words:
            if len(row) + len(word) + 1 > 96:
                rows.append(row)
                row = ""
            row = f"{row} {word}" if row else word
        rows.append(row)
        if len(rows) == 1:
            lines.append(f'    "{name}": "{row}",')
            continue
        lines.append(f'    "{name}": (')
        lines.extend(f'        "{r} "' for r in rows[:-1])
        lines += [f'        "{rows[-1]}"', "    ),"]
    lines += [
        "}",
        "",
        "BREAK_PROPERTY_RANGES: tuple[tuple[int, int, str], ...] = tuple(",
        "    sorted(",
        "        (int(first, 16), int(last or first, 16), name)",
        "        for name, words in _RANGES_BY_PROPERTY.items()",
        '        for first, _, last in (word.partition("-") for word in words.split())',
        "    )",
        ")",
    ]
    return "\n".join(lines) + "\n"


def write_break_table(calculator_dir: Path) -> None:
    """The Hangul syllables (LV, LVT) are left out: they follow from their code points."""
    ranges = [tuple(r) for r in json.loads(_node(calculator_dir, _BREAK_PROPERTIES_JS, ""))]
    _TABLE_MODULE.write_text(render_break_table(ranges), encoding="utf-8")
    print(f"wrote {_TABLE_MODULE}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calculator", type=Path, required=True, help="folder where sms-segments-calculator is installed"
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--corpus", type=Path, help="a JSON list of bodies to use instead of a generated corpus"
    )
    parser.add_argument(
        "--write-table", type=Path, help="write [body, segments, encoding] rows here (.json.gz)"
    )
    parser.add_argument(
        "--write-break-table", action="store_true", help="regenerate the break-property table"
    )
    args = parser.parse_args(argv)
    if args.write_break_table:
        write_break_table(args.calculator)
        return 0
    bodies = json.loads(args.corpus.read_text()) if args.corpus else generate_corpus(args.count, args.seed)
    expected = calculator_answers(args.calculator, bodies)
    mismatches = 0
    for body, (segments, encoding) in zip(bodies, expected, strict=True):
        ours = count_segments(body)
        if (ours.segments, ours.encoding) != (segments, encoding):
            mismatches += 1
            if mismatches <= 20:
                ours_text = f"{ours.segments} {ours.encoding}"
                print(f"mismatch: ours {ours_text}, calculator {segments} {encoding}: {body!r}")
    print(f"{len(bodies)} messages, {mismatches} mismatches in segment count or encoding")
    if args.write_table:
        rows = [
            [body, segments, str(encoding)]
            for body, (segments, encoding) in zip(bodies, expected, strict=True)
        ]
        table = (json.dumps(rows, ensure_ascii=False, indent=0) + "\n").encode("utf-8")
        args.write_table.write_bytes(gzip.compress(table, mtime=0))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
