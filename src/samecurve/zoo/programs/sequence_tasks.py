"""The catalogue of algorithmic sequence tasks, in the manner of MIPS (Michaud et
al. 2024, "Opening the AI black box: program synthesis via mechanistic
interpretability"): each is a causal program `f(xs)` returning one output per
position, written in the restricted Python every submission obeys, so the answer
key is checked and run exactly like a distiller's program. Most are finite-state
machines (what a state-machine distiller can recover exactly); some are counters
(unbounded state: exact only with a compressed, arithmetic program); a few are
memoryless. `arch` says which network learns it (most an RNN, as in MIPS)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeqTask:
    """One task: its program, what the tokens mean, and which network learns it."""

    name: str
    description: str  # the rule in one sentence (for people, never for tools)
    tokens: str  # what the tokens mean (the domain's description, which tools may read)
    vocab: int
    num_outputs: int
    source: str
    arch: str = "seq-rnn"


def _scan(init: str, update: str, output: str, extra: str = "") -> str:
    """A one-state loop: `s = init`, then per token `s = update`, emit `output`."""
    return (
        "def f(xs):\n"
        "    out = []\n"
        f"    s = {init}\n"
        f"{extra}"
        "    for x in xs:\n"
        f"        s = {update}\n"
        f"        out.append({output})\n"
        "    return out\n"
    )


def _memoryless(expr: str) -> str:
    return f"def f(xs):\n    return [{expr} for x in xs]\n"


BITS = "binary tokens 0 and 1"
TERNARY = "tokens 0, 1, 2"
PAIR = "token = 2*a + b for bits a, b of two streams"
BRACKETS = "token 0 is an opening bracket, token 1 a closing one"

_TASKS: list[SeqTask] = [
    SeqTask("parity", "parity of the number of 1s so far", BITS, 2, 2, _scan("0", "(s + x) % 2", "s")),
    SeqTask("sum_mod2", "running sum of the tokens mod 2", TERNARY, 3, 2, _scan("0", "(s + x) % 2", "s")),
    SeqTask("sum_mod3", "running sum of the tokens mod 3", TERNARY, 3, 3, _scan("0", "(s + x) % 3", "s")),
    SeqTask("sum_mod4", "running sum of the tokens mod 4", TERNARY, 3, 4, _scan("0", "(s + x) % 4", "s")),
    SeqTask("sum_mod5", "running sum of the tokens mod 5", TERNARY, 3, 5, _scan("0", "(s + x) % 5", "s")),
    SeqTask("count2_mod2", "how many 2s so far, mod 2", TERNARY, 3, 2,
            _scan("0", "(s + (1 if x == 2 else 0)) % 2", "s")),
    SeqTask("count1_mod3", "how many 1s so far, mod 3", TERNARY, 3, 3,
            _scan("0", "(s + (1 if x == 1 else 0)) % 3", "s")),
    SeqTask("count0_mod4", "how many 0s so far, mod 4", BITS, 2, 4,
            _scan("0", "(s + 1 - x) % 4", "s")),
    SeqTask("diff_mod3", "(number of 1s minus number of 0s) mod 3", BITS, 2, 3,
            _scan("0", "(s + 2 * x - 1) % 3", "s")),
    SeqTask("sum_positive", "whether the running sum of +-1 steps is above 0",
            "token 0 is a step of -1, token 1 a step of +1", 2, 2,
            _scan("0", "s + 2 * x - 1", "1 if s > 0 else 0")),
    SeqTask("sum_nonneg", "whether the running sum of +-1 steps is at least 0",
            "token 0 is a step of -1, token 1 a step of +1", 2, 2,
            _scan("0", "s + 2 * x - 1", "1 if s >= 0 else 0")),
    SeqTask("compare_counts", "0 if fewer 1s than 0s so far, 1 if as many, 2 if more", BITS, 2, 3,
            _scan("0", "s + 2 * x - 1", "0 if s < 0 else (1 if s == 0 else 2)")),
    SeqTask("balanced", "whether the 1s and 0s so far are equally many", BITS, 2, 2,
            _scan("0", "s + 2 * x - 1", "1 if s == 0 else 0")),
    SeqTask("at_least_two", "whether at least two 1s have been seen", BITS, 2, 2,
            _scan("0", "min(s + x, 2)", "1 if s >= 2 else 0")),
    SeqTask("prefix_max", "largest token so far", "tokens 0..3", 4, 4,
            _scan("0", "max(s, x)", "s")),
    SeqTask("prefix_min", "smallest token so far", "tokens 0..3", 4, 4,
            _scan("3", "min(s, x)", "s")),
    SeqTask("seen_two", "whether token 2 has appeared yet", TERNARY, 3, 2,
            _scan("0", "1 if (s == 1 or x == 2) else 0", "s")),
    SeqTask("first_token", "the first token of the sequence", TERNARY, 3, 3,
            _scan("-1", "x if s < 0 else s", "s")),
    SeqTask("binary_adder", "sum bit of adding two binary numbers read least significant first",
            PAIR + ", least significant bit first", 4, 2,
            "def f(xs):\n    out = []\n    c = 0\n    for x in xs:\n"
            "        t = x // 2 + x % 2 + c\n        out.append(t % 2)\n        c = t // 2\n"
            "    return out\n"),
    SeqTask("and_streams", "bitwise and of the two streams", PAIR, 4, 2, _memoryless("(x // 2) * (x % 2)")),
    SeqTask("or_streams", "bitwise or of the two streams", PAIR, 4, 2,
            _memoryless("1 if x > 0 else 0")),
    SeqTask("xor_streams", "bitwise xor of the two streams", PAIR, 4, 2,
            _memoryless("(x // 2 + x % 2) % 2")),
    SeqTask("is_two", "whether the current token is 2", TERNARY, 3, 2, _memoryless("1 if x == 2 else 0")),
    SeqTask("previous_token", "the previous token (0 at the first position)", TERNARY, 3, 3,
            "def f(xs):\n    return [0] + xs[:-1]\n"),
    SeqTask("two_back", "the token two positions back (0 before the start)", BITS, 2, 2,
            "def f(xs):\n    return ([0, 0] + xs)[:len(xs)]\n"),
    SeqTask("same_as_previous", "whether the token repeats the previous one (0 at the start)", BITS, 2, 2,
            "def f(xs):\n    return [1 if i > 0 and xs[i] == xs[i - 1] else 0 for i in range(len(xs))]\n"),
    SeqTask("rising", "whether the token is larger than the previous one", TERNARY, 3, 2,
            "def f(xs):\n    return [1 if i > 0 and xs[i] > xs[i - 1] else 0 for i in range(len(xs))]\n"),
    SeqTask("pattern_110", "whether the pattern 1, 1, 0 has just ended", BITS, 2, 2,
            "def f(xs):\n    return [1 if i >= 2 and xs[i - 2:i + 1] == [1, 1, 0] else 0 "
            "for i in range(len(xs))]\n"),
    SeqTask("pattern_101", "whether the pattern 1, 0, 1 has just ended", BITS, 2, 2,
            "def f(xs):\n    return [1 if i >= 2 and xs[i - 2:i + 1] == [1, 0, 1] else 0 "
            "for i in range(len(xs))]\n"),
    SeqTask("div3_binary", "whether the binary number read so far (most significant bit first) "
            "is divisible by 3", BITS + ", most significant bit first", 2, 2,
            _scan("0", "(2 * s + x) % 3", "1 if s == 0 else 0")),
    SeqTask("binary_mod3", "the binary number read so far (most significant bit first) mod 3",
            BITS + ", most significant bit first", 2, 3, _scan("0", "(2 * s + x) % 3", "s")),
    SeqTask("alternating", "whether no two neighbouring tokens so far are equal", BITS, 2, 2,
            "def f(xs):\n    out = []\n    ok = 1\n    for i in range(len(xs)):\n"
            "        if i > 0 and xs[i] == xs[i - 1]:\n            ok = 0\n"
            "        out.append(ok)\n    return out\n"),
    SeqTask("run_length_mod3", "length of the current run of equal tokens, mod 3", BITS, 2, 3,
            "def f(xs):\n    out = []\n    n = 0\n    for i in range(len(xs)):\n"
            "        n = n + 1 if i > 0 and xs[i] == xs[i - 1] else 1\n"
            "        out.append(n % 3)\n    return out\n"),
    SeqTask("since_one_capped", "tokens since the last 1, capped at 3 (3 if none yet)", BITS, 2, 4,
            _scan("3", "0 if x == 1 else min(s + 1, 3)", "s")),
    SeqTask("both_even", "whether the counts of 0s and of 1s are both even", BITS, 2, 2,
            "def f(xs):\n    out = []\n    a = 0\n    b = 0\n    for x in xs:\n"
            "        a = (a + x) % 2\n        b = (b + 1 - x) % 2\n"
            "        out.append(1 if a == 0 and b == 0 else 0)\n    return out\n"),
    SeqTask("brackets_ok", "whether no prefix has closed more brackets than it opened",
            BRACKETS, 2, 2,
            "def f(xs):\n    out = []\n    d = 0\n    for x in xs:\n"
            "        if d >= 0:\n            d = d + 1 - 2 * x\n"
            "        out.append(1 if d >= 0 else 0)\n    return out\n"),
    SeqTask("brackets_balanced", "whether the brackets so far are balanced (never below zero, "
            "back at zero)", BRACKETS, 2, 2,
            "def f(xs):\n    out = []\n    d = 0\n    for x in xs:\n"
            "        if d >= 0:\n            d = d + 1 - 2 * x\n"
            "        out.append(1 if d == 0 else 0)\n    return out\n"),
    SeqTask("depth_capped", "bracket depth so far, clipped to 0..3", BRACKETS, 2, 4,
            _scan("0", "max(0, min(3, s + 1 - 2 * x))", "s")),
    SeqTask("majority", "the most frequent token so far (the smaller on a tie)", TERNARY, 3, 3,
            "def f(xs):\n    out = []\n    c = [0, 0, 0]\n    for x in xs:\n        c[x] += 1\n"
            "        out.append(c.index(max(c)))\n    return out\n"),
    SeqTask("sum_last_two", "the current token plus the previous one", TERNARY, 3, 5,
            "def f(xs):\n    return [xs[i] + (xs[i - 1] if i > 0 else 0) for i in range(len(xs))]\n"),
    # On a causal transformer (MIPS used RNNs only): tasks attention can do in one
    # or two steps. Transformers rarely generalise to longer sequences.
    SeqTask("previous_token_tf", "the previous token (0 at the first position)", TERNARY, 3, 3,
            "def f(xs):\n    return [0] + xs[:-1]\n", arch="seq-transformer"),
    SeqTask("seen_two_tf", "whether token 2 has appeared yet", TERNARY, 3, 2,
            _scan("0", "1 if (s == 1 or x == 2) else 0", "s"), arch="seq-transformer"),
    SeqTask("prefix_max_tf", "largest token so far", "tokens 0..3", 4, 4,
            _scan("0", "max(s, x)", "s"), arch="seq-transformer"),
    SeqTask("xor_streams_tf", "bitwise xor of the two streams", PAIR, 4, 2,
            _memoryless("(x // 2 + x % 2) % 2"), arch="seq-transformer"),
    SeqTask("first_token_tf", "the first token of the sequence", TERNARY, 3, 3,
            _scan("-1", "x if s < 0 else s", "s"), arch="seq-transformer"),
]

TASKS: dict[str, SeqTask] = {t.name: t for t in _TASKS}
