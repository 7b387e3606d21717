"""The state-machine distiller: it recovers exact programs from networks whose
hidden state is a finite state (a really trained RNN, and an exact network where
the output is the state), abstains where no finite state explains the outputs,
and leaves no hooks behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view
from torch import nn

from samecurve.programs.domain import Domain, query
from samecurve.programs.sandbox import run_program
from samecurve.programs.source import check_source, trusted_function
from samecurve.registry import get
from samecurve.tools.replace.state_machine import StateMachine, minimise
from samecurve.zoo.programs.base import HiddenProgram
from samecurve.zoo.programs.sequence_tasks import TASKS
from samecurve.zoo.programs.sequences import SequenceTask, task_domain

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple]:
    """Really trained GRUs (a few seconds each), as the recipe trains them."""
    out = {}
    recipe = SequenceTask(time_limit=20)
    for name in ("parity", "sum_mod3"):
        torch.manual_seed(0)
        program = recipe.program(name, np.random.default_rng(0))
        result = recipe.train(program, effective_seed=11)
        assert result.passed, name
        out[name] = (result.model, result.domain, program)
    return out


def _long(domain: Domain, n: int = 300, seed: int = 5) -> np.ndarray:
    return domain.sample(n, np.random.default_rng(seed), domain.long_lengths[1])


def test_trained_parity_is_recovered_exactly(trained: dict) -> None:
    model, domain, hidden = trained["parity"]
    program = StateMachine().distill(program_view(model, domain, white_box=True))
    assert program.source is not None, program.notes
    check_source(program.source)
    for length in range(1, 11):  # every sequence up to length 10
        x = domain.all_inputs(length)
        assert np.array_equal(run_program(program, domain, x).values, hidden.labels(domain, x)), length
    x = _long(domain)
    agree = (run_program(program, domain, x).values == query(model, domain, x)).mean()
    assert agree >= 0.99
    assert program.notes["states"] == 2


def test_trained_running_sum_mod3_agrees_on_long_sequences(trained: dict) -> None:
    model, domain, hidden = trained["sum_mod3"]
    program = StateMachine().distill(program_view(model, domain, white_box=True))
    assert program.source is not None, program.notes
    x = _long(domain, seed=6)
    said = run_program(program, domain, x).values
    assert (said == query(model, domain, x)).mean() >= 0.99
    assert (said == hidden.labels(domain, x)).mean() >= 0.99


def test_deterministic_and_leaves_no_hooks(trained: dict) -> None:
    model, domain, _ = trained["parity"]
    first = StateMachine().distill(program_view(model, domain, white_box=True, seed=3))
    second = StateMachine().distill(program_view(model, domain, white_box=True, seed=3))
    assert first.source == second.source
    assert not model.readout._forward_hooks


def test_exact_network_whose_output_is_its_state() -> None:
    """On RuleNetwork the readout reads a one-hot of the output: for a running sum
    mod 4 that IS the state, so the automaton is exact."""
    task = TASKS["sum_mod4"]
    domain = task_domain(task)
    rule = HiddenProgram(task.name, task.description, task.source).function()
    program = StateMachine(samples=300, verify_samples=150).distill(
        program_view(RuleNetwork(rule, domain), domain, white_box=True))
    assert program.source is not None, program.notes
    x = np.concatenate([domain.all_inputs(6), _long(domain, 100)[:, :6]])
    assert np.array_equal(trusted_function(program.source)(list(x[0])),
                          rule([int(t) for t in x[0]]))
    want = np.array([rule([int(t) for t in r]) for r in x])
    assert np.array_equal(run_program(program, domain, x).values, want)


def test_output_that_is_not_the_state_is_never_confidently_wrong() -> None:
    """pattern_110's output (did 1,1,0 just end?) is not its state: from the
    one-hot readout no automaton explains it, so the tool must abstain or be right."""
    task = TASKS["pattern_110"]
    domain = task_domain(task)
    rule = HiddenProgram(task.name, task.description, task.source).function()
    program = StateMachine(samples=300, verify_samples=150).distill(
        program_view(RuleNetwork(rule, domain), domain, white_box=True))
    if program.source is not None:
        x = _long(domain, 100)
        want = np.array([rule([int(t) for t in r]) for r in x])
        assert (run_program(program, domain, x).values == want).mean() >= 0.9


class RandomPerPosition(nn.Module):
    """Outputs a pseudo-random bit for every distinct prefix: its readout reads a
    random code of a hash of the prefix, so no finite automaton explains it."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.codes = torch.randn(4096, width, generator=g)
        self.readout = nn.Linear(width, 2)
        with torch.no_grad():
            self.readout.weight.copy_(torch.randn(2, width, generator=g))
            self.readout.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], dtype=torch.long)
        codes = []
        for t in range(x.shape[1]):
            h = (h * 1_000_003 + x[:, t] + 7) % 4093
            codes.append(self.codes[h])
        return self.readout(torch.stack(codes, 1))


def test_abstains_on_random_outputs() -> None:
    domain = Domain(kind="sequence", vocab=2, num_outputs=2, lengths=(1, 10), long_lengths=(20, 40))
    program = StateMachine(max_states=24).distill(
        program_view(RandomPerPosition(), domain, white_box=True, seconds=30))
    assert program.abstains, program.source


def test_abstains_on_a_grid_domain() -> None:
    domain = Domain(kind="grid", vocab=5, num_outputs=5)
    program = StateMachine().distill(
        program_view(RuleNetwork(lambda a, b: (a + b) % 5, domain), domain, white_box=True))
    assert program.abstains
    assert program.notes.get("not_sequence") == 1.0


def test_respects_a_small_query_budget() -> None:
    domain = task_domain(TASKS["parity"])
    model = get("arch", "seq-rnn")(vocab=2, num_outputs=2, hidden=8)
    view = program_view(model, domain, white_box=True, queries=10)
    assert StateMachine().distill(view).abstains
    assert view.meter.queries <= 10


def test_minimise_merges_equivalent_states() -> None:
    """Four clusters that are two parity states twice over: minimised to two, the
    start state folded into 'even'."""
    from samecurve.tools.replace.state_machine import _Machine

    table = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 1]])  # row 4: the start
    outputs = np.array([0, 1, 0, 1])
    m = _Machine(None, 4, table, outputs, np.ones_like(table, bool), 1.0, np.zeros((1, 1), int))
    auto = minimise(m)
    assert auto.n == 2
    assert auto.output[0] == 0 and auto.table[0] == (0, 1) and auto.table[1] == (1, 0)


class _FixedContext(RuleNetwork):
    """A network that, like a tracr-compiled one, refuses sequences past its context."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.domain.long_lengths[1]:
            raise ValueError(f"reads at most {self.domain.long_lengths[1]} tokens")
        return super().forward(x)


def test_never_queries_past_a_fixed_context() -> None:
    """Filling unseen transitions extends prefixes by one token: never past the
    longest sequence the domain accepts (tracr subjects crashed it before)."""
    # A running sum of 0..2 tokens: sums of 11 are first reached at the sixth and
    # last position, so their transitions are unseen and must be filled.
    domain = Domain("sequence", num_outputs=13, vocab=3, lengths=(1, 6), long_lengths=(6, 6))
    rule = trusted_function("def f(xs):\n    out = []\n    s = 0\n    for x in xs:\n"
                            "        s = s + x\n        out.append(s)\n    return out\n")
    net = _FixedContext(rule, domain)
    program = StateMachine(samples=200, verify_samples=100).distill(
        program_view(net, domain, white_box=True))
    assert program.source is not None, program.notes
