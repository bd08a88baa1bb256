"""A node's Ed25519 identity: the key pair that signs every frame it sends to the hub.

Theory of operation
-------------------
Each node owns one Ed25519 key pair, kept in its identity directory:

* ``node.key``: the private key, PKCS#8 PEM, unencrypted, mode ``0600``. The
  directory is created ``0700``. A key file that group or others may access is
  refused, not silently tightened: a key that was readable may already have
  been copied, and the operator has to decide whether to rotate it. The error
  names the path and the ``chmod 600`` that fixes it.
* ``node.pub``: the public key as one line of text,
  ``ed25519:<standard base64 of the raw 32 bytes>\\n``. It is what an operator
  copies into the hub's enrollment list, so it is derived from ``node.key``
  (rewritten if missing) and a ``node.pub`` that names another key is refused:
  it would make the operator enroll a key the node does not hold.

``node.key`` is created atomically and never overwritten: it is written and
synced under a temporary name and hard-linked into place, so a reader never
sees half a key, and if two processes race on first start, the loser adopts
the winner's key. ``node.pub`` is replaced atomically (temporary file plus
``rename``).

:class:`NodeIdentity` holds the private key in memory and only exposes what a
caller needs: the raw public key, its 8-byte fingerprint (the name frames carry
in their header, see ``security.frames``) and ``sign``. Its ``repr`` shows the
fingerprint only.

All cryptography goes through ``security._primitives``. Apart from
:meth:`NodeIdentity.load_or_create` and :func:`load_public_key` (the file
adapter), the module is pure.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shlex
import stat
import tempfile
from pathlib import Path
from typing import Final, NoReturn

from security._primitives import (
    PUBLIC_KEY_BYTES,
    Ed25519PrivateKey,
    PrimitiveError,
    fingerprint,
    new_signing_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_bytes,
    sign,
)
from security.errors import SecurityError

KEY_FILE: Final = "node.key"
PUBLIC_KEY_FILE: Final = "node.pub"
PUBLIC_KEY_PREFIX: Final = "ed25519:"
MAX_FILE_BYTES: Final = 16_384
"""An Ed25519 PEM is 119 bytes; anything much larger is not a key file, so it is not read whole."""

_PUBLIC_KEY_B64_CHARS: Final = 44  # 32 bytes in padded standard base64


class IdentityError(SecurityError):
    """A node key or public key cannot be used; the message says which and why.

    Attributes:
        what: What was refused ("node key file '/data/node.key'", "public key").
        problem: The broken rule, with the values involved and, for files, the fix.
        path: The file involved, if any.
    """

    def __init__(self, what: str, problem: str, path: Path | None = None) -> None:
        self.what, self.problem, self.path = what, problem, path
        super().__init__(f"{what}: {problem}")


def encode_public_key(raw: bytes) -> str:
    """The text form of a raw Ed25519 public key: ``ed25519:<base64>``.

    Raises:
        IdentityError: ``raw`` is not 32 bytes.
    """
    if len(raw) != PUBLIC_KEY_BYTES:
        raise IdentityError("public key", f"must be {PUBLIC_KEY_BYTES} raw bytes, got {len(raw)}")
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def _shown(text: str) -> str:
    """``text`` as it may appear in an error: quoted, and cut short if long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def decode_public_key(text: str) -> bytes:
    """The raw 32 bytes of a public key written as ``ed25519:<base64>``.

    Surrounding whitespace (the trailing newline of ``node.pub``) is ignored.
    The base64 must be canonical, so one key has exactly one spelling and a
    key list can be compared as text.

    Raises:
        IdentityError: The prefix is missing, the base64 is invalid or not
            canonical, or it does not hold exactly 32 bytes.
    """
    stripped = text.strip()
    if not stripped.startswith(PUBLIC_KEY_PREFIX):
        raise IdentityError("public key", f"{_shown(stripped)} does not start with {PUBLIC_KEY_PREFIX!r}")
    encoded = stripped[len(PUBLIC_KEY_PREFIX) :]
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
        raise IdentityError("public key", f"{_shown(encoded)} is not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise IdentityError(
            "public key", f"{_shown(stripped)} holds {len(raw)} bytes, expected {PUBLIC_KEY_BYTES}"
        )
    if len(encoded) != _PUBLIC_KEY_B64_CHARS or base64.b64encode(raw).decode("ascii") != encoded:
        raise IdentityError("public key", f"{_shown(encoded)} is not canonical base64")
    return raw


def _read_limited(path: Path, *, private: bool) -> bytes:
    """Read a small regular file, refusing a private key that group or others may access."""
    what = f"{'node key' if private else 'public key'} file {str(path)!r}"
    # O_NONBLOCK: a FIFO planted at the path must not hang the node; no effect on regular files.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise IdentityError(what, "it is not a regular file", path)
        mode = stat.S_IMODE(status.st_mode)
        if private and mode & 0o077:
            raise IdentityError(
                what,
                f"its mode {mode:#o} lets group or others access the private key; "
                f"restrict it with `chmod 600 {shlex.quote(str(path))}` (and rotate the key "
                "if it may have been copied)",
                path,
            )
        data = b""
        while len(data) <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise IdentityError(what, f"it is larger than {MAX_FILE_BYTES} bytes, so it is not a key", path)
    return data


def load_public_key(path: Path) -> bytes:
    """Read a ``node.pub``-style file and return the raw 32-byte public key.

    Raises:
        IdentityError: The file cannot be read, is not a regular file, or does
            not hold one ``ed25519:<base64>`` key (the message names the path).
    """
    what = f"public key file {str(path)!r}"
    try:
        data = _read_limited(path, private=False)
    except OSError as exc:
        raise IdentityError(what, f"it cannot be read: {exc.strerror}", path) from exc
    try:
        return decode_public_key(data.decode("ascii"))
    except UnicodeDecodeError:
        raise IdentityError(what, "it is not ASCII text", path) from None
    except IdentityError as exc:
        raise IdentityError(what, exc.problem, path) from None


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_temporary(directory: Path, name: str, data: bytes, mode: int) -> str:
    """Write and sync ``data`` under a fresh temporary name in ``directory``; return that name."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as temp:
            os.fchmod(temp.fileno(), mode)
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return temp_name


class NodeIdentity:
    """A node's Ed25519 key pair; signs, never reveals the private key.

    Build one with :meth:`load_or_create` (production) or :meth:`generate`
    (tests, tools); the constructor takes an already loaded key.
    """

    __slots__ = ("_fingerprint", "_private", "_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public = public_key_bytes(private_key)
        self._fingerprint = fingerprint(self._public)

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh identity that lives in memory only."""
        return cls(new_signing_key())

    @classmethod
    def load_or_create(cls, directory: Path) -> NodeIdentity:
        """Load the node's identity from ``directory``, creating it on first run.

        Args:
            directory: The identity directory; created with mode ``0700`` if
                missing (an existing directory keeps its mode).

        Returns:
            The identity whose private key is in ``directory/node.key``;
            ``directory/node.pub`` holds its public key afterwards.

        Raises:
            IdentityError: ``node.key`` grants group or others any access, is
                not a regular file or not an Ed25519 PKCS#8 PEM key;
                ``node.pub`` names a different key; or a file cannot be read or
                written. The message names the path and the fix.
        """
        key_path = directory / KEY_FILE
        try:
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
            try:
                identity, created = cls._load(key_path), False
            except FileNotFoundError:
                identity, created = cls._create(key_path)
            identity._publish(directory / PUBLIC_KEY_FILE, replace=created)
        except OSError as exc:
            path = Path(exc.filename) if isinstance(exc.filename, str) else directory
            raise IdentityError(
                f"identity directory {str(directory)!r}",
                f"{str(path)!r} cannot be read or written: {exc.strerror}",
                path,
            ) from exc
        return identity

    @classmethod
    def _load(cls, key_path: Path) -> NodeIdentity:
        data = _read_limited(key_path, private=True)
        try:
            return cls(private_key_from_pem(data))
        except PrimitiveError as exc:
            raise IdentityError(
                f"node key file {str(key_path)!r}",
                f"{exc.rule}; restore the node's key or move the file away to create a new identity",
                key_path,
            ) from None

    @classmethod
    def _create(cls, key_path: Path) -> tuple[NodeIdentity, bool]:
        """Create ``key_path`` without ever replacing one another process created first."""
        identity = cls.generate()
        temp_name = _write_temporary(
            key_path.parent, key_path.name, private_key_to_pem(identity._private), 0o600
        )
        try:
            os.link(temp_name, key_path)
        except FileExistsError:
            return cls._load(key_path), False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        _fsync_directory(key_path.parent)  # make the new name durable, or a crash could forget the key
        return identity, True

    def _publish(self, pub_path: Path, *, replace: bool) -> None:
        """Write ``node.pub``; if one exists and ``replace`` is false, insist it names our key."""
        text = self.public_key_text + "\n"
        if not replace:
            try:
                existing = _read_limited(pub_path, private=False)
            except FileNotFoundError:
                pass
            else:
                if existing == text.encode("ascii"):
                    return
                raise IdentityError(
                    f"public key file {str(pub_path)!r}",
                    f"it does not hold this node's key {self.public_key_text!r} from "
                    f"{str(pub_path.with_name(KEY_FILE))!r}; delete it to have it rewritten",
                    pub_path,
                )
        temp_name = _write_temporary(pub_path.parent, pub_path.name, text.encode("ascii"), 0o644)
        try:
            os.replace(temp_name, pub_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        _fsync_directory(pub_path.parent)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @property
    def public_key_text(self) -> str:
        """The public key as ``ed25519:<base64>``, the form ``node.pub`` and enrollment lists use."""
        return encode_public_key(self._public)

    @property
    def fingerprint(self) -> bytes:
        """The 8-byte fingerprint frames carry to name the key that signed them."""
        return self._fingerprint

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 16 lowercase hex digits, for logs and operators."""
        return self._fingerprint.hex()

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message``."""
        return sign(self._private, message)

    def __repr__(self) -> str:
        return f"NodeIdentity(fingerprint={self.fingerprint_hex})"

    def __reduce__(self) -> NoReturn:
        """Refuse pickling, which would copy the private key into whatever stores the pickle."""
        raise TypeError("a NodeIdentity holds a private key and cannot be pickled")


__all__ = [
    "KEY_FILE",
    "PUBLIC_KEY_FILE",
    "PUBLIC_KEY_PREFIX",
    "IdentityError",
    "NodeIdentity",
    "decode_public_key",
    "encode_public_key",
    "load_public_key",
]
