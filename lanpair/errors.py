"""Every error lanpair raises on purpose; each docstring is the sentence a person reads.

    LanpairError
     ├── ConfigError                  a setting has a value that cannot be used
     ├── CertificateError             the TLS key or certificate cannot be made or read
     ├── StoreError                   the state database cannot be opened or migrated
     ├── DaemonNotRunning             a command needs the daemon and none answers
     ├── RemoteError                  the daemon answered a client with an error
     ├── PinMismatch                  the server's key is not the pinned one
     ├── Unreachable                  a client cannot reach a PC (not running, another network)
     ├── UnknownPC                    no paired PC by that name (or none at all)
     ├── TransferIncomplete           a push or pull left files for the next run
     ├── BadRequest                   a request is malformed
     │    ├── BodyTooLarge            a request body is over its limit
     │    └── BadPairingLink          a `lanpair pair` argument is not a pairing QR's link
     ├── NotPaired                    no valid device token (missing, unknown, expired, revoked)
     ├── NotOwner                     an owner-only action from somewhere else
     ├── InsufficientStorage          the library's disk is (nearly) full
     ├── OffsetMismatch               a resumable upload continues from the wrong offset
     ├── ChecksumMismatch             uploaded data does not match its checksum
     ├── NameTaken                    a rename onto a name in use
     ├── NotFound                     no such thing
     ├── WorkerError                  a background worker could not finish a job
     │    ├── WorkerTimeout           it took too long and was stopped
     │    ├── WorkerCrashed           it crashed
     │    └── WorkerPoolStopped       the pool stopped first (the daemon is stopping)
     └── PairingError                 a pairing code cannot be used
          ├── UnknownCode             the code was never issued
          │    └── UnknownHandoff     a hand-off link's token was never issued
          ├── CodeExpired             the code is past its lifetime
          │    └── HandoffExpired     a hand-off link is past its two minutes
          ├── CodeUsed                the code was already used
          │    └── HandoffUsed        a hand-off link was already followed
          └── TooManyAttempts         too many failed confirms from one address

These know nothing of HTTP: ``server/middleware.py`` maps them to statuses and
``cli.py`` to exit codes.
"""

from __future__ import annotations


class LanpairError(Exception):
    """Something went wrong in lanpair."""

    code = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.user_message())

    @classmethod
    def user_message(cls) -> str:
        """Return the class's user-facing sentence (its docstring)."""
        return " ".join((cls.__doc__ or cls.__name__).split())

    @property
    def message(self) -> str:
        """Return the sentence this error carries."""
        return str(self)


class ConfigError(LanpairError):
    """A setting has a value lanpair cannot use."""

    code = "config"


class MdnsRefused(LanpairError):
    """mDNS is forbidden in this network namespace (a test's guard); nothing was sent."""

    code = "mdns_refused"


class CertificateError(LanpairError):
    """The TLS key or certificate could not be made or read."""

    code = "certificate"


class StoreError(LanpairError):
    """The state database could not be opened or updated."""

    code = "store"


class DaemonNotRunning(LanpairError):
    """No lanpair daemon is running for this data directory; start it with `lanpair serve`."""

    code = "daemon_not_running"


class RemoteError(LanpairError):
    """The lanpair daemon refused the request."""

    code = "remote"

    def __init__(self, message: str | None = None, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.remote_code = code


class PinMismatch(LanpairError):
    """The server presented another key than the one pinned at pairing; refusing to talk to it."""

    code = "pin_mismatch"


class Unreachable(LanpairError):
    """The PC cannot be reached: is its lanpair daemon running, and is this device on its
    network?"""

    code = "unreachable"


class UnknownPC(LanpairError):
    """No paired PC goes by that name; `lanpair status` lists the paired ones."""

    code = "unknown_pc"


class TransferIncomplete(LanpairError):
    """Some files did not make it; run the same command again to continue where it stopped."""

    code = "incomplete"


class BadRequest(LanpairError):
    """The request is malformed."""

    code = "bad_request"


class BodyTooLarge(BadRequest):
    """The request body is larger than this endpoint accepts."""

    code = "too_large"


class BadPairingLink(BadRequest):
    """That is not a lanpair pairing link: give the QR code's whole text
    (https://…/pair-confirm#t=…), or a PC's name with --code."""

    code = "bad_pairing_link"


class UnsupportedMediaType(BadRequest):
    """This endpoint takes a JSON body (Content-Type: application/json)."""

    code = "unsupported_media_type"


class NotPaired(LanpairError):
    """This device is not paired (or its pairing expired or was revoked): scan a new QR code."""

    code = "not_paired"


class NotOwner(LanpairError):
    """Only the PC running lanpair may do this."""

    code = "forbidden"


class CrossOrigin(NotOwner):
    """The request came from another site's page and was refused."""

    code = "cross_origin"


class InsufficientStorage(LanpairError):
    """The PC's disk is too full to take this upload; free some space on it and try again."""

    code = "insufficient_storage"


class OffsetMismatch(LanpairError):
    """The upload continues from another offset than the server has; ask it where to resume."""

    code = "offset_mismatch"


class ChecksumMismatch(LanpairError):
    """The data arrived damaged (its checksum does not match); send it again."""

    code = "checksum_mismatch"


class NameTaken(LanpairError):
    """Another file already has that name."""

    code = "name_taken"


class NotFound(LanpairError):
    """There is nothing here."""

    code = "not_found"


class PairingError(LanpairError):
    """This pairing code cannot be used; ask the PC for a new QR code."""

    code = "pairing"


class UnknownCode(PairingError):
    """This pairing code is not valid; ask the PC for a new QR code."""

    code = "invalid_code"


class CodeExpired(PairingError):
    """This pairing code has expired; ask the PC for a new QR code."""

    code = "code_expired"


class CodeUsed(PairingError):
    """This pairing code was already used; ask the PC for a new QR code."""

    code = "code_used"


class UnknownHandoff(UnknownCode):
    """This link is not valid here; open lanpair at the address you paired on."""

    code = "invalid_handoff"


class HandoffExpired(CodeExpired):
    """This link has expired (it works for two minutes); open it again from the address you
    paired on."""

    code = "handoff_expired"


class HandoffUsed(CodeUsed):
    """This link was already used once; open it again from the address you paired on."""

    code = "handoff_used"


class TooManyAttempts(PairingError):
    """Too many failed pairing attempts from this address; wait a minute and try again."""

    code = "too_many_attempts"

    def __init__(self, message: str | None = None, *, retry_after_s: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkerError(LanpairError):
    """A background worker could not finish a job."""

    code = "worker"


class WorkerTimeout(WorkerError):
    """A background worker took too long on a job and was stopped."""

    code = "worker_timeout"


class WorkerCrashed(WorkerError):
    """A background worker crashed on a job."""

    code = "worker_crashed"


class WorkerPoolStopped(WorkerError):
    """The worker pool stopped (the daemon is stopping) before a job could finish."""

    code = "worker_pool_stopped"
