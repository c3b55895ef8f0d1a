"""Bad input, issue #8: ``airflow-hoop audit verify --bundle`` on corrupted bundles (hypothesis).

A small valid bundle is built once (ledger_factory's records, chain and Ed25519 checkpoints,
written by the real ``BundleWriter``; its window starts after a signed checkpoint, as an
export's does). Each example damages a copy of it: bytes flipped, inserted, deleted or the
file truncated; JSON Lines dropped, duplicated, swapped or replaced; a JSON value changed
anywhere (records, checkpoints, signatures, public key, manifest); files removed, emptied,
replaced by a directory, or added. (A bundle is a directory, not an archive: there is no
zip level to damage.)

What verify must cover, and the test holds it to exactly that:

- every byte of every file in the bundle directory other than ``manifest.json`` (records,
  checkpoints, public key, reports, README): any change is reported, and a file the manifest
  does not list is refused;
- in ``manifest.json``, the fields verify relies on: ``format``, ``range`` and ``files``;
- the claimed ``window`` (``since``, ``until``, ``first_seq``, ``last_seq``, ``records``) as
  far as the records can tell: what must hold is the export's query recomputed over the
  records' signed times (which of them fall in ``[since, until)``, and the seq range and
  count claimed). An edit that changes that fails; one that does not (``since`` a microsecond
  earlier than a first record that has no record before it in the bundle) is consistent.

Not covered, by design: the manifest's descriptive fields (``created_at``, ``generator``,
``source``, the window's report filters ``dag_id`` and ``connection``, ``public_key`` (how the
key was obtained), ``anchor``, and ``verification``, the exporter's own result, which verify
recomputes), and the manifest's JSON layout. The test checks that changing those leaves the
result exactly as it was.

For every example: exit code 0 (valid), 1 (a failure named) or 2 (unreadable), never a
traceback; and never 0 when a covered byte differs from the original.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ledger_factory import T0, Ledger, Signer

from airflow_hoop.cli.audit import audit_verify
from airflow_hoop.ledger.bundle import CHECKPOINTS, PUBLIC_KEY, RECORDS, BundleWriter, verify_bundle
from airflow_hoop.ledger.canonical import canonical
from airflow_hoop.ledger.manifest import (
    MANIFEST,
    BundleError,
    BundleManifest,
    BundleRange,
    BundleWindow,
    ReportInputs,
    file_digest,
)
from airflow_hoop.ledger.manifest_sig import (
    MANIFEST_SIG,
    ManifestStatement,
    SignedManifest,
    sign_manifest,
)
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.ledger.report import KINDS as REPORT_KINDS
from airflow_hoop.ledger.report import ReportBuilder, ReportScope
from airflow_hoop.ledger.verify import LedgerVerifier

#: The manifest's fields verify relies on; the others describe the bundle to a reader.
COVERED_MANIFEST_FIELDS = ("format", "range", "files")
#: ``window`` is checked against the records' times (see ``_window_view``), its filters are not.
DESCRIPTIVE_MANIFEST_FIELDS = (
    "created_at",
    "generator",
    "source",
    "window.dag_id",
    "window.connection",
    "public_key",
    "anchor",
    "verification",
)
EXIT_VALID, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2
#: The gateway process's batch key in these bundles (fixed: the bundle is the same each run).
PROCESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Files = dict[str, bytes]


def _write_bundle(out: Path) -> None:
    """A window of a small ledger: from checkpoint 1's record to the last checkpoint."""
    # A fixed key: Ed25519 signatures are deterministic, so records, checkpoints and key are
    # the same bytes on every run, and so are the examples (derandomized hypothesis). (The
    # README names the bundle's temporary directory: it and its digest vary.)
    signer = Signer()
    signer.private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    ledger = Ledger(signer, PROCESS_KEY)
    step = StepRef(dag_id="d", task_id="t", run_id="r")
    for i in range(4):
        ledger.statement(step, i)
        if i == 1:
            ledger.checkpoint()
    ledger.checkpoint()
    lines, keys = ledger.lines(), ledger.signer.keys()
    start = ledger.checkpoints[0]
    first_seq = start.statement.last_seq + 1
    start_body = start.model_dump(mode="json")
    window_lines = lines[first_seq - 1 :]
    writer = BundleWriter(out)
    writer.add_checkpoint(start_body)
    writer.certificates = [ledger.certificate.model_dump(mode="json")]
    window_rows = ledger.rows[first_seq - 1 :]
    verifier = LedgerVerifier(
        keys,
        start_seq=first_seq,
        start_hash=start.statement.head_hash,
        prev_checkpoint=start_body,
        complete=False,
        on_checkpoint=lambda _seq, body: (
            None if body == start_body else writer.add_checkpoint(body)
        ),
        certificates=writer.certificates,
    )
    for line, row in zip(window_lines, window_rows, strict=True):
        writer.write_record(line)
        if row.batch is not None:
            writer.write_batch(row.seq, row.batch)
        verifier.feed(line, batch=row.batch)
    result = verifier.finish()
    assert result.ok, result.failure
    last_seq = first_seq + len(window_lines) - 1
    # The real report of the window: the verifier renders it again and compares.
    inputs = ReportInputs(
        scope=ReportScope(first_seq=first_seq, last_seq=last_seq), facts={"source": "factory"}
    )
    report = ReportBuilder(out, inputs.scope)
    for line in window_lines:
        if json.loads(line)["body"]["kind"] in REPORT_KINDS:
            report.add(json.loads(line))
    report.finish(result, inputs.facts)
    # The window fits the records tightly: from the first record's time to just after the last.
    times = [_record_time(line) for line in window_lines]
    writer.finish(
        keys,
        {
            "created_at": "2026-11-02T00:00:00+00:00",
            "generator": "tests/unit/test_fuzz_bundle.py",
            "source": "ledger_factory",
            "window": BundleWindow(
                since=times[0],
                until=times[-1] + timedelta(seconds=1),
                first_seq=first_seq,
                last_seq=last_seq,
                records=len(window_lines),
            ),
            "range": BundleRange(
                first_seq=first_seq,
                last_seq=last_seq,
                records=len(window_lines),
                start_hash=start.statement.head_hash,
                start_checkpoint=start.statement.number,
            ),
            "verification": result,
            "report": inputs,
        },
    )
    statement = ManifestStatement(
        manifest_sha256=file_digest(out / MANIFEST).sha256,
        last_seq=last_seq,
        end_hash=ledger.head,
        key_id=ledger.key_id,
        signed_at=T0 + timedelta(hours=1),
        signed_for="test",
    )
    signed = sign_manifest(ledger.process_key, statement)
    (out / MANIFEST_SIG).write_text(signed.model_dump_json() + "\n")


@functools.cache
def _original() -> Files:
    """The valid bundle's files, built once (the strategies need them before any fixture)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "b"
        _write_bundle(out)
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        verified = _verify_files(Path(tmp) / "clean", dict(files))
    assert verified.exit_code == EXIT_VALID, verified.output
    assert set(files) >= {MANIFEST, RECORDS, CHECKPOINTS, PUBLIC_KEY, "report.html"}
    return files


@pytest.fixture(scope="module")
def original() -> Files:
    return _original()


def _verify_files(where: Path, files: dict[str, bytes | None]) -> Result:
    """Write the files (None: a directory in the file's place) and run the CLI."""
    bundle = where / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    for name, data in files.items():
        if data is None:
            (bundle / name).mkdir()
        else:
            (bundle / name).write_bytes(data)
    return CliRunner().invoke(audit_verify, ["--bundle", str(bundle)])


# -- what is covered ----------------------------------------------------------------------------
def _covered_view(files: dict[str, bytes | None]) -> Any:
    """Everything verify must protect, or None when the manifest is not a manifest at all.

    Two bundles with the same view must verify alike; a different view must not verify."""
    others = {name: data for name, data in files.items() if name != MANIFEST}
    return (_manifest_view(files.get(MANIFEST)), sorted(others.items(), key=lambda kv: kv[0]))


@functools.lru_cache(maxsize=16)
def _manifest_view(raw: bytes | None) -> Any:
    if raw is None:
        return ("no manifest",)
    try:
        manifest = BundleManifest.model_validate_json(raw)
    except ValueError:
        return ("unreadable manifest", raw)
    # The manifest is signed: every byte of it is covered (the fields once descriptive too).
    return ("manifest", raw, _window_view(manifest.window))


def _record_time(line: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(line)["time"])


def _window_view(window: BundleWindow) -> Any:
    """What the window claims about the (original) records: which of them fall in it, and its
    seq range and count. (A changed records file changes the view through the files.)"""

    def aware(t: datetime) -> datetime:
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)

    since, until = aware(window.since), aware(window.until)
    lines = _original()[RECORDS].splitlines()
    inside = [json.loads(line)["seq"] for line in lines if since <= _record_time(line) < until]
    return (window.first_seq, window.last_seq, window.records, tuple(inside))


def _check(where: Path, original: Files, damaged: dict[str, bytes | None]) -> Result:
    result = _verify_files(where, damaged)
    crash = result.exception if not isinstance(result.exception, SystemExit) else None
    assert crash is None, f"verify crashed: {crash!r}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (EXIT_VALID, EXIT_FAILED, EXIT_UNREADABLE), result.output
    if _covered_view(damaged) != _covered_view(dict(original)):
        assert result.exit_code != EXIT_VALID, "a bundle with covered bytes changed verified"
    else:
        # Only descriptive bytes changed: they are irrelevant to the result.
        assert result.exit_code == EXIT_VALID, result.output
    return result


# -- damage ---------------------------------------------------------------------------------------
def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    _containers,
    max_leaves=5,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a JSON document (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@st.composite
def byte_damage(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
    at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
    if how == "flip":
        bit = 1 << draw(st.integers(min_value=0, max_value=7))
        return data[:at] + bytes([data[at] ^ bit]) + data[at + 1 :] if data else b"\x00"
    if how == "set":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return data[:at]


@st.composite
def line_damage(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    how = draw(st.sampled_from(["drop", "duplicate", "swap", "replace", "move"]))
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if how == "drop":
        del lines[i]
    elif how == "duplicate":
        lines.insert(j, lines[i])
    elif how == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif how == "replace":
        lines[i] = draw(st.binary(max_size=40)) + b"\n"
    else:
        lines.insert(j, lines.pop(i))
    return b"".join(lines)


@st.composite
def json_damage(draw: st.DrawFn, data: bytes, jsonl: bool) -> bytes:
    """One value changed in a JSON document (or one line of a JSON Lines file), re-encoded as
    the file encodes it (canonical lines; indented JSON)."""
    if jsonl:
        lines = data.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        doc = json.loads(lines[i])
    else:
        doc = json.loads(data)
    path = draw(st.sampled_from(_paths(doc)))
    _set(doc, path, draw(JSON_VALUES))
    if jsonl:
        lines[i] = canonical(doc)
        return b"".join(line + b"\n" for line in lines)
    return (json.dumps(doc, indent=2) + "\n").encode()


def damage_of(name: str, data: bytes) -> st.SearchStrategy[bytes]:
    options = [byte_damage(data)]
    if name.endswith(".jsonl"):
        options += [line_damage(data), json_damage(data, jsonl=True)]
    elif name.endswith(".json"):
        options += [json_damage(data, jsonl=False)]
    return st.one_of(*options)


@dataclass
class Damage:
    """A damaged copy of the bundle; shown by what was done (the files are kilobytes)."""

    what: str
    files: dict[str, bytes | None]

    def __repr__(self) -> str:
        changed = [
            f"{name}: {_diff(_original().get(name), data)}"
            for name, data in sorted(self.files.items())
            if _original().get(name) != data
        ]
        gone = sorted(set(_original()) - set(self.files))
        return f"Damage({self.what}; changed {changed}; removed {gone})"


def _diff(before: bytes | None, after: bytes | None) -> str:
    if before is None or after is None:
        return f"{'new' if before is None else 'was a file'} -> {after!r:.60}"
    at = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None)
    at = min(len(before), len(after)) if at is None else at
    return f"{len(before)} -> {len(after)} bytes, from byte {at}: {after[at : at + 60]!r}"


@st.composite
def damaged_bundle(draw: st.DrawFn) -> Damage:
    original = _original()
    files: dict[str, bytes | None] = dict(original)
    how = draw(st.sampled_from(["content"] * 8 + ["remove", "empty", "directory", "extra"]))
    name = draw(st.sampled_from(sorted(original)))
    if how == "content":
        files[name] = draw(damage_of(name, original[name]))
    elif how == "remove":
        del files[name]
    elif how == "empty":
        files[name] = b""
    elif how == "directory":
        files[name] = None
    else:
        name = draw(st.sampled_from(["notes.txt", "records.jsonl.bak", ".hidden"]))
        files[name] = b"x\n"
    return Damage(f"{how} {name}", files)


# -- the tests ------------------------------------------------------------------------------------
@FUZZ
@given(damage=damaged_bundle())
def test_corrupted_bundles_never_crash_and_never_verify(
    damage: Damage, original: Files, tmp_path: Path
) -> None:
    _check(tmp_path, original, damage.files)


@pytest.mark.parametrize("target", [RECORDS, CHECKPOINTS, PUBLIC_KEY, MANIFEST])
def test_every_single_byte_flip_of_a_covered_file_is_caught(
    target: str, original: Files, tmp_path: Path
) -> None:
    """Exhaustive, not sampled: each byte of the file with its lowest bit flipped in turn.
    In-process ``verify_bundle`` (what the CLI calls) and only the target rewritten: thousands
    of runs. In the manifest only bytes of the covered fields must fail; the rest must not."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, content in original.items():
        (bundle / name).write_bytes(content)
    data = original[target]
    caught = 0
    for at in range(len(data)):
        flipped = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        (bundle / target).write_bytes(flipped)
        try:
            ok = verify_bundle(bundle).ok
        except BundleError:
            ok = False  # unreadable: exit code 2, nothing concluded
        damaged: dict[str, bytes | None] = {**original, target: flipped}
        covered = _covered_view(damaged) != _covered_view(dict(original))
        assert ok != covered, f"byte {at} ({data[max(at - 20, 0) : at + 20]!r}): ok={ok}"
        caught += not ok
    print(f"\n{target}: {len(data)} single-bit flips, {caught} caught")
    if target != MANIFEST:
        assert caught == len(data)


def _descriptive_change(name: str) -> Callable[[dict[str, Any]], None]:
    changes: dict[str, Any] = {
        "created_at": "2030-01-01T00:00:00Z",
        "generator": "someone else",
        "source": "http://elsewhere.example",
        "window.dag_id": "another_dag",
        "window.connection": "another_connection",
        "public_key": {"how": "claimed to be fetched from Vault"},
        "anchor": "s3://some-bucket",
        "verification": {"ok": False},
    }

    def change(manifest: dict[str, Any]) -> None:
        *parents, key = name.split(".")
        node = manifest
        for parent in parents:
            node = node[parent]
        node[key] = changes[name]

    return change


@pytest.mark.parametrize("field", DESCRIPTIVE_MANIFEST_FIELDS)
def test_descriptive_manifest_fields_are_signed_too(
    field: str, original: Files, tmp_path: Path
) -> None:
    """The manifest is signed: even the fields that only describe the bundle to a reader
    (its verification summary, where the key came from...) cannot be re-worded."""
    manifest = json.loads(original[MANIFEST])
    _descriptive_change(field)(manifest)
    damaged: dict[str, bytes | None] = dict(original)
    damaged[MANIFEST] = json.dumps(manifest, separators=(",", ":")).encode()
    result = _check(tmp_path, original, damaged)
    assert result.exit_code == EXIT_FAILED
    assert "manifest.json is not the manifest the gateway signed" in result.output


def _edited_window(original: Files, **changes: Any) -> dict[str, bytes | None]:
    """The manifest's window changed, and the manifest signed again with the gateway's key:
    what a faulty exporter would produce; the window check must catch it on its own."""
    manifest = json.loads(original[MANIFEST])
    manifest["window"].update(changes)
    raw = json.dumps(manifest, indent=2).encode()
    signed = SignedManifest.model_validate_json(original[MANIFEST_SIG])
    statement = signed.statement.model_copy(
        update={"manifest_sha256": hashlib.sha256(raw).hexdigest()}
    )
    resigned = sign_manifest(PROCESS_KEY, statement).model_dump_json().encode()
    return {**original, MANIFEST: raw, MANIFEST_SIG: resigned}


def _window_facts(original: Files) -> tuple[int, int, int, datetime, datetime]:
    window = BundleManifest.model_validate_json(original[MANIFEST]).window
    assert window.first_seq is not None and window.last_seq is not None
    return window.first_seq, window.last_seq, window.records, window.since, window.until


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ("since after the first record", "does not hold its first record"),
        ("until before the last record", "does not hold its last record"),
        ("another day", "does not hold its first record"),
        ("starts one record later", "falls in the manifest's window"),
        ("counts one more", "cannot hold them"),
        ("counts none", "counts no records but the bundle holds records"),
        ("outside the records", "outside the records in the bundle"),
    ],
)
def test_an_edited_window_fails_naming_it(
    edit: str, says: str, original: Files, tmp_path: Path
) -> None:
    """The window a reviewer reads is checked against the records' signed times."""
    first, last, records, since, until = _window_facts(original)
    second = timedelta(seconds=1)
    edits: dict[str, dict[str, Any]] = {
        "since after the first record": {"since": (since + second / 2).isoformat()},
        "until before the last record": {"until": (until - second).isoformat()},
        "another day": {
            "since": (since - timedelta(days=1)).isoformat(),
            "until": (until - timedelta(days=1)).isoformat(),
        },
        "starts one record later": {"first_seq": first + 1, "records": records - 1},
        "counts one more": {"records": records + 1},
        "counts none": {"first_seq": None, "last_seq": None, "records": 0},
        "outside the records": {"first_seq": last + 1, "last_seq": last + 2, "records": 2},
    }
    result = _check(tmp_path, original, _edited_window(original, **edits[edit]))
    assert result.exit_code == EXIT_FAILED, result.output
    assert says in result.output and "window was changed after the export" in result.output


def test_a_window_still_open_at_the_export_verifies_with_a_warning(
    original: Files, tmp_path: Path
) -> None:
    """``until`` in the future: the records written after the export counted the window fall
    in it, after its last counted record. Consistent (the export does produce it), but said."""
    _, last, records, _, _ = _window_facts(original)
    damaged = _edited_window(original, last_seq=last - 1, records=records - 1)
    result = _verify_files(tmp_path, damaged)
    assert result.exit_code == EXIT_VALID, result.output
    assert "still open at the export" in " ".join(result.output.split()), result.output
