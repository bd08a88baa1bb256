"""Residency policy: per data class, the form a field may take when it leaves its region.

Theory of operation
-------------------
Every declared field has a data class (:class:`sync.entity.DataClass`); a
region's :class:`ResidencyPolicy` maps each class to a :class:`Form`:

``plain``
    the value leaves as it is; the hub can read it.
``sealed``
    the value leaves encrypted under a data key only the region holds
    (``ecs1.`` strings, ``security.envelope``); the hub stores and merges it by
    its version without being able to read it.
``pseudonymised``
    the value leaves as a keyed token (``ecp1.`` strings,
    ``security.pseudonym``): equal values give equal tokens within a region,
    so the hub can count and join, but not identify.
``local``
    the value never leaves, not even encrypted: the field is dropped from the
    outgoing operation (its version stays in the region too).

The same rules run twice. At a node's egress, :func:`egress_op` rewrites each
operation from the entity declarations before it is published, and counts
what left in which form (for the audit log). At the hub, :func:`check_op`
refuses any operation whose fields break the sending node's registered policy:
a local field that arrived, a sealed field that is not a sealed envelope, a
pseudonymised field that is not a token. ``None`` passes in every form but
``local``: an empty field leaks only its emptiness, and erasures must be able
to clear a field.

Central ops may set a region's **floor**, the weakest form each class may
take there (:func:`below_floor`): the hub refuses a node's policy below it, and
the operations made under such a policy, whatever the node declares.

Sealing and pseudonymising need keys, which live in ``security``; this module
stays pure by taking them as callables. Which data key seals a field is
decided here (:func:`key_id_for`): a customer's own fields and everything
belonging to that customer's tickets use ``customer:<id>``, so erasing a
customer (destroying that key) makes all of it unreadable everywhere; records
with no known customer use a key of their own (``<entity>:<id>``).

Set fields cannot be sealed (a random nonce per element would make removes
miss their adds); they may be pseudonymised (tokens are deterministic) or kept
local. :meth:`ResidencyPolicy.check_supported` refuses a policy that would
seal one.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from types import MappingProxyType
from typing import Final

from sync.crdt import FieldChange, Op, Register, SetDelta, StorageValue
from sync.entities import BY_NAME, ENTITIES
from sync.entity import DataClass, Entity, MergeKind
from sync.errors import SyncError


class Form(StrEnum):
    """How a field's value may leave its region."""

    PLAIN = "plain"
    SEALED = "sealed"
    PSEUDONYMISED = "pseudonymised"
    LOCAL = "local"


DEFAULT_FORMS: Final[Mapping[DataClass, Form]] = MappingProxyType(
    {
        DataClass.PUBLIC: Form.PLAIN,
        DataClass.OPERATIONAL: Form.PLAIN,
        DataClass.PERSONAL: Form.SEALED,
        DataClass.MEDIA: Form.LOCAL,
    }
)


class ResidencyError(SyncError):
    """Base for residency policy problems."""


class PolicyError(ResidencyError):
    """A residency policy is not valid; the message names the setting."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"residency policy {where}: {problem}")


@dataclass(frozen=True, slots=True)
class ResidencyPolicy:
    """The forms in force for one region (as one node declares it), with its version."""

    forms: Mapping[DataClass, Form] = field(default_factory=lambda: DEFAULT_FORMS)
    version: int = 1

    def __post_init__(self) -> None:
        missing = [c.value for c in DataClass if c not in self.forms]
        if missing:
            raise PolicyError("forms", f"no form for data class(es) {', '.join(missing)}")
        if self.version < 1:
            raise PolicyError("version", f"must be at least 1, got {self.version}")
        object.__setattr__(self, "forms", MappingProxyType(dict(self.forms)))

    def form(self, data_class: DataClass) -> Form:
        return self.forms[data_class]

    def field_form(self, entity: Entity, name: str) -> Form:
        return self.forms[entity.field(name).data_class]

    def as_dict(self) -> dict[str, str]:
        """``{data class: form}``, as config files, frames and reports carry it."""
        return {c.value: self.forms[c].value for c in DataClass}

    def same_forms(self, other: ResidencyPolicy) -> bool:
        return self.as_dict() == other.as_dict()

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, object], *, version: int = 1, where: str = "residency"
    ) -> ResidencyPolicy:
        """Read ``{data class: form}``; classes left out keep their default form.

        Raises:
            PolicyError: an unknown data class or form, naming it and the choices.
        """
        forms = dict(DEFAULT_FORMS)
        for key, value in raw.items():
            try:
                data_class = DataClass(key)
            except ValueError:
                choices = ", ".join(c.value for c in DataClass)
                raise PolicyError(f"{where}.{key}", f"unknown data class; use one of {choices}") from None
            try:
                forms[data_class] = Form(str(value))
            except ValueError:
                choices = ", ".join(f.value for f in Form)
                raise PolicyError(f"{where}.{key}", f"unknown form {value!r}; use one of {choices}") from None
        policy = cls(forms, version)
        policy.check_supported()
        return policy

    def check_supported(self, entities: Iterable[Entity] = ENTITIES) -> None:
        """Refuse a policy that would seal a set or counter field.

        Raises:
            PolicyError: naming the field and the forms it can take.
        """
        for entity in entities:
            for f in entity.fields:
                if f.merge is not MergeKind.REGISTER and self.forms[f.data_class] is Form.SEALED:
                    raise PolicyError(
                        f.data_class.value,
                        f"{entity.name}.{f.name} is a {f.merge} field and cannot be sealed; "
                        "choose pseudonymised or local for this class",
                    )


# How much of a value a form lets the hub learn, least first: a floor of ``sealed`` for a class
# accepts ``sealed`` or ``local`` and refuses ``pseudonymised`` (equal values show) or ``plain``.
FORM_STRENGTH: Final[Mapping[Form, int]] = MappingProxyType(
    {Form.PLAIN: 0, Form.PSEUDONYMISED: 1, Form.SEALED: 2, Form.LOCAL: 3}
)


@dataclass(frozen=True, slots=True)
class FloorBreach:
    """A data class whose form in a node's policy is weaker than the region's floor."""

    data_class: DataClass
    form: Form
    floor: Form

    def __str__(self) -> str:
        return (
            f"{self.data_class.value} is {self.form.value}, the region requires at least {self.floor.value}"
        )


def below_floor(policy: ResidencyPolicy, floor: Mapping[DataClass, Form]) -> list[FloorBreach]:
    """Every class ``policy`` lets out in a weaker form than ``floor`` (central ops' minimum) allows."""
    return [
        FloorBreach(c, policy.forms[c], minimum)
        for c, minimum in sorted(floor.items())
        if FORM_STRENGTH[policy.forms[c]] < FORM_STRENGTH[minimum]
    ]


def entity_forms(policy: ResidencyPolicy) -> dict[str, dict[str, Form]]:
    """``{entity: {field: form}}`` for every declared field."""
    return {e.name: {f.name: policy.forms[f.data_class] for f in e.fields} for e in ENTITIES}


# --- egress ------------------------------------------------------------------------------------

SealFn = Callable[[str, str, str, str, StorageValue], str | None]  # (entity, record_id, field, key_id, value)
PseudonymiseFn = Callable[[str, StorageValue], str]  # (scope, value)


def key_id_for(entity: str, record_id: str, customer_id: str | None) -> str:
    """The data key that seals a record's fields: its customer's when known, else its own."""
    if entity == "customer":
        return f"customer:{record_id}"
    if customer_id:
        return f"customer:{customer_id}"
    return f"{entity}:{record_id}"


def pseudonym_scope(entity: str, name: str) -> str:
    """Tokens of one field are comparable across records (count, join); not across fields."""
    return f"{entity}.{name}"


@dataclass(slots=True)
class EgressTally:
    """What left the region, by data class and form: field values, records and operations."""

    values: Tally[tuple[str, str]] = field(default_factory=Tally)
    records: Tally[str] = field(default_factory=Tally)
    ops: int = 0
    dropped_local: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "ops": self.ops,
            "records": dict(sorted(self.records.items())),
            "values": {f"{c}:{f}": n for (c, f), n in sorted(self.values.items())},
            "dropped_local": self.dropped_local,
        }


def egress_op(
    op: Op,
    policy: ResidencyPolicy,
    *,
    seal: SealFn,
    pseudonymise: PseudonymiseFn,
    customer_id: str | None,
    tally: EgressTally | None = None,
) -> Op:
    """The form of ``op`` that may leave the region under ``policy``.

    Fields the program does not declare are dropped (a newer peer's field has no
    known class, so it cannot be shown to be allowed out).
    """
    entity = BY_NAME.get(op.entity)
    changes: dict[str, FieldChange] = {}
    key_id = key_id_for(op.entity, op.record_id, customer_id)
    for name, change in op.changes.items():
        if entity is None or not entity.has(name):
            continue
        data_class = entity.field(name).data_class
        form = policy.forms[data_class]
        if tally is not None:
            tally.values[(data_class.value, form.value)] += 1
        if form is Form.LOCAL:
            if tally is not None:
                tally.dropped_local += 1
            continue
        if form is Form.PLAIN:
            changes[name] = change
        elif form is Form.SEALED:
            changes[name] = _map_register(change, partial(seal, op.entity, op.record_id, name, key_id))
        else:
            changes[name] = _map_change(change, partial(pseudonymise, pseudonym_scope(op.entity, name)))
    if tally is not None:
        tally.ops += 1
        tally.records[op.entity] += 1
    return replace(op, changes=changes)


def _map_register(change: FieldChange, fn: Callable[[StorageValue], str | None]) -> FieldChange:
    """Map a register's value (a sealer may answer None: the value is withheld)."""
    if change.register is None:
        raise PolicyError("forms", f"a {change.kind} change cannot be sealed")
    value = change.register.value
    return FieldChange(
        MergeKind.REGISTER, register=Register(None if value is None else fn(value), change.register.version)
    )


def _map_change(change: FieldChange, fn: Callable[[StorageValue], str]) -> FieldChange:
    """Map a register's value or a set delta's elements (tokens are deterministic, so removes match)."""
    if change.register is not None:
        return _map_register(change, fn)
    if change.delta is not None:
        delta = SetDelta(
            {fn(e): v for e, v in change.delta.add.items()},
            {fn(e): tags for e, tags in change.delta.remove.items()},
        )
        return FieldChange(MergeKind.SET, delta=delta)
    raise PolicyError("forms", f"a {change.kind} change cannot be pseudonymised")


# --- the hub's check ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FormViolation:
    """One field of an incoming operation in a form its region's policy does not allow."""

    entity: str
    record_id: str
    field: str
    data_class: str
    required: Form
    problem: str

    def __str__(self) -> str:
        where = f"{self.entity}.{self.field} of {self.record_id}"
        return f"{where} ({self.data_class}, {self.required}): {self.problem}"


def check_op(
    op: Op,
    policy: ResidencyPolicy,
    *,
    is_sealed: Callable[[object], bool],
    is_pseudonym: Callable[[object], bool],
) -> list[FormViolation]:
    """Every field of ``op`` whose value breaks ``policy``; empty when the op may be merged."""
    entity = BY_NAME.get(op.entity)
    if entity is None:
        return []
    problems: list[FormViolation] = []
    for name, change in op.changes.items():
        if not entity.has(name):
            continue
        data_class = entity.field(name).data_class
        form = policy.forms[data_class]
        problem = _form_problem(change, form, is_sealed, is_pseudonym)
        if problem is not None:
            problems.append(FormViolation(op.entity, op.record_id, name, data_class.value, form, problem))
    return problems


def _form_problem(
    change: FieldChange,
    form: Form,
    is_sealed: Callable[[object], bool],
    is_pseudonym: Callable[[object], bool],
) -> str | None:
    if form is Form.PLAIN:
        return None
    if form is Form.LOCAL:
        return "a local field left its region"
    check, what = (
        (is_sealed, "a sealed envelope") if form is Form.SEALED else (is_pseudonym, "a pseudonym token")
    )
    if change.register is not None:
        value = change.register.value
        return None if value is None or check(value) else f"the value is not {what}"
    if change.delta is not None:
        elements = [*change.delta.add, *change.delta.remove]
        return None if all(check(e) for e in elements) else f"a set element is not {what}"
    return f"a {change.kind} change cannot be {form}"


__all__ = [
    "DEFAULT_FORMS",
    "FORM_STRENGTH",
    "EgressTally",
    "FloorBreach",
    "Form",
    "FormViolation",
    "PolicyError",
    "ResidencyError",
    "ResidencyPolicy",
    "below_floor",
    "check_op",
    "egress_op",
    "entity_forms",
    "key_id_for",
    "pseudonym_scope",
]
