"""The TPM 2.0 backend over tpm2-pytss ESAPI (the only module importing tpm2_pytss).

One :class:`Tpm` owns one ESAPI connection. ESAPI is blocking and not
thread-safe: every call runs in ``trio.to_thread.run_sync`` under the
connection's ``CapacityLimiter(1)``. TSS errors are translated at this boundary
(:func:`_tss_errors`).

Objects (owner hierarchy, empty owner auth as on swtpm and most client TPMs):

* storage primary: ECC P-256 / AES-128-CFB restricted decryption key, created
  from a fixed template when needed and flushed right after (the same owner
  seed gives the same key, so nothing needs persisting);
* K10 (default handle 0x81010A10): unrestricted ECDSA P-256 signing key,
  fixedTPM | fixedParent | sensitiveDataOrigin, persisted with EvictControl;
* AK (default handle 0x81010A11): restricted ECDSA P-256 signing key (quotes and
  certifications only), persisted likewise;
* sealed secrets: keyedhash data objects under the primary, returned to the
  caller as a blob (:mod:`attest.seal`) and loaded only to unseal.

At connect time stale transient objects (left by a crashed client; there is no
resource manager on swtpm) are flushed. Without a resource manager only one
client should use the TPM at a time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HT,
    TPM2_RH,
    TPM2_ST,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_SIG_SCHEME,
    TPMT_TK_HASHCHECK,
    TPMU_HA,
)

from attest.bundle import TpmEvidence
from attest.device_key import Backend
from attest.errors import (
    AttestationMalformed,
    DeviceKeyError,
    TpmError,
    TpmUnavailable,
    UnsealFailed,
)
from attest.k10_signature import low_s
from attest.pin import CallerPin, PinAnswer, PinKind
from attest.quote import normalise_pcrs, pcr_digest
from attest.seal import TAG_TPM, SealBackend, check_secret, header, split_blob
from attest.tpm_public import TpmPublic, parse_tpm_public

K10_HANDLE = 0x81010A10
AK_HANDLE = 0x81010A11
BUNDLE_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)

_T = TypeVar("_T")
_TCTI_LAYER = 0x0A0000
_LAYER_MASK = 0xFF0000
_RESIDENT = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)


@contextlib.contextmanager
def _tss_errors(what: str) -> Iterator[None]:
    """Translate tpm2-pytss exceptions into attest errors."""
    try:
        yield
    except TSS2_Exception as exc:
        if exc.rc & _LAYER_MASK == _TCTI_LAYER:
            raise TpmUnavailable(f"the TPM does not answer ({what})") from exc
        raise TpmError(f"the TPM refused to {what}: {exc}") from exc


def _pcr_selection(pcrs: Sequence[int]) -> Any:
    return TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in pcrs))


def _no_scheme() -> Any:
    return TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)


def _ecdsa_rs(signature: Any) -> bytes:
    ecdsa = signature.signature.ecdsa
    return low_s(
        int.from_bytes(bytes(ecdsa.signatureR), "big"),
        int.from_bytes(bytes(ecdsa.signatureS), "big"),
    )


def _template(kind: str) -> Any:
    if kind == "primary":
        return TPM2B_PUBLIC.parse(
            "ecc256:aes128cfb", objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS
        )
    if kind == "k10":
        return TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256", objectAttributes=_RESIDENT | TPMA_OBJECT.SIGN_ENCRYPT
        )
    if kind == "ak":
        tmpl = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256",
            objectAttributes=_RESIDENT | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED,
        )
        # The helper fills in AES for restricted keys; a signing key must have NULL.
        tmpl.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
        return tmpl
    if kind == "sealed":
        return TPM2B_PUBLIC.parse(
            "keyedhash",
            objectAttributes=TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.USERWITHAUTH,
        )
    raise TpmError(f"unknown template {kind}")


class Tpm:
    """One connection to a TPM (blocking ESAPI behind a one-slot CapacityLimiter)."""

    def __init__(self, esapi: Any, tcti: str) -> None:
        self._esapi = esapi
        self.tcti = tcti
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False

    @classmethod
    async def connect(cls, tcti: str) -> Tpm:
        """Connect and flush stale transient objects.

        Raises:
            TpmUnavailable: nothing answers at ``tcti``.
        """

        def blocking() -> Any:
            with _tss_errors("connect"):
                try:
                    esapi = ESAPI(tcti)
                except TSS2_Exception as exc:
                    raise TpmUnavailable("no TPM answers at the configured TCTI") from exc
                try:
                    _flush_transients(esapi)
                except BaseException:
                    esapi.close()
                    raise
                return esapi

        esapi = await trio.to_thread.run_sync(blocking)
        return cls(esapi, tcti)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking ESAPI function ``fn(esapi, *args)`` in a worker thread."""
        if self._closed:
            raise TpmUnavailable("the TPM connection is closed")
        return await trio.to_thread.run_sync(
            functools.partial(fn, self._esapi, *args), limiter=self._limiter
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            async with self._limiter:
                self._esapi.close()

    # --- keys -------------------------------------------------------------

    async def persistent_key(
        self, handle: int, kind: str, *, create: bool
    ) -> tuple[Any, TpmPublic]:
        """The persistent key at ``handle`` (created and persisted when absent and ``create``).

        Raises:
            DeviceKeyError: absent and not ``create``, or the handle holds another kind of key.
        """
        return await self.run(_persistent_key, handle, kind, create)

    async def sign(self, key: Any, digest: bytes) -> bytes:
        return await self.run(_sign, key, digest)

    async def certify(self, obj: Any, ak: Any, nonce: bytes) -> tuple[bytes, bytes]:
        return await self.run(_certify, obj, ak, nonce)

    async def quote(self, ak: Any, pcrs: Sequence[int], nonce: bytes) -> tuple[bytes, bytes]:
        return await self.run(_quote, ak, normalise_pcrs(pcrs), nonce)

    async def pcr_values(self, pcrs: Sequence[int]) -> list[bytes]:
        """Current SHA-256 PCR values, in ascending index order."""
        return await self.run(_pcr_read, normalise_pcrs(pcrs))

    async def pcr_extend(self, index: int, digest: bytes) -> None:
        """Extend SHA-256 PCR ``index`` with ``digest`` (measurement; tests use PCR 16)."""
        await self.run(_pcr_extend, index, digest)

    async def evict(self, handle: int) -> None:
        """Remove the persistent object at ``handle`` (key rotation, tests)."""
        await self.run(_evict, handle)


def _flush_transients(esapi: Any) -> None:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HT.TRANSIENT << 24, 64)
    for handle in list(data.data.handles):
        tr = esapi.tr_from_tpmpublic(int(handle))
        esapi.flush_context(tr)


def _is_persisted(esapi: Any, handle: int) -> bool:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, handle, 1)
    return any(int(h) == handle for h in data.data.handles)


def _create_primary(esapi: Any) -> Any:
    primary, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), _template("primary"))
    return primary


def _persistent_key(esapi: Any, handle: int, kind: str, create: bool) -> tuple[Any, TpmPublic]:
    with _tss_errors(f"load the {kind} key"):
        if not _is_persisted(esapi, handle):
            if not create:
                raise DeviceKeyError(f"no {kind} key at TPM handle 0x{handle:08x}")
            primary = _create_primary(esapi)
            try:
                private, public, *_ = esapi.create(
                    primary, TPM2B_SENSITIVE_CREATE(), _template(kind)
                )
                loaded = esapi.load(primary, private, public)
            finally:
                esapi.flush_context(primary)
            try:
                esapi.evict_control(ESYS_TR.OWNER, loaded, handle)
            finally:
                esapi.flush_context(loaded)
        tr = esapi.tr_from_tpmpublic(handle)
        public, _, _ = esapi.read_public(tr)
    area = parse_tpm_public(public.publicArea.marshal())
    want = parse_tpm_public(_template_area(kind))
    if area.attributes != want.attributes:
        raise DeviceKeyError(f"TPM handle 0x{handle:08x} holds a key that is not a {kind} key")
    return tr, area


@functools.cache
def _template_area(kind: str) -> bytes:
    # Templates carry an empty unique point; parse_tpm_public accepts that.
    data: bytes = _template(kind).publicArea.marshal()
    return data


def _sign(esapi: Any, key: Any, digest: bytes) -> bytes:
    with _tss_errors("sign"):
        signature = esapi.sign(
            key,
            TPM2B_DIGEST(digest),
            _no_scheme(),
            TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL),
        )
    return _ecdsa_rs(signature)


def _certify(esapi: Any, obj: Any, ak: Any, nonce: bytes) -> tuple[bytes, bytes]:
    with _tss_errors("certify"):
        attest, signature = esapi.certify(obj, ak, TPM2B_DATA(nonce), _no_scheme())
    return bytes(attest.marshal()[2:]), _ecdsa_rs(signature)


def _quote(esapi: Any, ak: Any, pcrs: tuple[int, ...], nonce: bytes) -> tuple[bytes, bytes]:
    with _tss_errors("quote"):
        attest, signature = esapi.quote(ak, _pcr_selection(pcrs), TPM2B_DATA(nonce), _no_scheme())
    return bytes(attest.marshal()[2:]), _ecdsa_rs(signature)


def _pcr_read(esapi: Any, pcrs: tuple[int, ...]) -> list[bytes]:
    values: list[bytes] = []
    remaining = list(pcrs)
    with _tss_errors("read PCRs"):
        # TPM2_PCR_Read returns at most 8 digests per call.
        while remaining:
            _, _, digests = esapi.pcr_read(_pcr_selection(remaining[:8]))
            got = [bytes(d) for d in digests]
            if not got:
                raise TpmError("the TPM returned no PCR values")
            values += got
            remaining = remaining[len(got) :]
    return values


def _pcr_extend(esapi: Any, index: int, digest: bytes) -> None:
    if not 0 <= index < 24 or len(digest) != 32:
        raise AttestationMalformed("PCR extend needs an index 0..23 and a 32-byte digest")
    with _tss_errors("extend a PCR"):
        esapi.pcr_extend(
            ESYS_TR.PCR0 + index,
            TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]),
        )


def _evict(esapi: Any, handle: int) -> None:
    with _tss_errors("evict a persistent key"):
        if _is_persisted(esapi, handle):
            tr = esapi.tr_from_tpmpublic(handle)
            esapi.evict_control(ESYS_TR.OWNER, tr, handle)


def _seal(esapi: Any, secret: bytes) -> bytes:
    with _tss_errors("seal"):
        primary = _create_primary(esapi)
        try:
            sensitive = TPM2B_SENSITIVE_CREATE(
                TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret))
            )
            private, public, *_ = esapi.create(primary, sensitive, _template("sealed"))
        finally:
            esapi.flush_context(primary)
    return bytes(private.marshal()) + bytes(public.marshal())


def _unseal(esapi: Any, payload: bytes) -> bytes:
    try:
        private, used = TPM2B_PRIVATE.unmarshal(payload)
        public, used2 = TPM2B_PUBLIC.unmarshal(payload[used:])
    except Exception as exc:  # tpm2-pytss raises assorted types on bad input
        raise AttestationMalformed("sealed blob: bad TPM payload") from exc
    if used + used2 != len(payload):
        raise AttestationMalformed("sealed blob: trailing bytes")
    try:
        primary = _create_primary(esapi)
        try:
            loaded = esapi.load(primary, private, public)
        finally:
            esapi.flush_context(primary)
        try:
            return bytes(esapi.unseal(loaded))
        finally:
            esapi.flush_context(loaded)
    except TSS2_Exception as exc:
        if exc.rc & _LAYER_MASK == _TCTI_LAYER:
            raise TpmUnavailable("the TPM does not answer (unseal)") from exc
        raise UnsealFailed("this TPM cannot unseal the blob (sealed by another TPM?)") from exc


class TpmDeviceKey:
    """K10 inside the TPM (persistent handle); see :mod:`attest.device_key`."""

    def __init__(
        self, tpm: Tpm, key: Any, public: TpmPublic, *, handle: int, ak_handle: int, owns_tpm: bool
    ) -> None:
        self._tpm = tpm
        self._key = key
        self.tpm_public = public
        self.handle = handle
        self.ak_handle = ak_handle
        self._owns_tpm = owns_tpm
        self._public_key = public.public_key()

    @classmethod
    async def open(
        cls,
        tpm: Tpm,
        *,
        handle: int = K10_HANDLE,
        ak_handle: int = AK_HANDLE,
        create: bool = True,
        owns_tpm: bool = False,
    ) -> TpmDeviceKey:
        """Load K10 from its persistent handle, creating and persisting it at first start.

        Args:
            owns_tpm: close ``tpm`` in :meth:`aclose`.

        Raises:
            DeviceKeyError: absent and not ``create``, or the handle holds another key.
            TpmError, TpmUnavailable.
        """
        key, public = await tpm.persistent_key(handle, "k10", create=create)
        return cls(tpm, key, public, handle=handle, ak_handle=ak_handle, owns_tpm=owns_tpm)

    @property
    def backend(self) -> Backend:
        return Backend.TPM

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    async def sign(self, digest: bytes) -> bytes:
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise DeviceKeyError("K10 signs a 32-byte SHA-256 digest")
        return await self._tpm.sign(self._key, digest)

    async def tpm_evidence(self, nonce: bytes, pcrs: Sequence[int] = BUNDLE_PCRS) -> TpmEvidence:
        """Certify K10 by the AK and quote ``pcrs``, both over ``nonce``."""
        ak, ak_public = await self._tpm.persistent_key(self.ak_handle, "ak", create=True)
        certify_attest, certify_sig = await self._tpm.certify(self._key, ak, nonce)
        quote_attest, quote_sig = await self._tpm.quote(ak, pcrs, nonce)
        return TpmEvidence(
            k10_public=self.tpm_public.raw,
            ak_public=ak_public.raw,
            certify_attest=certify_attest,
            certify_signature=certify_sig,
            quote_attest=quote_attest,
            quote_signature=quote_sig,
            pcrs=normalise_pcrs(pcrs),
        )

    async def aclose(self) -> None:
        if self._owns_tpm:
            await self._tpm.aclose()


class TpmSealer:
    """Seal small secrets to this TPM; see :mod:`attest.seal`."""

    def __init__(self, tpm: Tpm, *, owns_tpm: bool = False) -> None:
        self._tpm = tpm
        self._owns_tpm = owns_tpm

    @property
    def backend(self) -> SealBackend:
        return SealBackend.TPM

    async def seal(self, secret: bytes) -> bytes:
        check_secret(secret)
        return header(TAG_TPM) + await self._tpm.run(_seal, secret)

    async def unseal(self, blob: bytes) -> bytes:
        tag, payload = split_blob(blob)
        if tag != TAG_TPM:
            raise UnsealFailed("the blob was sealed by the software sealer, not by a TPM")
        return await self._tpm.run(_unseal, payload)

    async def aclose(self) -> None:
        if self._owns_tpm:
            await self._tpm.aclose()


async def tpm_enroll_pin(
    tpm: Tpm, name: str, pcrs: Sequence[int], *, ak_handle: int = AK_HANDLE
) -> CallerPin:
    """E3 client helper: the pin for this TPM's AK and its current values of ``pcrs``."""
    pcrs = normalise_pcrs(pcrs)
    _, ak_public = await tpm.persistent_key(ak_handle, "ak", create=True)
    values = await tpm.pcr_values(pcrs)
    return CallerPin(
        name=name,
        kind=PinKind.TPM_QUOTE,
        key=ak_public.raw,
        pcrs=pcrs,
        pcr_digest=pcr_digest(values),
    )


async def tpm_pin_answer(
    tpm: Tpm, challenge: bytes, pcrs: Sequence[int], *, ak_handle: int = AK_HANDLE
) -> PinAnswer:
    """E3 client helper: answer ``challenge`` with a quote of ``pcrs`` by this TPM's AK."""
    ak, _ = await tpm.persistent_key(ak_handle, "ak", create=False)
    attest, signature = await tpm.quote(ak, pcrs, challenge)
    return PinAnswer(kind=PinKind.TPM_QUOTE, signature=signature, attest=attest)
