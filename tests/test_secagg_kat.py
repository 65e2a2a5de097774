"""Known answers and properties of the secure-aggregation primitives in ``secagg.hazmat``.

The vectors in ``tests/vectors/secagg_kat.json`` were copied from published test-vector files (each
group names its RFC / NIST document and the file it came from); nothing here is computed by the
code under test and then compared with itself. Next to the vectors sit property tests for the
invariants the protocol relies on: masks cancel, any t of n Shamir shares reconstruct while t - 1
are consistent with every secret, bit packing round-trips, and a failed integrity check says
nothing about which check failed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidMessage
from secagg.hazmat import crypto, packing, shamir
from secagg.hazmat.prg import MaskGenerator, word_dtype

_VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "secagg_kat.json").read_text(encoding="utf-8"))

# database=None: property runs must not write an example database into the checkout.
_FEW = settings(max_examples=40, deadline=None, database=None)
_SOME = settings(max_examples=100, deadline=None, database=None)

PRIME = shamir.PRIME


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _group(name: str) -> list[dict[str, Any]]:
    return _VECTORS[name]["vectors"]


def test_every_vector_group_names_its_source() -> None:
    groups = {k: v for k, v in _VECTORS.items() if not k.startswith("_")}
    assert len(groups) >= 8
    for name, group in groups.items():
        source = group.get("source", "")
        # A document (RFC / NIST / spec) and the repository file the hex was copied from.
        assert any(doc in source for doc in ("RFC", "NIST", "McGrew")), name
        assert "/" in source and "commit" in source, name


# --------------------------------------------------------------------------------------------
# X25519 (RFC 7748)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", _group("x25519_rfc7748_5_2"), ids=lambda v: v["scalar"][:8])
def test_x25519_rfc7748_5_2_scalar_times_u(vector: dict[str, str]) -> None:
    private = X25519PrivateKey.from_private_bytes(_h(vector["scalar"]))
    assert crypto.agree(private, _h(vector["u"])) == _h(vector["output"])


def test_x25519_rfc7748_5_2_iterated() -> None:
    group = _VECTORS["x25519_rfc7748_5_2_iterated"]
    expected = {r["iterations"]: _h(r["k"]) for r in group["results"]}
    k = u = _h(group["start"])
    seen = {}
    for i in range(1, max(expected) + 1):
        k, u = crypto.agree(X25519PrivateKey.from_private_bytes(k), u), k
        if i in expected:
            seen[i] = k
    assert seen == expected


def test_x25519_rfc7748_6_1_key_pairs_and_shared_secret() -> None:
    v = _VECTORS["x25519_rfc7748_6_1"]
    alice = crypto.KeyPair.from_private_bytes(_h(v["alice_private"]))
    bob = crypto.KeyPair.from_private_bytes(_h(v["bob_private"]))
    assert alice.public == _h(v["alice_public"])
    assert bob.public == _h(v["bob_public"])
    assert alice.private_bytes() == _h(v["alice_private"])
    assert alice.exchange(bob.public) == _h(v["shared"])
    assert bob.exchange(alice.public) == _h(v["shared"])
    # The parsed-key form of the peer must give the same answer as raw bytes.
    assert alice.exchange(crypto.load_public(bob.public)) == _h(v["shared"])
    assert _h(v["alice_private"]).hex()[:16] not in repr(alice)


_P25519 = 2**255 - 19
_LOW_ORDER = {
    "u=0": bytes(32),
    "u=1": (1).to_bytes(32, "little"),
    "u=p (non-canonical 0)": _P25519.to_bytes(32, "little"),
    "u=p+1 (non-canonical 1)": (_P25519 + 1).to_bytes(32, "little"),
}


@pytest.mark.parametrize("point", list(_LOW_ORDER.values()), ids=list(_LOW_ORDER))
def test_agree_refuses_low_order_points(point: bytes) -> None:
    v = _VECTORS["x25519_rfc7748_6_1"]
    alice = crypto.KeyPair.from_private_bytes(_h(v["alice_private"]))
    with pytest.raises(InvalidMessage) as raised:
        alice.exchange(point)
    assert str(raised.value) == "key agreement failed"
    with pytest.raises(InvalidMessage):
        crypto.agree(X25519PrivateKey.generate(), point)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_load_public_refuses_wrong_length(length: int) -> None:
    with pytest.raises(InvalidMessage):
        crypto.load_public(bytes(length))
    with pytest.raises(InvalidMessage):
        crypto.KeyPair().exchange(b"\x09" * length)


# --------------------------------------------------------------------------------------------
# HKDF-SHA256 (RFC 5869)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", _group("hkdf_sha256_rfc5869"), ids=lambda v: f"case{v['case']}")
def test_hkdf_rfc5869(vector: dict[str, Any]) -> None:
    okm = crypto.hkdf(_h(vector["ikm"]), salt=_h(vector["salt"]), info=_h(vector["info"]),
                      length=vector["length"])
    assert okm == _h(vector["okm"])


# --------------------------------------------------------------------------------------------
# The mask PRG: AES-128-CTR keystream (NIST SP 800-38A F.5.1, RFC 3686)
# --------------------------------------------------------------------------------------------

def _keystream(key: bytes, counter_block: bytes, nbytes: int, modulus_bits: int = 32) -> bytes:
    itemsize = word_dtype(modulus_bits).itemsize
    dim = -(-nbytes // itemsize)
    words = MaskGenerator(dim, modulus_bits).expand(key, counter_block=counter_block)
    assert words.dtype == word_dtype(modulus_bits) and words.shape == (dim,)
    return words.tobytes()[:nbytes]


@pytest.mark.parametrize("modulus_bits", [32, 64])
def test_mask_prg_matches_sp800_38a_f51(modulus_bits: int) -> None:
    v = _VECTORS["aes128_ctr_sp800_38a_f51"]
    plaintext = _h(v["plaintext"])
    stream = _keystream(_h(v["key"]), _h(v["initial_counter"]), len(plaintext), modulus_bits)
    assert _xor(stream, plaintext) == _h(v["ciphertext"])


@pytest.mark.parametrize("vector", _group("aes128_ctr_rfc3686"), ids=lambda v: f"#{v['number']}")
def test_mask_prg_matches_rfc3686(vector: dict[str, Any]) -> None:
    # RFC 3686 section 4: counter block = nonce (4) || IV (8) || block counter (4, big-endian) = 1.
    counter_block = _h(vector["nonce"]) + _h(vector["iv"]) + (1).to_bytes(4, "big")
    assert len(counter_block) == 16
    plaintext = _h(vector["plaintext"])
    stream = _keystream(_h(vector["key"]), counter_block, len(plaintext))
    assert _xor(stream, plaintext) == _h(vector["ciphertext"])


@_SOME
@given(key=st.binary(min_size=16, max_size=16), dim=st.integers(1, 700),
       modulus_bits=st.sampled_from([1, 8, 31, 32, 33, 64]))
def test_expand_is_one_continuous_ctr_stream(key: bytes, dim: int, modulus_bits: int) -> None:
    generator = MaskGenerator(dim, modulus_bits)
    nbytes = dim * generator.dtype.itemsize
    reference = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(nbytes))
    assert generator.expand(key).tobytes() == reference
    # The scratch buffer is reused: a second expansion must not depend on the first.
    other = bytes(b ^ 0xFF for b in key)
    generator.expand(other)
    assert generator.expand(key).tobytes() == reference


@pytest.mark.parametrize("length", [0, 15, 17, 24, 32])
def test_expand_refuses_wrong_key_length(length: int) -> None:
    with pytest.raises(ValueError):
        MaskGenerator(4, 32).expand(bytes(length))


def test_mask_generator_refuses_bad_parameters() -> None:
    for dim, bits in [(0, 32), (-1, 32), (4, 0), (4, 65)]:
        with pytest.raises(ValueError):
            MaskGenerator(dim, bits)


@_SOME
@given(data=st.data(), modulus_bits=st.integers(1, 64), dim=st.integers(1, 200),
       key=st.binary(min_size=16, max_size=16), other=st.binary(min_size=16, max_size=16))
def test_add_then_subtract_restores_the_accumulator(data: st.DataObject, modulus_bits: int,
                                                    dim: int, key: bytes, other: bytes) -> None:
    generator = MaskGenerator(dim, modulus_bits)
    width = generator.dtype.itemsize * 8
    values = data.draw(st.lists(st.integers(0, 2**width - 1), min_size=dim, max_size=dim))
    acc = np.array(values, dtype=generator.dtype)
    mask = [int(w) for w in generator.expand(key)]

    generator.add(acc, key)
    assert [int(a) for a in acc] == [(v + m) % 2**width for v, m in zip(values, mask)]
    generator.add(acc, other)
    # Masks cancel in any order: subtract the first key before the second.
    generator.subtract(acc, key)
    generator.subtract(acc, other)
    assert acc.dtype == generator.dtype
    assert [int(a) for a in acc] == values


# --------------------------------------------------------------------------------------------
# Ed25519 (RFC 8032) and the domain-separated sign / verify
# --------------------------------------------------------------------------------------------

_ED = _group("ed25519_rfc8032_7_1")


@pytest.mark.parametrize("vector", _ED, ids=lambda v: v["name"].replace(" ", ""))
def test_ed25519_rfc8032_7_1(vector: dict[str, str]) -> None:
    identity = Ed25519PrivateKey.from_private_bytes(_h(vector["secret_key"]))
    assert crypto.public_bytes(identity.public_key()) == _h(vector["public_key"])
    assert identity.sign(_h(vector["message"])) == _h(vector["signature"])
    Ed25519PublicKey.from_public_bytes(_h(vector["public_key"])).verify(
        _h(vector["signature"]), _h(vector["message"]))


@pytest.mark.parametrize("vector", _ED, ids=lambda v: v["name"].replace(" ", ""))
def test_sign_is_domain_separated_from_raw_ed25519(vector: dict[str, str]) -> None:
    identity = Ed25519PrivateKey.from_private_bytes(_h(vector["secret_key"]))
    public = identity.public_key()
    message = _h(vector["message"])
    ours = crypto.sign(identity, b"advertise", message)
    assert len(ours) == crypto.SIGNATURE_BYTES
    assert ours != _h(vector["signature"])
    crypto.verify(public, ours, b"advertise", message)
    # A raw RFC signature over the same bytes is not a Cohort signature for any purpose.
    for purpose in (b"", b"advertise", b"consistency"):
        with pytest.raises(InvalidMessage):
            crypto.verify(public, _h(vector["signature"]), purpose, message)


@_SOME
@given(which=st.sampled_from(["signature", "payload", "purpose"]), position=st.integers(0, 10**6),
       payload=st.binary(min_size=1, max_size=64),
       purpose=st.binary(min_size=1, max_size=16).filter(lambda p: b"\x00" not in p))
def test_verify_refuses_any_flipped_bit(which: str, position: int, payload: bytes,
                                        purpose: bytes) -> None:
    identity = Ed25519PrivateKey.from_private_bytes(_h(_ED[0]["secret_key"]))
    public = identity.public_key()
    signature = crypto.sign(identity, purpose, payload)
    crypto.verify(public, signature, purpose, payload)
    parts = {"signature": bytearray(signature), "payload": bytearray(payload),
             "purpose": bytearray(purpose)}
    target = parts[which]
    bit = position % (8 * len(target))
    target[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidMessage) as raised:
        crypto.verify(public, bytes(parts["signature"]), bytes(parts["purpose"]),
                      bytes(parts["payload"]))
    assert str(raised.value) == "signature check failed"


def test_verify_refuses_another_signer() -> None:
    signer = Ed25519PrivateKey.from_private_bytes(_h(_ED[1]["secret_key"]))
    stranger = Ed25519PublicKey.from_public_bytes(_h(_ED[2]["public_key"]))
    with pytest.raises(InvalidMessage):
        crypto.verify(stranger, crypto.sign(signer, b"consistency", b"x"), b"consistency", b"x")


# --------------------------------------------------------------------------------------------
# AES-GCM (McGrew & Viega test cases) and seal / open_sealed
# --------------------------------------------------------------------------------------------

_GCM = _group("aes_gcm_mcgrew_viega")


@pytest.mark.parametrize("vector", _GCM, ids=lambda v: f"case{v['case']}")
def test_aes_gcm_vectors(vector: dict[str, Any]) -> None:
    key, nonce = _h(vector["key"]), _h(vector["nonce"])
    plaintext, aad = _h(vector["plaintext"]), _h(vector["aad"])
    expected = _h(vector["ciphertext"]) + _h(vector["tag"])
    assert AESGCM(key).encrypt(nonce, plaintext, aad) == expected
    # open_sealed reads the wire layout nonce || ciphertext || tag; the vector fixes all three.
    assert crypto.open_sealed(key, nonce + expected, aad) == plaintext


@pytest.mark.parametrize("vector", _GCM, ids=lambda v: f"case{v['case']}")
def test_seal_round_trip_with_vector_keys(vector: dict[str, Any]) -> None:
    key, plaintext, aad = _h(vector["key"]), _h(vector["plaintext"]), _h(vector["aad"])
    sealed = crypto.seal(key, plaintext, aad)
    assert len(sealed) == crypto.NONCE_BYTES + len(plaintext) + crypto.TAG_BYTES
    assert crypto.open_sealed(key, sealed, aad) == plaintext
    # The same AESGCM call with the nonce seal chose must give the same bytes.
    nonce = sealed[:crypto.NONCE_BYTES]
    assert AESGCM(key).encrypt(nonce, plaintext, aad) == sealed[crypto.NONCE_BYTES:]
    # A fresh random nonce per message: sealing twice never repeats a nonce.
    assert crypto.seal(key, plaintext, aad)[:crypto.NONCE_BYTES] != nonce


def _decryption_error(key: bytes, sealed: bytes, aad: bytes) -> str:
    with pytest.raises(InvalidMessage) as raised:
        crypto.open_sealed(key, sealed, aad)
    return str(raised.value)


@_SOME
@given(which=st.sampled_from(["nonce", "ciphertext", "tag", "aad"]),
       position=st.integers(0, 10**6), case=st.sampled_from(range(len(_GCM))))
def test_any_tampering_gives_one_error(which: str, position: int, case: int) -> None:
    vector = _GCM[case]
    key, aad = _h(vector["key"]), _h(vector["aad"])
    parts = {"nonce": bytearray(_h(vector["nonce"])),
             "ciphertext": bytearray(_h(vector["ciphertext"])),
             "tag": bytearray(_h(vector["tag"])), "aad": bytearray(aad)}
    target = parts[which]
    bit = position % (8 * len(target))
    target[bit // 8] ^= 1 << (bit % 8)
    sealed = bytes(parts["nonce"] + parts["ciphertext"] + parts["tag"])
    assert _decryption_error(key, sealed, bytes(parts["aad"])) == "decryption failed"


def test_every_kind_of_tampering_gives_the_same_message() -> None:
    key = _h(_GCM[0]["key"])
    aad = b"round-7/client-3"
    sealed = crypto.seal(key, b"share bytes", aad)
    n, t = crypto.NONCE_BYTES, crypto.TAG_BYTES

    def flip(data: bytes, index: int) -> bytes:
        out = bytearray(data)
        out[index] ^= 0x01
        return bytes(out)

    messages = {
        "nonce": _decryption_error(key, flip(sealed, 0), aad),
        "ciphertext": _decryption_error(key, flip(sealed, n), aad),
        "tag": _decryption_error(key, flip(sealed, len(sealed) - 1), aad),
        "associated data": _decryption_error(key, sealed, flip(aad, 0)),
        "wrong key": _decryption_error(bytes(len(key)), sealed, aad),
        "truncated": _decryption_error(key, sealed[:-1], aad),
        "shorter than nonce + tag": _decryption_error(key, sealed[:n + t - 1], aad),
        "empty": _decryption_error(key, b"", aad),
        "extended": _decryption_error(key, sealed + b"\x00", aad),
    }
    assert set(messages.values()) == {"decryption failed"}, messages


# --------------------------------------------------------------------------------------------
# Shamir sharing over GF(2**521 - 1)
# --------------------------------------------------------------------------------------------

def _poly_mul_linear(poly: list[int], root: int) -> list[int]:
    """poly(x) * (x - root) mod PRIME, coefficients lowest degree first."""
    out = [0] * (len(poly) + 1)
    for i, c in enumerate(poly):
        out[i] = (out[i] - c * root) % PRIME
        out[i + 1] = (out[i + 1] + c) % PRIME
    return out


def _interpolate(points: list[tuple[int, int]]) -> list[int]:
    """Coefficients (lowest first) of the unique polynomial of degree < len(points) through them."""
    coeffs = [0] * len(points)
    for i, (xi, yi) in enumerate(points):
        basis, denom = [1], 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                basis = _poly_mul_linear(basis, xj)
                denom = denom * (xi - xj) % PRIME
        scale = yi * pow(denom, -1, PRIME) % PRIME
        for k, c in enumerate(basis):
            coeffs[k] = (coeffs[k] + c * scale) % PRIME
    return coeffs


def _evaluate(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


def _degree(coeffs: list[int]) -> int:
    nonzero = [i for i, c in enumerate(coeffs) if c]
    return nonzero[-1] if nonzero else -1


_SECRET = st.integers(0, PRIME - 1)


@st.composite
def _sharing(draw: st.DrawFn, min_threshold: int = 1) -> tuple[int, int, list[int]]:
    n = draw(st.integers(max(1, min_threshold), 30))
    t = draw(st.integers(min_threshold, n))
    small = st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True)
    large = st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True)
    xs = draw(st.one_of(st.just(list(range(1, n + 1))), small, large))
    return n, t, xs


@_SOME
@given(secret=_SECRET, sharing=_sharing(), data=st.data())
def test_any_t_of_n_shares_reconstruct(secret: int, sharing: tuple[int, int, list[int]],
                                       data: st.DataObject) -> None:
    n, t, xs = sharing
    shares = shamir.split(secret, t, xs)
    assert len(shares) == n and all(0 <= y < PRIME for y in shares)
    points = list(zip(xs, shares))
    exact = data.draw(st.permutations(points))[:t]
    assert shamir.reconstruct(exact, t) == secret
    if n > t:
        extra = data.draw(st.integers(t + 1, n))
        more = data.draw(st.permutations(points))[:extra]
        assert shamir.reconstruct(more, t) == secret
    if t >= 2:
        # With one point replaced by a wrong value, the answer changes.
        (x0, y0), rest = exact[0], exact[1:]
        assert shamir.reconstruct([(x0, (y0 + 1) % PRIME)] + rest, t) != secret


@_SOME
@given(secret=_SECRET, candidate=_SECRET, sharing=_sharing(min_threshold=2), data=st.data())
def test_fewer_than_t_shares_fit_every_secret(secret: int, candidate: int,
                                              sharing: tuple[int, int, list[int]],
                                              data: st.DataObject) -> None:
    n, t, xs = sharing
    shares = shamir.split(secret, t, xs)
    points = data.draw(st.permutations(list(zip(xs, shares))))
    seen, unseen = points[:t - 1], points[t - 1:]

    # Lagrange through the t - 1 seen shares and (0, candidate): one polynomial of degree < t.
    forged = _interpolate(seen + [(0, candidate)])
    assert _degree(forged) < t
    assert forged[0] == candidate
    assert all(_evaluate(forged, x) == y for x, y in seen)
    # Completing the seen shares from that polynomial reconstructs the candidate: the t - 1
    # shares cannot tell the real secret from any other.
    x_new, _ = unseen[0]
    assert shamir.reconstruct(seen + [(x_new, _evaluate(forged, x_new))], t) == candidate
    assert shamir.reconstruct(seen + [unseen[0]], t) == secret

    # And the seen shares alone (a polynomial of degree < t - 1 through them) do not give the
    # secret away, which they would if split used a polynomial of too low a degree.
    assert _interpolate(seen)[0] != secret


@_SOME
@given(secret=_SECRET, sharing=_sharing(min_threshold=2))
def test_split_uses_a_random_polynomial_of_degree_exactly_t_minus_1(
        secret: int, sharing: tuple[int, int, list[int]]) -> None:
    n, t, xs = sharing
    shares = shamir.split(secret, t, xs)
    poly = _interpolate(list(zip(xs, shares))[:t])
    assert poly[0] == secret
    assert _degree(poly) == t - 1
    assert all(_evaluate(poly, x) == y for x, y in zip(xs, shares))
    assert shamir.split(secret, t, xs) != shares


@_FEW
@given(secret=_SECRET, n=st.integers(1, 30))
def test_threshold_one_shares_are_the_secret(secret: int, n: int) -> None:
    xs = list(range(1, n + 1))
    assert shamir.split(secret, 1, xs) == [secret] * n
    assert shamir.reconstruct([(n, secret)], 1) == secret


@pytest.mark.parametrize("secret, threshold, xs", [
    (-1, 2, [1, 2, 3]),
    (PRIME, 2, [1, 2, 3]),
    (PRIME + 5, 2, [1, 2, 3]),
    (7, 0, [1, 2, 3]),
    (7, -1, [1, 2, 3]),
    (7, 4, [1, 2, 3]),
    (7, 2, [1, 2, 2]),
    (7, 2, [3, 1, 3, 4]),
    (7, 2, [0, 1, 2]),
    (7, 2, [1, -2, 3]),
    (7, 2, [1, PRIME, 3]),
    (7, 1, []),
])
def test_split_refuses_bad_input(secret: int, threshold: int, xs: list[int]) -> None:
    with pytest.raises(ValueError):
        shamir.split(secret, threshold, xs)


@pytest.mark.parametrize("points, threshold", [
    ([(0, 5), (1, 6), (2, 7)], 2),
    ([(1, 5), (PRIME, 6), (2, 7)], 2),
    ([(-1, 5), (1, 6), (2, 7)], 2),
    ([(1, PRIME), (2, 6)], 2),
    ([(1, -1), (2, 6)], 2),
    ([(1, 5), (2, 6)], 3),
    ([(1, 5), (1, 5), (2, 6)], 3),
    ([(1, 5), (1, 9), (1, 6)], 2),
    ([], 1),
])
def test_reconstruct_refuses_bad_points(points: list[tuple[int, int]], threshold: int) -> None:
    with pytest.raises(ValueError):
        shamir.reconstruct(points, threshold)


@_SOME
@given(y=_SECRET)
def test_share_encoding_round_trips(y: int) -> None:
    data = shamir.encode_share(y)
    assert len(data) == shamir.SHARE_BYTES == math.ceil(521 / 8)
    assert shamir.decode_share(data) == y


@_FEW
@given(y=st.integers(PRIME, 2**(8 * shamir.SHARE_BYTES) - 1))
def test_decode_share_refuses_values_outside_the_field(y: int) -> None:
    with pytest.raises(ValueError):
        shamir.decode_share(y.to_bytes(shamir.SHARE_BYTES, "big"))


@pytest.mark.parametrize("length", [0, 1, 65, 67, 132])
def test_decode_share_refuses_wrong_length(length: int) -> None:
    with pytest.raises(ValueError):
        shamir.decode_share(bytes(length))


# --------------------------------------------------------------------------------------------
# Bit packing
# --------------------------------------------------------------------------------------------

@st.composite
def _packable(draw: st.DrawFn) -> tuple[int, int, np.ndarray]:
    bits = draw(st.integers(1, 64))
    dim = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from([np.dtype(np.uint32), np.dtype(np.uint64)])
                 if bits <= 32 else st.just(np.dtype(np.uint64)))
    width = dtype.itemsize * 8
    values = draw(st.lists(st.integers(0, 2**width - 1), min_size=dim, max_size=dim))
    return bits, dim, np.array(values, dtype=dtype)


@settings(max_examples=300, deadline=None, database=None)
@given(case=_packable())
def test_pack_unpack_round_trip(case: tuple[int, int, np.ndarray]) -> None:
    bits, dim, values = case
    data = packing.pack(values, bits)
    assert len(data) == packing.packed_size(dim, bits)
    out = packing.unpack(data, bits, dim)
    assert out.dtype == word_dtype(bits) and out.shape == (dim,)
    low = 2**bits - 1
    assert [int(v) for v in out] == [int(v) & low for v in values]


def test_packed_size_is_within_the_documented_padding() -> None:
    # packing.py: "The layout costs at most one byte of padding per sub-byte lane" -- there are at
    # most three sub-byte lanes (4, 2 and 1 bits), so never more than 3 bytes over ceil(m*b/8).
    over = [(bits, dim, packing.packed_size(dim, bits) - math.ceil(dim * bits / 8))
            for bits in range(1, 65) for dim in range(1, 301)]
    assert all(extra >= 0 for _, _, extra in over)
    violations = [(b, m, extra) for b, m, extra in over if extra > 3]
    worst = max(violations, key=lambda v: v[2], default=None)
    assert not violations, (f"{len(violations)} of {len(over)} (bits, dim) pairs exceed "
                            f"ceil(dim*bits/8) + 3 bytes; e.g. {violations[:3]}, worst {worst}")


@settings(max_examples=150, deadline=None, database=None)
@given(case=_packable(), data=st.data(), use_scratch=st.booleans())
def test_unpack_add_accumulates_modulo_the_word(case: tuple[int, int, np.ndarray],
                                                data: st.DataObject, use_scratch: bool) -> None:
    bits, dim, values = case
    dtype = word_dtype(bits)
    width = dtype.itemsize * 8
    start = data.draw(st.lists(st.integers(0, 2**width - 1), min_size=dim, max_size=dim))
    acc = np.array(start, dtype=dtype)
    scratch = np.empty(dim, dtype=dtype) if use_scratch else None
    packed = packing.pack(values, bits)
    packing.unpack_add(packed, bits, dim, acc, scratch)
    packing.unpack_add(memoryview(packed), bits, dim, acc, scratch)
    low = 2**bits - 1
    expected = [(s + 2 * (int(v) & low)) % 2**width for s, v in zip(start, values)]
    assert [int(a) for a in acc] == expected


@_FEW
@given(case=_packable(), delta=st.sampled_from([-3, -1, 1, 8]))
def test_unpack_refuses_a_wrong_length_buffer(case: tuple[int, int, np.ndarray],
                                              delta: int) -> None:
    bits, dim, values = case
    data = packing.pack(values, bits)
    wrong = data[:delta] if delta < 0 else data + bytes(delta)
    with pytest.raises(ValueError):
        packing.unpack(wrong, bits, dim)
    acc = np.zeros(dim, dtype=word_dtype(bits))
    with pytest.raises(ValueError):
        packing.unpack_add(wrong, bits, dim, acc)
    assert not acc.any()


def test_packing_refuses_bad_arguments() -> None:
    values = np.arange(10, dtype=np.uint32)
    for bits in (0, 65):
        with pytest.raises(ValueError):
            packing.pack(values, bits)
        with pytest.raises(ValueError):
            packing.packed_size(10, bits)
    with pytest.raises(ValueError):
        packing.packed_size(0, 8)
    with pytest.raises(ValueError):
        packing.pack(values.astype(np.int32), 8)
    with pytest.raises(ValueError):
        packing.pack(values.reshape(2, 5), 8)
    data = packing.pack(values, 8)
    with pytest.raises(ValueError):  # accumulator of the wrong word size for the bit width
        packing.unpack_add(data, 8, 10, np.zeros(10, dtype=np.uint64))
    with pytest.raises(ValueError):  # accumulator of the wrong length
        packing.unpack_add(data, 8, 10, np.zeros(11, dtype=np.uint32))
