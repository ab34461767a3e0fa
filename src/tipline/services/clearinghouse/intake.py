"""The CyberTipline-compatible intake (ISPWS): status, xsd, submit, upload, fileinfo,
finish, retract — the clearinghouse side of the protocol in
``../shared/reference/cybertipline/PROTOCOL.md``.

Each operation is one function taking the request's ``Authorization`` header and its
parsed input, and returning an :class:`~.answers.IspwsAnswer` (an unknown account raises
:class:`IntakeAuthError`: HTTP 401, empty body). Every state change and every refusal
is audited with the provider as actor; a refused request changes nothing else (a file
encrypted for an upload that is then refused is removed with its transaction).

Untrusted XML is parsed with no DTD, no entities and no network, within
:attr:`Intake.max_xml_bytes`, then validated against NCMEC's schema. Every uploaded
file is hashed (MD5, SHA-1, SHA-256 always; PDQ or vPDQ when it is a photo or video)
and kept encrypted in the evidence vault. Photos are decoded for PDQ as
:attr:`Intake.hash_options` says: by default the fast decode, as every query of tipline
is, since de-duplication only compares; the photos an analyst confirms are hashed again
with the reference decode when their hashes are published (:mod:`.published_photos`).
Each PDQ signal records the decode it was computed with (``"decode"``).

Durability: the serving process runs the intake on an async-commit handle
(:meth:`~tipline.services.database.Database.with_async_commit`). A submit, an upload or
a fileinfo then commits without waiting for the disk, as the upload's encrypted file is
written without a sync; ``/finish`` syncs the report's files and commits durably, which
flushes every earlier commit with it, so a finished report is on disk whole. A crash
before the finish can lose an unfinished report's last steps, never half of one.
Refusals, failed logins and retractions commit durably.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

from sqlalchemy import Table, bindparam, insert, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import AuthError, InputError, TiplineError
from tipline.services import audit, jobs, vault
from tipline.services.clearinghouse import providers
from tipline.services.clearinghouse.answers import Code, IspwsAnswer, refused
from tipline.services.clearinghouse.hashpool import HashPool
from tipline.services.clearinghouse.providers import Caller, ProviderInfo
from tipline.services.clearinghouse.triage import TRIAGE_JOB_KIND
from tipline.services.reports.builder import (
    ReportSchemaError,
    parse_untrusted,
    schema_bytes,
    validate_tree,
)
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.limits import MediaLimits
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.db import commit_durably, transaction
from tipline.store.vault import EvidenceItemRow

#: signals computed on every uploaded file (digests always; PDQ for photos, vPDQ for videos)
INTAKE_SIGNALS = ("pdq", "md5", "sha1", "sha256", "vpdq")


def intake_hash_options(decode: DecodeMode = DecodeMode.FAST) -> HashOptions:
    """What the intake computes of every uploaded file, photos decoded in ``decode``."""
    return HashOptions(signals=INTAKE_SIGNALS, decode=decode)


#: the intake's hashing by default (``TIPLINE_INTAKE_DECODE=fast``)
INTAKE_HASH_OPTIONS = intake_hash_options()


def pdq_decode(signal: Mapping[str, Any]) -> str:
    """The decode a stored PDQ signal of a file was computed with (``"fast"`` or
    ``"exact"``); files taken in before the intake recorded it used the reference one."""
    return str(signal.get("decode", DecodeMode.EXACT.value))


TARGET_REPORT = "intake_report"
TARGET_FILE = "intake_file"

OPEN, FINISHED, RETRACTED = "open", "finished", "retracted"


def triage_job_key(report_id: int) -> str:
    """Idempotency key of the triage job of ``report_id``."""
    return f"{TRIAGE_JOB_KIND}:{report_id}"


class IntakeAuthError(AuthError):
    """Missing or wrong HTTP Basic credentials (answered 401 with an empty body)."""

    code = "intake-auth"


@dataclass
class Intake:
    """What the intake needs: database, vault, limits (bytes) and a clock."""

    sessions: sessionmaker[Session]
    vault: vault.Vault
    #: largest ``<report>`` / ``<fileDetails>`` document accepted, bytes
    max_xml_bytes: int = 4 * 1024**2
    #: largest uploaded file accepted, bytes
    max_file_bytes: int = 48 * 1024**2
    limits: MediaLimits = field(default_factory=MediaLimits)
    clock: Callable[[], datetime] = utcnow
    #: called with the report id after a finish commits (the serving process triages
    #: the report at once); the triage job queued with the finish is then due
    #: ``triage_grace_seconds`` later and only does the work if this did not
    on_finish: Callable[[int], None] | None = None
    #: seconds, see ``on_finish``
    triage_grace_seconds: float = 30.0
    #: hashes uploaded files in worker processes (None: in the calling thread)
    hash_pool: HashPool | None = None
    #: what is computed of every uploaded file (:func:`intake_hash_options`)
    hash_options: HashOptions = INTAKE_HASH_OPTIONS
    #: credentials verified by this intake (each call still checks the account's row)
    credentials: providers.Credentials = field(default_factory=providers.Credentials)


class _Refused(Exception):
    """Abort a transaction with this answer (nothing of it is kept)."""

    def __init__(self, answer: IspwsAnswer) -> None:
        super().__init__(answer.description)
        self.answer = answer


# The statements of the calls, built once (Core, bound parameters): every call of the
# intake runs some of them, and building SQL expressions per call cost more CPU than
# sending them.
_REPORTS = cast(Table, IntakeReportRow.__table__)
_FILES = cast(Table, IntakeFileRow.__table__)
_ITEMS = cast(Table, EvidenceItemRow.__table__)
#: a report's owner and status, and whether the caller's account is still valid
_READ_REPORT = select(_REPORTS.c.provider_id, _REPORTS.c.status, providers.STILL_VALID).where(
    _REPORTS.c.id == bindparam("report_id")
)
_CHECK_CALLER = select(providers.STILL_VALID)
_OPENED = ("provider_id", "status", "xml", "xml_sha256", "incident_type", "created_at")
#: a new open report, inserted only while the caller's account is valid; its id
_OPEN_REPORT = (
    insert(_REPORTS)
    .from_select(
        list(_OPENED),
        select(*(bindparam(f"new_{name}", type_=_REPORTS.c[name].type) for name in _OPENED)).where(
            providers.STILL_VALID
        ),
    )
    .returning(_REPORTS.c.id)
)
#: the caller's report ``the_report`` is open (its row locked until commit)
_OPEN_AND_THEIRS = (
    select(_REPORTS.c.id)
    .where(
        _REPORTS.c.id == bindparam("the_report"),
        _REPORTS.c.provider_id == bindparam("the_provider"),
        _REPORTS.c.status == OPEN,
    )
    .with_for_update(read=True)
    .exists()
)
_DESCRIBE_FILE = (
    update(_FILES)
    .where(
        _FILES.c.id == bindparam("the_file"),
        _FILES.c.report_id == bindparam("the_report"),
        _OPEN_AND_THEIRS,
        providers.STILL_VALID,
    )
    .values(details_xml=bindparam("new_details"), described_at=bindparam("new_described_at"))
)
#: PostgreSQL: :data:`_DESCRIBE_FILE` and, when it describes the file, the call's audit
#: record (:func:`.audit.pg_append_call`) in one statement; a row when both were done
_DESCRIBED = _DESCRIBE_FILE.returning(_FILES.c.id).cte("described")
_APPENDED = audit.pg_append_call(_DESCRIBED.c.id)
_DESCRIBE_FILE_AUDITED = select(_APPENDED.c.out_seq).select_from(_DESCRIBED).join(_APPENDED, true())
_ADDED = (
    "id",
    "report_id",
    "file_name",
    "size",
    "md5",
    "sha1",
    "sha256",
    "media",
    "signals",
    "hash_error",
    "vault_id",
    "uploaded_at",
)
#: a new file of the caller's open report (while the caller's account is valid)
_ADD_FILE = (
    insert(_FILES)
    .from_select(
        list(_ADDED),
        select(*(bindparam(f"new_{name}", type_=_FILES.c[name].type) for name in _ADDED)).where(
            _OPEN_AND_THEIRS, providers.STILL_VALID
        ),
    )
    .returning(_FILES.c.id)
)
#: PostgreSQL: :data:`_ADD_FILE` and, when it adds the file, its vault item (parameters
#: ``item_<column>``) in one statement; the item's id when both were added
_ADD_FILE_AND_ITEM = (
    insert(_ITEMS)
    .from_select(
        list(vault.ITEM_COLUMNS),
        select(
            *(bindparam(f"item_{name}", type_=_ITEMS.c[name].type) for name in vault.ITEM_COLUMNS)
        ).select_from(_ADD_FILE.cte("added_file")),
    )
    .returning(_ITEMS.c.id)
)
#: finish or retract: the caller's open report gets its new status and times
_CLOSE_REPORT = (
    update(_REPORTS)
    .where(
        _REPORTS.c.id == bindparam("the_report"),
        _REPORTS.c.provider_id == bindparam("the_provider"),
        _REPORTS.c.status == OPEN,
        providers.STILL_VALID,
    )
    .values(
        status=bindparam("new_status"),
        finished_at=bindparam("new_finished_at"),
        retracted_at=bindparam("new_retracted_at"),
    )
)

_ADD_ITEM = insert(_ITEMS)
#: the files of report ``the_report`` in upload order: file id, vault item id, blob size
_REPORT_FILES = (
    select(_FILES.c.id, _ITEMS.c.id, _ITEMS.c.blob_size)
    .join(_ITEMS, _ITEMS.c.id == _FILES.c.vault_id)
    .where(_FILES.c.report_id == bindparam("the_report"))
    .order_by(_FILES.c.uploaded_at, _FILES.c.id)
)


def _actor(provider: ProviderInfo) -> str:
    return f"provider:{provider.name}"


def _credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        text = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = text.partition(":")
    return (name, password) if sep else None


def _login_failed(intake: Intake, name: str | None) -> IntakeAuthError:
    with transaction(intake.sessions) as session:
        commit_durably(session)
        audit.append(
            session,
            actor="intake",
            action="intake.login_failed",
            details={"user": name[:64] if name else None},
        )
    return IntakeAuthError("authentication required")


def _caller(intake: Intake, authorization: str | None) -> Caller:
    """The caller the ``Authorization`` header names: remembered (no database read;
    each operation checks :func:`.providers.still_valid` in its own statement) or read
    and verified now; :class:`IntakeAuthError` (audited as ``intake.login_failed``, with
    the user name only) otherwise."""
    creds = _credentials(authorization)
    if creds is None:
        raise _login_failed(intake, None)
    found = intake.credentials.get(*creds)
    if found is not None:
        return found
    with intake.sessions() as session:
        found = providers.login(session, *creds, intake.credentials)
    if found is None:
        raise _login_failed(intake, creds[0])
    return found


def authenticate(intake: Intake, authorization: str | None) -> ProviderInfo:
    """The enabled provider the ``Authorization`` header names, checked against its
    account now; :class:`IntakeAuthError` (audited as ``intake.login_failed``) otherwise."""
    caller = _caller(intake, authorization)
    with intake.sessions() as session:
        ok = providers.confirm(session, caller)
    if not ok:
        intake.credentials.forget(caller.provider.id)
        raise _login_failed(intake, caller.provider.name)
    return caller.provider


class _Disabled(Exception):
    """The caller's account was disabled (or its password changed) since it was
    remembered: roll back, answer 401."""


def _refuse(
    intake: Intake, provider: ProviderInfo, operation: str, answer: IspwsAnswer
) -> IspwsAnswer:
    with transaction(intake.sessions) as session:
        commit_durably(session)
        audit.append(
            session,
            actor=_actor(provider),
            action="intake.refused",
            target=(TARGET_REPORT, str(answer.report_id)) if answer.report_id else None,
            details={
                "operation": operation,
                "code": int(answer.code),
                "reason": answer.description[:500],
            },
        )
    return answer


def status(intake: Intake, authorization: str | None) -> IspwsAnswer:
    """``GET /status``: the service is up and the account is accepted."""
    authenticate(intake, authorization)
    return IspwsAnswer(Code.SUCCESS, "Server is up")


def schema(intake: Intake, authorization: str | None) -> bytes:
    """``GET /xsd``: the schema in force."""
    authenticate(intake, authorization)
    return schema_bytes()


def _document(intake: Intake, body: bytes, root_tag: str) -> Any:
    """Parse and validate an untrusted document; :class:`_Refused` with 4000/4110/4100."""
    if len(body) > intake.max_xml_bytes:
        raise _Refused(refused(Code.INVALID_REQUEST, f"document over {intake.max_xml_bytes} bytes"))
    try:
        root = parse_untrusted(body, max_bytes=intake.max_xml_bytes)
    except InputError as exc:
        raise _Refused(refused(Code.MALFORMED_XML, str(exc))) from None
    if root.tag != root_tag:
        raise _Refused(
            refused(Code.VALIDATION_FAILED, f"expected <{root_tag}>, got a different root")
        )
    try:
        validate_tree(root)
    except ReportSchemaError as exc:
        raise _Refused(refused(Code.VALIDATION_FAILED, str(exc))) from None
    return root


def submit(intake: Intake, authorization: str | None, body: bytes) -> IspwsAnswer:
    """``POST /submit``: validate the ``<report>`` and open it; answers its ``reportId``."""
    caller = _caller(intake, authorization)
    provider = caller.provider
    try:
        root = _document(intake, body, "report")
    except _Refused as exc:
        return _refuse(intake, provider, "submit", exc.answer)
    incident = root.findtext("incidentSummary/incidentType")
    xml_sha256 = hashlib.sha256(body).hexdigest()
    try:
        with transaction(intake.sessions) as session:
            # one statement: the account check and the insert (no row: not valid now)
            report_id = session.connection().scalar(
                _OPEN_REPORT,
                {
                    "new_provider_id": provider.id,
                    "new_status": OPEN,
                    "new_xml": body.decode("utf-8", "replace"),
                    "new_xml_sha256": xml_sha256,
                    "new_incident_type": (incident or "")[:128] or None,
                    "new_created_at": intake.clock(),
                    **providers.valid_params(caller),
                },
            )
            if report_id is None:
                raise _Disabled
            report_id = int(report_id)
            audit.append(
                session,
                actor=_actor(provider),
                action="intake.submit",
                target=(TARGET_REPORT, str(report_id)),
                details={"sha256": xml_sha256, "bytes": len(body), "incident_type": incident},
            )
    except _Disabled:
        intake.credentials.forget(provider.id)
        raise _login_failed(intake, provider.name) from None
    return IspwsAnswer(Code.SUCCESS, "Success", report_id=report_id)


@dataclass(frozen=True, slots=True)
class _OpenReport:
    """What an operation needs of the open report it acts on."""

    id: int
    provider_id: str


def _report_number(raw_id: str | None) -> int | None:
    """The report id a request names (None when it is not one: no report has it)."""
    try:
        number = int((raw_id or "").strip())
    except ValueError:
        return None
    return number if -(2**63) <= number < 2**63 else None


def _open_report(session: Session, caller: Caller, raw_id: str | None) -> _OpenReport:
    """The caller's open report ``raw_id``, read with the check that the caller's
    account is still valid (:class:`_Disabled` otherwise); :class:`_Refused`
    (5001/5101/5102) when it is not open. Another provider's report is answered as not
    existing.

    Only read to say why a call's own statement (which carries these checks and locks
    the report) changed nothing: one statement reading three columns."""
    report_id = _report_number(raw_id)
    connection = session.connection()
    params = providers.valid_params(caller)
    found = None
    if report_id is not None:
        found = connection.execute(_READ_REPORT, {"report_id": report_id, **params}).first()
        if found is not None and not found[2]:
            raise _Disabled
    if found is None and not connection.scalar(_CHECK_CALLER, params):
        raise _Disabled
    if found is None or report_id is None or found[0] != caller.provider.id:
        raise _Refused(refused(Code.REPORT_NOT_FOUND, "report does not exist"))
    if found[1] == RETRACTED:
        raise _Refused(refused(Code.REPORT_RETRACTED, "report already retracted", report_id))
    if found[1] == FINISHED:
        raise _Refused(refused(Code.REPORT_FINISHED, "report already finished", report_id))
    return _OpenReport(report_id, str(found[0]))


def _close(session: Session, caller: Caller, raw_id: str | None, values: dict[str, Any]) -> int:
    """Close the caller's open report ``raw_id`` (``values``: its new status and time)
    in one statement, which also checks the caller's account; when it changed nothing,
    raise what :func:`_open_report` says is wrong. The report's id."""
    number = _report_number(raw_id)
    if number is not None:
        closed = session.connection().execute(
            _CLOSE_REPORT,
            {
                "the_report": number,
                "the_provider": caller.provider.id,
                **values,
                **providers.valid_params(caller),
            },
        )
        if closed.rowcount == 1:
            return number
    report = _open_report(session, caller, raw_id)  # raises why not
    raise _Refused(refused(Code.REPORT_NOT_FOUND, "report is not open", report.id))


def _read_limited(stream: BinaryIO, limit: int) -> bytes | None:
    """All of ``stream`` when it holds at most ``limit`` bytes, else None."""
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def upload(
    intake: Intake,
    authorization: str | None,
    report_id: str | None,
    file_name: str | None,
    stream: BinaryIO | None,
) -> IspwsAnswer:
    """``POST /upload``: attach a file to an open report; answers ``fileId`` and the MD5
    of the bytes received. The file is hashed and kept encrypted in the vault.

    One transaction, after the file is hashed: the report (and the caller's account)
    is checked and locked, and the file registered; a refused upload stores nothing."""
    caller = _caller(intake, authorization)
    try:
        if stream is None:
            raise _Refused(refused(Code.INVALID_REQUEST, "multipart field 'file' is missing"))
        data = _read_limited(stream, intake.max_file_bytes)
        if data is None:
            raise _Refused(
                refused(
                    Code.INVALID_REQUEST,
                    f"file over the limit of {intake.max_file_bytes} bytes",
                )
            )
        if not data:
            raise _Refused(refused(Code.MALFORMED_FILE, "empty file (0 bytes)"))
        return _store_file(intake, caller, report_id, file_name or "upload", data)
    except _Refused as exc:
        return _refuse(intake, caller.provider, "upload", exc.answer)
    except _Disabled:
        intake.credentials.forget(caller.provider.id)
        raise _login_failed(intake, caller.provider.name) from None


def _signals(
    intake: Intake, data: bytes, name: str
) -> tuple[str | None, list[dict[str, Any]], str | None, dict[str, str]]:
    """Media kind, signals, hashing error and the digests the hashing computed."""
    if intake.hash_pool is not None:
        result = intake.hash_pool.hash(data, name, intake.hash_options, intake.limits)
    else:
        result = hash_bytes(data, name, intake.hash_options, limits=intake.limits)
    digests = {s.type: s.value for s in result.signals if s.type in _DIGESTS and not s.variant}
    if result.error is not None:
        return None, [], str(result.error)[:2000], digests
    decode = intake.hash_options.decode.value
    signals = [
        {"type": s.type, "value": s.value, "quality": s.quality, "variant": s.variant}
        | ({"decode": decode} if s.type == "pdq" else {})
        for s in result.signals
    ]
    return result.media, signals, None, digests


_DIGESTS = ("md5", "sha1", "sha256")


def _store_file(
    intake: Intake, caller: Caller, raw_id: str | None, name: str, data: bytes
) -> IspwsAnswer:
    provider = caller.provider
    media, signals, hash_error, digests = _signals(intake, data, name)
    # the file's digests: as the hashing computed them (of these bytes), else now
    md5, sha1, sha256 = (
        digests.get(kind) or hashlib.new(kind, data).hexdigest() for kind in _DIGESTS
    )
    file_id = uuid.uuid4().hex
    clean_name = name if len(name) <= 256 and name.isprintable() else None
    try:
        with transaction(intake.sessions) as session:
            # encrypted before the report is read: on SQLite a read snapshot held
            # across the write would be refused if another upload commits meanwhile. The
            # file is synced to disk when its report is finished (:func:`finish`); a
            # refusal or rollback deletes it
            sealed = vault.seal(session, intake.vault, data, sync=False)
            # one statement: the file row, inserted only while the report is open and
            # the caller's (held FOR SHARE until commit: a finish waits for this upload)
            # and the caller's account valid; else read why not (nothing is kept)
            report_id = _report_number(raw_id)
            item = vault.new_item(
                intake.vault,
                sealed,
                kind=vault.EvidenceKind.MEDIA,
                actor=_actor(provider),
                filename=clean_name,
                content_id=f"intake-file:{file_id}",
                meta={"intake_report_id": report_id, "intake_file_id": file_id},
            )
            connection = session.connection()
            added = None
            if report_id is not None:
                params = {
                    "the_report": report_id,
                    "the_provider": provider.id,
                    "new_id": file_id,
                    "new_report_id": report_id,
                    "new_file_name": name[:4096],
                    "new_size": len(data),
                    "new_md5": md5,
                    "new_sha1": sha1,
                    "new_sha256": sha256,
                    "new_media": media,
                    "new_signals": signals,
                    "new_hash_error": hash_error,
                    "new_vault_id": sealed.item_id,
                    "new_uploaded_at": intake.clock(),
                    **providers.valid_params(caller),
                }
                if connection.dialect.name == "postgresql":
                    # the item row rides in the file row's statement (no trip of its own)
                    params.update({f"item_{column}": value for column, value in item.row.items()})
                    added = connection.scalar(_ADD_FILE_AND_ITEM, params)
                else:  # SQLite has no INSERT inside WITH: the item row after the file's
                    added = connection.scalar(_ADD_FILE, params)
                    if added is not None:
                        connection.execute(_ADD_ITEM, item.row)
            if added is None or report_id is None:
                report = _open_report(session, caller, raw_id)  # raises why
                raise _Refused(refused(Code.REPORT_NOT_FOUND, "report is not open", report.id))
            audit.defer_pending(session, item.record)
            audit.defer(
                session,
                actor=_actor(provider),
                action="intake.upload",
                target=(TARGET_FILE, file_id),
                details={
                    "report_id": report_id,
                    "size": len(data),
                    "md5": md5,
                    "sha256": sha256,
                    "vault_id": sealed.item_id,
                    "signals": sorted({s["type"] for s in signals}),
                },
            )
    except TiplineError as exc:  # vault without a key, disk full...
        raise _Refused(refused(Code.SAVE_FAILED, f"file not saved: {exc}")) from None
    return IspwsAnswer(Code.SUCCESS, "Success", report_id=report_id, file_id=file_id, md5=md5)


def fileinfo(intake: Intake, authorization: str | None, body: bytes) -> IspwsAnswer:
    """``POST /fileinfo``: record the ``<fileDetails>`` of a file of an open report."""
    caller = _caller(intake, authorization)
    provider = caller.provider
    try:
        root = _document(intake, body, "fileDetails")
        file_id = (root.findtext("fileId") or "").strip()
        raw_id = root.findtext("reportId")
        number = _report_number(raw_id)
        with transaction(intake.sessions) as session:
            # one statement: the report open and the caller's (its row locked against a
            # finish or retract until this commits), the account valid, the file its
            record = audit.pending(
                actor=_actor(provider),
                action="intake.fileinfo",
                target=(TARGET_FILE, file_id),
                details={"report_id": number, "sha256": hashlib.sha256(body).hexdigest()},
            )
            connection = session.connection()
            one_trip = audit.pg_one_trip(connection)
            described = 0
            if number is not None:
                params = {
                    "the_file": file_id,
                    "the_report": number,
                    "the_provider": provider.id,
                    "new_details": body.decode("utf-8", "replace"),
                    "new_described_at": intake.clock(),
                    **providers.valid_params(caller),
                }
                if one_trip:  # the audit record rides in the update's statement
                    params.update(audit.pg_append_params(record, utcnow()))
                    described = len(connection.execute(_DESCRIBE_FILE_AUDITED, params).all())
                else:
                    described = connection.execute(_DESCRIBE_FILE, params).rowcount
            if described != 1:  # which refusal: read the report (or the account)
                report = _open_report(session, caller, raw_id)
                raise _Refused(refused(Code.FILE_NOT_FOUND, "file does not exist", report.id))
            report_id = number
            if not one_trip:
                audit.append_many(session, [record])
    except _Refused as exc:
        return _refuse(intake, provider, "fileinfo", exc.answer)
    except _Disabled:
        intake.credentials.forget(provider.id)
        raise _login_failed(intake, provider.name) from None
    return IspwsAnswer(Code.SUCCESS, "Success", report_id=report_id)


def finish(intake: Intake, authorization: str | None, report_id: str | None) -> IspwsAnswer:
    """``POST /finish``: close an open report; answers every file attached to it.

    Every file of the report is synced to disk (uploads write their encrypted files
    without waiting for the disk) before the finish commits: a finished report's files
    are durable. The report's de-duplication and triage job is queued in the same
    transaction, so a finished report is always triaged, even if this process dies
    right after."""
    caller = _caller(intake, authorization)
    provider = caller.provider
    try:
        with transaction(intake.sessions) as session:
            # the report's submit, uploads and fileinfos may have committed without
            # waiting for the disk (an async-commit engine): this commit waits, and so
            # makes them durable with it
            commit_durably(session)
            finished_at = intake.clock()
            number = _close(
                session,
                caller,
                report_id,
                {"new_status": FINISHED, "new_finished_at": finished_at, "new_retracted_at": None},
            )
            report = _OpenReport(number, provider.id)
            grace = intake.triage_grace_seconds if intake.on_finish is not None else 0.0
            jobs.enqueue(
                session,
                TRIAGE_JOB_KIND,
                {"report_id": int(report.id)},
                idempotency_key=triage_job_key(int(report.id)),
                run_at=finished_at + timedelta(seconds=grace),
            )
            rows = session.connection().execute(_REPORT_FILES, {"the_report": report.id}).all()
            files = tuple(str(file_id) for file_id, _, _ in rows)
            try:
                vault.sync_files(intake.vault, [(str(v), int(n)) for _, v, n in rows])
            except TiplineError as exc:  # a file lost before it reached the disk
                raise _Refused(
                    refused(Code.SAVE_FAILED, f"report not finished: {exc}", int(report.id))
                ) from None
            audit.defer(
                session,
                actor=_actor(provider),
                action="intake.finish",
                target=(TARGET_REPORT, str(number)),
                details={"files": list(files)},
            )
    except _Refused as exc:
        return _refuse(intake, provider, "finish", exc.answer)
    except _Disabled:
        intake.credentials.forget(provider.id)
        raise _login_failed(intake, provider.name) from None
    if intake.on_finish is not None:
        intake.on_finish(number)
    return IspwsAnswer(Code.SUCCESS, "Success", report_id=number, files=files)


def retract(intake: Intake, authorization: str | None, report_id: str | None) -> IspwsAnswer:
    """``POST /retract``: withdraw an open report (a finished one cannot be)."""
    caller = _caller(intake, authorization)
    provider = caller.provider
    try:
        with transaction(intake.sessions) as session:
            commit_durably(session)
            number = _close(
                session,
                caller,
                report_id,
                {
                    "new_status": RETRACTED,
                    "new_finished_at": None,
                    "new_retracted_at": intake.clock(),
                },
            )
            audit.defer(
                session,
                actor=_actor(provider),
                action="intake.retract",
                target=(TARGET_REPORT, str(number)),
            )
    except _Refused as exc:
        return _refuse(intake, provider, "retract", exc.answer)
    except _Disabled:
        intake.credentials.forget(provider.id)
        raise _login_failed(intake, provider.name) from None
    return IspwsAnswer(Code.SUCCESS, "Success", report_id=number)
