"""Ledger failures, with the error codes of the public API (API.md, "Errors")."""

from __future__ import annotations

from server.errors import DomainError, ErrorCode

INVALID_INPUT = ErrorCode.INVALID_INPUT
NOT_FOUND = ErrorCode.NOT_FOUND
INSUFFICIENT_FUNDS = ErrorCode.INSUFFICIENT_FUNDS
IDEMPOTENCY_CONFLICT = ErrorCode.IDEMPOTENCY_CONFLICT
ALREADY_DONE = ErrorCode.ALREADY_DONE
CONFLICT = ErrorCode.CONFLICT


class LedgerError(DomainError):
    """An expected domain failure (a ``DomainError``, so the GraphQL layer returns it as a
    ``UserError``). When a ledger operation raises it, the ledger has written nothing, and
    (unless ``aborted``) the caller's transaction is still usable."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        field: str | None = None,
        *,
        aborted: bool = False,
    ) -> None:
        super().__init__(code, message, field)
        self.aborted = aborted  # the database transaction failed and must be rolled back

    def __repr__(self) -> str:
        return f"LedgerError({self.code.value}, {self.message!r}, field={self.field!r})"


# Status words returned by the SQL functions (migration 0002) -> (code, message, field).
_STATUS: dict[str, tuple[ErrorCode, str, str | None]] = {
    "invalid_amount": (INVALID_INPUT, "amount must be between 1 and 1,000,000,000", "amount"),
    "unknown_currency": (INVALID_INPUT, "unknown currency", "currency"),
    "not_spendable": (INVALID_INPUT, "this currency cannot be spent or transferred", "currency"),
    "currency_never_expires": (INVALID_INPUT, "this currency never expires", "expiresAt"),
    "expiry_in_past": (INVALID_INPUT, "expiresAt must be in the future", "expiresAt"),
    "same_account": (INVALID_INPUT, "cannot transfer to the same member", "toMemberId"),
    "not_found": (NOT_FOUND, "no such member", "memberId"),
    "receiver_not_found": (NOT_FOUND, "no such receiving member", "toMemberId"),
    "insufficient_funds": (INSUFFICIENT_FUNDS, "not enough available balance", "amount"),
    "idempotency_conflict": (
        IDEMPOTENCY_CONFLICT,
        "this idempotency key was already used with different input",
        "idempotencyKey",
    ),
    "already_reversed": (ALREADY_DONE, "this transaction was already reversed", "transactionId"),
    "not_reversible": (
        CONFLICT,
        "this kind of transaction cannot be reversed (reversals, expiries, pending credits,"
        " vests and voids)",
        "transactionId",
    ),
    "already_settled": (ALREADY_DONE, "this pending credit was already settled", "transactionId"),
    "transaction_not_found": (NOT_FOUND, "no such transaction", "transactionId"),
}


def error_for_status(status: str, *, not_found_field: str | None = None) -> LedgerError:
    code, message, field = _STATUS.get(status, (CONFLICT, f"ledger refused: {status}", None))
    if status == "not_found" and not_found_field is not None:
        return LedgerError(NOT_FOUND, f"no such {not_found_field}", not_found_field)
    return LedgerError(code, message, field)
