//! An in-memory P-256 signer.
//!
//! [`SoftwareSigner`] exists for unit tests. It MUST NOT hold a CA key: its private key lives
//! in process memory. Nothing in this crate ever falls
//! back to it when a token fails.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};

use crate::{Algorithm, Error, Signer};

/// A P-256 key held in memory: for unit tests and throwaway linting keys only, never a CA key.
#[derive(Clone)]
pub struct SoftwareSigner {
    key: SigningKey,
    spki: Vec<u8>,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private scalar.
        f.debug_struct("SoftwareSigner")
            .field("algorithm", &Algorithm::EcdsaP256Sha256)
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// Generates a fresh P-256 key from the operating system's random number generator.
    pub fn generate_p256() -> Self {
        Self::from_signing_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// Loads a P-256 private key from a DER PKCS#8 `PrivateKeyInfo` (RFC 5208).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = SigningKey::from_pkcs8_der(der)
            .map_err(|e| Error::PublicKey(format!("not a P-256 PKCS#8 private key: {e}")))?;
        Ok(Self::from_signing_key(key))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let spki = spki_der(key.verifying_key());
        Self { key, spki }
    }
}

/// DER `SubjectPublicKeyInfo` of a P-256 verifying key.
fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    match key.to_public_key_der() {
        Ok(doc) => doc.into_vec(),
        // INVARIANT: encoding a valid P-256 point (id-ecPublicKey, prime256v1, 65-byte point)
        // into an in-memory DER document cannot fail.
        Err(e) => unreachable!("encoding a P-256 SPKI failed: {e}"),
    }
}

impl Signer for SoftwareSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EcdsaP256Sha256
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        // `Signer<DerSignature>` for `SigningKey` hashes with SHA-256 and signs (RFC 6979 nonce).
        let sig: DerSignature = self.key.try_sign(message).map_err(|_| Error::Pkcs11 {
            function: "software ECDSA".into(),
            detail: "signing failed".into(),
        })?;
        Ok(sig.as_bytes().to_vec())
    }
}

/// AES-256-GCM in memory (unit tests only; production keys live in the HSM).
pub struct SoftwareSealer(ring::aead::LessSafeKey);

impl std::fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareSealer")
    }
}

impl SoftwareSealer {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        // INVARIANT: 32 bytes is the AES-256 key length.
        #[allow(clippy::expect_used)]
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &k).expect("32-byte key");
        SoftwareSealer(ring::aead::LessSafeKey::new(key))
    }
}

impl crate::Sealer for SoftwareSealer {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; crate::GCM_NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| Error::Unseal)?;
        Ok([nonce.as_slice(), &buf].concat())
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < crate::GCM_NONCE_LEN + crate::GCM_TAG_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ct) = sealed.split_at(crate::GCM_NONCE_LEN);
        let nonce =
            ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Unseal)?;
        let mut buf = ct.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, ring::aead::Aad::from(aad), &mut buf)
            .map_err(|_| Error::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// HMAC-SHA-256 in memory (unit tests only).
pub struct SoftwareMac(ring::hmac::Key);

impl std::fmt::Debug for SoftwareMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareMac")
    }
}

impl SoftwareMac {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        SoftwareMac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k))
    }
}

impl crate::Mac for SoftwareMac {
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], Error> {
        let tag = ring::hmac::sign(&self.0, message);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::verify;

    #[test]
    fn sign_and_verify() {
        let s = SoftwareSigner::generate_p256();
        let sig = s.sign(b"hello").unwrap();
        assert_eq!(s.algorithm(), Algorithm::EcdsaP256Sha256);
        verify(s.algorithm(), s.public_key_spki(), b"hello", &sig).unwrap();
        // The right key under the wrong algorithm does not verify.
        assert!(matches!(
            verify(
                Algorithm::RsaPkcs1Sha256,
                s.public_key_spki(),
                b"hello",
                &sig
            ),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn verify_rejects_flipped_bits() {
        let s = SoftwareSigner::generate_p256();
        let msg = b"to be signed".to_vec();
        let sig = s.sign(&msg).unwrap();
        // A flipped bit in the message.
        let mut m2 = msg.clone();
        m2[0] ^= 1;
        assert!(matches!(
            verify(s.algorithm(), s.public_key_spki(), &m2, &sig),
            Err(Error::BadSignature)
        ));
        // A flipped bit in the last byte of the signature (inside s).
        let mut sig2 = sig.clone();
        let last = sig2.len() - 1;
        sig2[last] ^= 1;
        assert!(verify(s.algorithm(), s.public_key_spki(), &msg, &sig2).is_err());
        // Another key.
        let other = SoftwareSigner::generate_p256();
        assert!(matches!(
            verify(other.algorithm(), other.public_key_spki(), &msg, &sig),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn pkcs8_round_trip() {
        use p256::pkcs8::EncodePrivateKey;
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let der = key.to_pkcs8_der().unwrap();
        let s = SoftwareSigner::from_pkcs8_der(der.as_bytes()).unwrap();
        assert_eq!(
            s.public_key_spki(),
            spki_der(key.verifying_key()).as_slice()
        );
        assert!(SoftwareSigner::from_pkcs8_der(b"junk").is_err());
        let dbg = format!("{s:?}");
        assert!(dbg.contains("SoftwareSigner"));
    }
}
