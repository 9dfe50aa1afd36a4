"""Annotation entries -> what the model is asked and what its answer is scored against.

One rule for `vlynx eval --data` and `vlynx score --references`, so both accept the same file: a
prepared entry (`vlynx prepare`: the benchmark's own fields, `question` included) is asked
`Benchmark.entry_prompt(entry)`; a hand-made entry (LLaVA/PAVE conversations only) is asked its
last human turn, phrased by `Benchmark.prompt` (e.g. AVQA's options added when the turn lacks them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.metrics.benchmark import Benchmark, References
from vlynx.metrics.records import add_unique, first_field

Turns = tuple[list[tuple[str, str]], str | None, str | None]  # earlier (question, answer) turns, last question, answer


def entry_turns(entry: dict[str, Any]) -> Turns:
    """(earlier (question, answer) turns, last question or None, last answer or None) of one entry:
    from its conversation, else from its raw `question`/`question_content`/`question_text` and `answer`."""
    conversations = entry.get("conversations")
    if not conversations:
        question = first_field(entry, ("question", "question_content", "question_text"))
        answer = entry.get("answer")
        return [], None if question is None else strip_placeholder(str(question)), \
            None if answer is None else str(answer)
    history, question, answer = [], None, None
    for turn in conversations:
        role, value = turn.get("from"), str(turn.get("value", ""))
        if role == "human":
            if question is not None and answer is not None:
                history.append((question, answer))
            question, answer = strip_placeholder(value), None
        elif role == "gpt":
            answer = value
    if question is None:
        raise ValueError("has no human turn")
    return history, question, answer


def strip_placeholder(text: str) -> str:
    return text.replace("<image>\n", "").replace("<image>", "").strip()


def entry_id(spec: Benchmark, entry: dict[str, Any]) -> str:
    """An entry's id: `id`, else the benchmark's own id field (e.g. `question_id`, `take_uid`)."""
    item_id = first_field(entry, ("id", *spec.id_keys))
    if item_id is None:
        raise ValueError(f"has no id (looked for {', '.join(dict.fromkeys(('id', *spec.id_keys)))})")
    return str(item_id)


def entry_prompt_and_reference(spec: Benchmark, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the user text the model is asked, without `<image>`; the reference fields) of one entry.
    Raises ValueError saying what is wrong; the caller names the entry and the file."""
    history, question, answer = entry_turns(entry)
    reference = spec.reference_from_entry(entry, question, answer)
    if spec.has_own_question(entry):
        return spec.entry_prompt(entry), reference
    if question is None:
        raise ValueError("needs 'conversations' or a 'question' field")
    return spec.prompt(question, history, reference), reference


@dataclass
class EntryReferences:
    """References read from annotation entries, and the other ids other tools name them by.

    `aliases` maps the value of one of the benchmark's `alias_keys` (e.g. AVSD's `image_id`) to the
    entry id it stands for, or to None when several entries share it (then it names no question).
    """

    references: References
    aliases: dict[str, str | None]
    alias_fields: dict[str, str]  # alias -> the field it came from, for messages


def is_annotation(records: list[dict[str, Any]]) -> bool:
    """Whether records are annotation entries (a LLaVA/PAVE conversation) rather than a reference file's."""
    return any("conversations" in record for record in records)


def read_entry_references(spec: Benchmark, records: list[dict[str, Any]], path: str | Path) -> EntryReferences:
    """The references (and aliases) of an annotation file's entries, by the rule `vlynx eval` uses."""
    references: References = {}
    aliases: dict[str, str | None] = {}
    alias_fields: dict[str, str] = {}
    for index, entry in enumerate(records):
        try:
            item_id = entry_id(spec, entry)
            _, reference = entry_prompt_and_reference(spec, entry)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise VlynxError(f"entry {index} {error}", path) from error
        add_unique(references, item_id, reference, path)
        for key in spec.alias_keys:
            if entry.get(key) is None or str(entry[key]) == item_id:
                continue
            alias = str(entry[key])
            aliases[alias] = item_id if alias not in aliases else None
            alias_fields[alias] = key
    if not references:
        raise VlynxError("holds no entries", path)
    return EntryReferences(references, aliases, alias_fields)


def predictions_by_entry_id(predictions: dict[str, str], entries: EntryReferences,
                            path: str | Path) -> dict[str, str]:
    """`predictions` keyed by entry id: a prediction named by an alias (e.g. PAVE's AVSD `image_id`)
    moves to the entry it names; one named by an alias several entries share is an error."""
    keyed: dict[str, str] = {}
    for item_id, text in predictions.items():
        if item_id not in entries.references and item_id in entries.aliases:
            target = entries.aliases[item_id]
            if target is None:
                field = entries.alias_fields[item_id]
                raise VlynxError(f"prediction id {item_id!r} is the '{field}' of several entries of the references: "
                                 "it names no single question; write predictions by question id", path)
            item_id = target
        add_unique(keyed, item_id, text, path)
    return keyed
