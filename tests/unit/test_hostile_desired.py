"""Hostile desired-state documents: one clear DesiredStateError or a valid DesiredState, never a
traceback or a hang.

Property-based (hypothesis, > 1,000 generated documents in total) plus the hand-made attacks a
property search would not find in its budget: alias bombs, deep nesting, huge fleets, huge files.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import desired
from reconciler.errors import DesiredStateError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = yaml.safe_load((ROOT / "schemas" / "examples" / "reference-lab.yaml").read_text())
TWO = yaml.safe_load((ROOT / "schemas" / "examples" / "two-targets.yaml").read_text())
HOSTILE = settings(
    deadline=5000,  # ms per document: far above the worst legitimate case, far below a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def cpu_seconds() -> float:
    """This process's CPU time: what loading costs, unlike wall time, does not grow when other jobs
    share the machine (seven engineers' suites on two cores made wall-time bounds flaky). A loop or
    an expansion bomb burns CPU, so the bounds still catch a hang."""
    return time.process_time()


def outcome(text: str, source: str) -> desired.DesiredState | DesiredStateError:
    """What loads gives back, asserting it is one of the two allowed answers and was quick."""
    started = cpu_seconds()
    try:
        result: desired.DesiredState | DesiredStateError = desired.loads(text, source)
    except DesiredStateError as exc:
        result = exc
    assert cpu_seconds() - started < 5, "a document took more than 5 s: a hang for an operator"
    if isinstance(result, DesiredStateError):
        message = str(result)
        assert message and result.problems
        assert all(line.startswith(source) for line in message.splitlines()), message[:500]
        assert len(result.problems) <= desired.MAX_PROBLEMS + 1
        assert "Traceback" not in message
    else:
        assert isinstance(result, desired.DesiredState) and result.targets
    return result


# ---- strategies -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["0.0.0.0/0", "10.0.1.6", "65515", "https://x", "Vpn", "ExpressRoute", "", "\x00", "🔥"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=60,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid document with 1-4 edits: a value replaced, a key dropped or added, a list grown."""
    doc = copy.deepcopy(draw(st.sampled_from([REFERENCE, TWO])))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "drop", "add", "duplicate"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "drop":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


def as_text(doc: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, default=str)
    return yaml.safe_dump(doc, allow_unicode=True)


# ---- properties -------------------------------------------------------------------------------


@settings(HOSTILE, max_examples=400)
@given(doc=json_values, fmt=st.sampled_from(["json", "yaml"]))
def test_any_json_value_is_a_clear_error_or_a_valid_state(doc: Any, fmt: str) -> None:
    outcome(as_text(doc, fmt), f"doc.{fmt}")


@settings(HOSTILE, max_examples=400)
@given(doc=mutated_documents(), fmt=st.sampled_from(["json", "yaml"]))
def test_a_mutated_valid_document_is_a_clear_error_or_a_valid_state(doc: Any, fmt: str) -> None:
    result = outcome(as_text(doc, fmt), f"fleet.{fmt}")
    if isinstance(result, desired.DesiredState):
        # A document that passes is one the service can run: it round-trips through its own model.
        assert desired.parse(result.model_dump(mode="json")) == result


@settings(HOSTILE, max_examples=300)
@given(text=st.text(max_size=400), fmt=st.sampled_from(["json", "yaml"]))
def test_arbitrary_text_is_a_clear_error_or_a_valid_state(text: str, fmt: str) -> None:
    outcome(text, f"doc.{fmt}")


@settings(HOSTILE, max_examples=100)
@given(
    depth=st.integers(1, 200_000),
    opener=st.sampled_from(["[", "{a: ", '{"a": ', "- "]),
    fmt=st.sampled_from(["json", "yaml"]),
)
def test_deeply_nested_documents_are_refused_or_parsed_never_a_recursion_error(
    depth: int, opener: str, fmt: str
) -> None:
    closer = {"[": "]", "{a: ": "}", '{"a": ': "}", "- ": ""}[opener]
    if opener == "- ":
        text = "".join("  " * i + "- \n" for i in range(min(depth, 3000)))
    else:
        text = opener * depth + "1" + closer * depth
    assert isinstance(outcome(text, f"deep.{fmt}"), DesiredStateError)


# ---- hand-made attacks ------------------------------------------------------------------------


def alias_bomb(fanout: int) -> str:
    """Three levels of aliases: `fanout`**3 route entries from a ~10 KB file (a "billion laughs")."""
    refs = ",".join
    return (
        "r: &r {prefix: 0.0.0.0/0, next_hop_type: Internet}\n"
        f"s: &s {{vnet: v, subnet: s, routes: [{refs(['*r'] * fanout)}]}}\n"
        "t: &t {name: t, subscription_id: s, resource_group: g, route_server: r, "
        "firewall: {private_ip: 10.0.0.1}, peers: [{name: p, ip: 10.0.0.2, asn: 65001}], "
        f"subnets: [{refs(['*s'] * fanout)}]}}\n"
        f"targets: [{refs(['*t'] * fanout)}]\n"
    )


def test_an_alias_bomb_is_refused_at_once() -> None:
    started = cpu_seconds()
    with pytest.raises(DesiredStateError, match="aliases expand the document"):
        desired.loads(alias_bomb(400), "bomb.yaml")  # 64 million values once expanded
    assert cpu_seconds() - started < 1


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(DesiredStateError, match="aliases expand the document"):
        desired.loads("targets: &t [*t]\n", "loop.yaml")


def test_anchors_and_aliases_within_the_limit_still_work() -> None:
    common = "subscription_id: s, resource_group: g, route_server: r, firewall: {private_ip: 10.0.3.4}"
    doc = (
        "version: 1\n"
        "targets:\n"
        f"  - {{name: a, {common}, peers: [&nva {{name: nva1, ip: 10.0.1.6, asn: 65001}}]}}\n"
        f"  - {{name: b, {common}, peers: [*nva]}}\n"
    )
    state = desired.loads(doc, "anchors.yaml")
    assert [t.peers[0].name for t in state.targets] == ["nva1", "nva1"]


def test_a_deep_json_array_is_a_clear_error_not_a_recursion_error() -> None:
    # Found by this suite: json.loads raised RecursionError, which escaped as a traceback.
    with pytest.raises(DesiredStateError, match="nested too deeply"):
        desired.loads("[" * 100_000 + "]" * 100_000, "deep.json")


def test_a_huge_valid_fleet_loads_in_seconds() -> None:
    doc = copy.deepcopy(REFERENCE)
    template = doc["targets"][0]
    doc["targets"] = [{**template, "name": f"hub-{i:04d}"} for i in range(3000)]
    for fmt in ("json", "yaml"):
        started = cpu_seconds()
        state = outcome(as_text(doc, fmt), f"fleet.{fmt}")
        assert isinstance(state, desired.DesiredState) and len(state.targets) == 3000
        assert cpu_seconds() - started < 5


def test_a_huge_invalid_fleet_gets_one_bounded_error() -> None:
    doc = {"version": 1, "targets": [{"name": f"t{i}"} for i in range(5000)]}
    err = outcome(json.dumps(doc), "fleet.json")
    assert isinstance(err, DesiredStateError)
    assert len(err.problems) == desired.MAX_PROBLEMS + 1
    assert "more problem(s)" in err.problems[-1][1]


def test_a_document_over_the_size_limit_is_refused_before_parsing() -> None:
    text = "# " + "x" * desired.MAX_DOCUMENT_CHARS + "\n"
    started = cpu_seconds()
    with pytest.raises(DesiredStateError, match="the limit is"):
        desired.loads(text, "huge.yaml")
    assert cpu_seconds() - started < 1


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['true']",  # safe_load must not build Python objects
        "targets: !!binary aGVsbG8=",
        "\ufeff{}",
        "version: 1\ntargets: []\n",
        "---\n...\n---\n",
        "a: 1\na: 2\n",
        "? [a, b]\n: c\n",
        "targets: [{name: !!float 1e400}]",
    ],
)
def test_yaml_features_an_operator_should_not_use_are_clear_errors(text: str) -> None:
    assert isinstance(outcome(text, "odd.yaml"), DesiredStateError)


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("targets: [{name: caf\xe9}]".encode("latin-1"))
    with pytest.raises(DesiredStateError, match="cannot read file"):
        desired.load(p)


def test_property_runs_use_a_known_seed(pytestconfig: pytest.Config) -> None:
    # A failure found on one seed must be replayable: tests/conftest.py always fixes the seed
    # (CI: a constant; a developer's machine: a fresh one, printed) and prints it beside failures.
    import hypothesis.core

    seed = pytestconfig.getoption("hypothesis_seed")
    assert seed is not None and str(hypothesis.core.global_force_seed) == str(seed)


# The class behind "prefixes: [false] is 0.0.0.0/32": any address, prefix or ASN position given a
# value of the wrong JSON type must be refused at exactly that path, never coerced.
TYPED_LEAVES = ("prefixes", "ip", "asn", "private_ip", "onprem_peers", "prefix", "next_hop_ip")
wrong_typed = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 255), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _typed_paths(doc: Any) -> list[tuple[Any, ...]]:
    """Paths of the address/prefix/ASN values in a document (list items for the list fields)."""
    found = []
    for path in _paths(doc):
        names = [p for p in path if isinstance(p, str)]
        if not names or names[-1] not in TYPED_LEAVES:
            continue
        value: Any = doc
        for part in path:
            value = value[part]
        if isinstance(value, list):
            continue  # its items are paths of their own
        found.append(path)
    return found


@settings(HOSTILE, max_examples=200)
@given(data=st.data(), fmt=st.sampled_from(["json", "yaml"]))
def test_a_wrong_typed_address_prefix_or_asn_is_refused_at_its_path(data: st.DataObject, fmt: str) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from([REFERENCE, TWO])))
    path = data.draw(st.sampled_from(_typed_paths(doc)))
    value = data.draw(wrong_typed)
    if path[-1] == "asn" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) + 0.5  # an integer is the right type for an ASN; make it a wrong one
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    result = outcome(as_text(doc, fmt), f"typed.{fmt}")
    assert isinstance(result, DesiredStateError), f"{path} = {value!r} was accepted"
    where = desired._loc(path)
    assert any(p == where or p.startswith(where + ".") or p.startswith(where + "[") for p, _ in result.problems), (
        where,
        result.problems,
    )
