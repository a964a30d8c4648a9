"""Dispatch of client requests (SQL batch, RPC, transaction manager) to their token-stream answers."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from sqlserver_sim import flavours, rpc
from sqlserver_sim.collection import compile_error, run_collection
from sqlserver_sim.engine import SimulatedInstance
from sqlserver_sim.packets import RPC, SQL_BATCH, TRANSACTION_MANAGER, Message, ProtocolError
from sqlserver_sim.rpc import TransactionRequest
from sqlserver_sim.statements import (
    SessionState,
    Step,
    answer_statement,
    error_step,
    split_statements,
)
from sqlserver_sim.tokens import (
    CMD_EXECUTE,
    DONE,
    DONE_ERROR,
    DONE_MORE,
    DONEINPROC,
    DONEPROC,
    ENV_BEGIN_TRAN,
    ENV_COMMIT_TRAN,
    ENV_ROLLBACK_TRAN,
    done,
    envchange_bytes,
    returnstatus,
    returnvalue_int,
)
from supervisor.procedures.resultsets import ADHOC_BATCH_MARKER, PROCEDURE_NAME, PROCEDURE_SCHEMA

_DEPLOY = re.compile(
    r"create\s+(?:or\s+alter\s+)?proc(?:edure)?\s+\[?" + PROCEDURE_SCHEMA + r"\]?\s*\.\s*\[?" + PROCEDURE_NAME
    + r"\]?(?![\w])", re.IGNORECASE)
_NAME_PART = r"(?:\[[^\]]+\]|[\w#$]+)"
_EXEC = re.compile(r"^\s*exec(?:ute)?\s+(?:@\w+\s*=\s*)?(?P<name>" + _NAME_PART + r"(?:\s*\.\s*" + _NAME_PART
                   + r"?)*)(?P<args>.*)$", re.IGNORECASE | re.DOTALL)
COLLECTION_PROCEDURE = f"{PROCEDURE_SCHEMA}.{PROCEDURE_NAME}".lower()
_DONE_SIZE = len(done())
_STATEMENT_PROCEDURES = {"sp_executesql", "sp_prepexec", "sp_prepare", "sp_execute", "sp_unprepare",
                         "sp_prepexecrpc"}


@dataclass
class ProcedureResult:
    steps: list[Step]
    return_values: bytes = b""
    collection: bool = False
    #: The procedure did not run (missing, permission denied): errors and DONEPROC only.
    aborted: bool = False


@dataclass
class Response:
    payload: bytes
    #: The answer to the collection procedure or batch: the query faults apply to it.
    collection: bool = False
    #: Where the collection's first result set (with the DONE / DONEINPROC after it) ends; 0: none.
    first_set_end: int = 0


def procedure_key(name: str) -> str:
    """'[master].[collector].[usp_collect_snapshot]' -> 'collector.usp_collect_snapshot'."""
    parts = [p.strip().strip("[]").lower() for p in name.split(".")]
    parts = [p for p in parts if p] or [""]
    if parts[-1].startswith("sp_") and len(parts) <= 3:
        return parts[-1]
    return ".".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


def display_name(name: str) -> str:
    return ".".join(p.strip().strip("[]") for p in name.split("."))


class RequestHandler:
    """Answers the requests of one session against one simulated instance."""

    def __init__(self, instance: SimulatedInstance, session: SessionState) -> None:
        self.instance = instance
        self.session = session
        self._first_set = b""

    def handle(self, message: Message) -> Response:
        self._first_set = b""
        response = self._dispatch(message)
        if response.collection and self._first_set:
            start = response.payload.find(self._first_set)
            if start >= 0:
                response.first_set_end = start + len(self._first_set) + _DONE_SIZE
        return response

    def _dispatch(self, message: Message) -> Response:
        self.session.spec = self.instance.spec
        if message.type == SQL_BATCH:
            return self.batch(rpc.batch_text(message.payload))
        if message.type == RPC:
            return self.rpc(rpc.parse_rpc(message.payload))
        if message.type == TRANSACTION_MANAGER:
            return Response(self.transaction(rpc.parse_transaction_request(message.payload)))
        raise ProtocolError(f"unexpected message type 0x{message.type:02X}")

    # SQL batches

    def batch(self, text: str) -> Response:
        if ADHOC_BATCH_MARKER in text:
            return Response(self._finish_batch(self._collection_steps(text, procedure="")), collection=True)
        deploy = _DEPLOY.search(text)
        if deploy:
            return Response(self._finish_batch([self._deploy(text[deploy.end():])]))
        if "create schema" in text.lower():
            denied = flavours.create_denied(self.instance.spec, "SCHEMA", self.session.database)
            if denied is not None:
                return Response(self._finish_batch([denied]))
        statements = split_statements(text) or [""]
        out = bytearray()
        collection = False
        for index, statement in enumerate(statements):
            more = index < len(statements) - 1
            exec_call = _EXEC.match(statement)
            if exec_call:
                result = self._procedure(exec_call.group("name"), [])
                collection = collection or result.collection
                out += self._finish_procedure(result, more=more)
            else:
                step = answer_statement(statement, self.session) if statement else Step()
                out += self._finish_batch([step], more=more)
        return Response(bytes(out), collection)

    def _finish_batch(self, steps: list[Step], *, more: bool = False) -> bytes:
        out = bytearray()
        for index, step in enumerate(steps):
            flag = DONE_MORE if more or index < len(steps) - 1 else 0
            out += step.tokens + done(step.status | flag, step.cur_cmd, step.row_count, DONE)
        return bytes(out)

    # Procedures (by RPC or EXEC)

    def rpc(self, calls: list[rpc.RpcCall]) -> Response:
        out = bytearray()
        collection = False
        for index, call in enumerate(calls):
            result = self._procedure(call.name, call.params)
            out += self._finish_procedure(result, more=index < len(calls) - 1)
            collection = collection or result.collection
        return Response(bytes(out), collection)

    def _procedure(self, name: str, params: list[tuple[str, object]]) -> ProcedureResult:
        key = procedure_key(name)
        if key == COLLECTION_PROCEDURE:
            if not self.instance.procedure_installed:
                return ProcedureResult([_missing_procedure(name)], collection=True, aborted=True)
            steps = self._collection_steps(self.instance.procedure_text(), procedure=PROCEDURE_NAME)
            aborted = bool(steps) and all(step.status & DONE_ERROR for step in steps)
            return ProcedureResult(steps, collection=True, aborted=aborted)
        if key in _STATEMENT_PROCEDURES:
            return self._statement_procedure(key, params)
        return ProcedureResult([_missing_procedure(name)], aborted=True)

    def _finish_procedure(self, result: ProcedureResult, *, more: bool) -> bytes:
        more_flag = DONE_MORE if more else 0
        if result.aborted:
            tokens = b"".join(step.tokens for step in result.steps)
            return tokens + done(DONE_ERROR | more_flag, CMD_EXECUTE, 0, DONEPROC)
        out = bytearray()
        for step in result.steps:
            out += step.tokens + done(step.status | DONE_MORE, step.cur_cmd, step.row_count, DONEINPROC)
        out += returnstatus(0) + result.return_values
        out += done(more_flag, CMD_EXECUTE, 0, DONEPROC)
        return bytes(out)

    def _statement_procedure(self, key: str, params: list[tuple[str, object]]) -> ProcedureResult:
        values = [value for _name, value in params]
        variables = {name.lower(): value for name, value in params if name}
        session = self.session
        if key == "sp_executesql":
            text = str(values[0]) if values else ""
            return self._run_text(text, variables, values[2:])
        if key in ("sp_prepexec", "sp_prepare"):
            handle = self._new_handle()
            text = str(values[2]) if len(values) > 2 else ""
            session.prepared[handle] = text
            result = self._run_text(text, variables, values[3:]) if key == "sp_prepexec" else ProcedureResult([])
            result.return_values = returnvalue_int(0, params[0][0], handle)
            return result
        if key == "sp_execute":
            handle = values[0] if values and isinstance(values[0], int) else -1
            if handle not in session.prepared:
                return ProcedureResult([error_step(8179, f"Could not find prepared statement with handle {handle}.")])
            return self._run_text(session.prepared[handle], variables, values[1:])
        if key == "sp_prepexecrpc":
            handle = self._new_handle()
            inner = str(values[1]) if len(values) > 1 else ""
            result = self._procedure(inner, params[2:])
            result.return_values = returnvalue_int(0, params[0][0], handle)
            return result
        if key == "sp_unprepare" and values and isinstance(values[0], int):
            session.prepared.pop(values[0], None)
        return ProcedureResult([])

    def _new_handle(self) -> int:
        handle = self.session.next_handle
        self.session.next_handle += 1
        return handle

    def _run_text(self, text: str, variables: dict[str, object], positional: list[object]) -> ProcedureResult:
        names = dict.fromkeys(n.lower() for n in re.findall(r"@P\d+", text, re.IGNORECASE))
        for index, name in enumerate(names):
            if name not in variables and index < len(positional):
                variables[name] = positional[index]
        if ADHOC_BATCH_MARKER in text:
            return ProcedureResult(self._collection_steps(text, procedure=""), collection=True)
        result = ProcedureResult([])
        for statement in split_statements(text):
            exec_call = _EXEC.match(statement)
            if exec_call:
                inner = self._procedure(exec_call.group("name"), [])
                result.steps.extend(inner.steps)
                result.collection = result.collection or inner.collection
            else:
                result.steps.append(answer_statement(statement, self.session, variables))
        return result

    # The collection procedure / batch

    def _collection_steps(self, text: str, procedure: str) -> list[Step]:
        """The collection T-SQL run as this server's flavour runs it (``collection.py``)."""
        steps = run_collection(text, self.instance, self.session, procedure)
        first = next((step for step in steps if step.row_count or step.cur_cmd), None)
        if first is not None and not self._first_set:
            self._first_set = first.tokens
        return steps

    def _deploy(self, definition: str) -> Step:
        """``CREATE OR ALTER PROCEDURE collector.usp_collect_snapshot AS …``: compiled as SQL Server would (a
        column a view lacks fails it, a missing view does not: deferred name resolution), then installed."""
        denied = flavours.create_denied(self.instance.spec, "PROCEDURE", self.session.database)
        if denied is not None:
            return denied
        body = re.sub(r"^\s*AS\b", "", definition, count=1, flags=re.IGNORECASE)
        failure = compile_error(body, self.instance, PROCEDURE_NAME)
        if failure is not None:
            return failure
        self.instance.install_procedure(body)
        return Step()

    # Transaction manager

    def transaction(self, request: TransactionRequest) -> bytes:
        session = self.session
        out = bytearray()
        if request.request_type == rpc.TM_BEGIN_XACT:
            out += self._begin_transaction()
        elif request.request_type in (rpc.TM_COMMIT_XACT, rpc.TM_ROLLBACK_XACT):
            env = ENV_COMMIT_TRAN if request.request_type == rpc.TM_COMMIT_XACT else ENV_ROLLBACK_TRAN
            old = struct.pack("<Q", session.transaction)
            session.transaction = 0
            out += envchange_bytes(env, b"", old)
            if request.begin_new:
                out += self._begin_transaction()
        out += done()
        return bytes(out)

    def _begin_transaction(self) -> bytes:
        self.session.transaction = (self.session.spid << 32) + self.session.next_handle
        self.session.next_handle += 1
        return envchange_bytes(ENV_BEGIN_TRAN, struct.pack("<Q", self.session.transaction))


def _missing_procedure(name: str) -> Step:
    return error_step(2812, f"Could not find stored procedure '{display_name(name)}'.", state=62)
