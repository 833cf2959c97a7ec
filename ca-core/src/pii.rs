//! Personal data at rest: envelope encryption and blind indexes (DESIGN.md "Personal data and
//! trust"; reliability checklist rows 16 and 46).
//!
//! - **Encryption.** Each personal field (HKID number, date of birth, phone, address, TOTP
//!   secrets) is sealed with AES-256-GCM under one 256-bit *data key*. The data key is random,
//!   made once, and stored only sealed by an AES key inside the HSM (`ecert-pii-seal`,
//!   never extractable); it is unsealed into memory when the signer starts. The additional data
//!   of every field names the field and the record it belongs to, so a ciphertext copied to
//!   another row or column does not open.
//! - **Blind index.** Equality search (duplicate applications, the clerk's typed HKID against
//!   the application's) uses HMAC-SHA-256 computed *in the HSM* with `ecert-pii-index` over the
//!   normalised value. A database dump gives neither the numbers nor a way to test guesses
//!   offline.
//!
//! Plaintext leaves this module only as [`Zeroizing`] strings, and no error names a value.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// HSM label of the AES key that seals the data key.
pub const SEAL_KEY_LABEL: &str = "ecert-pii-seal";
/// HSM label of the HMAC key of the blind indexes.
pub const INDEX_KEY_LABEL: &str = "ecert-pii-index";
/// `meta` key holding the sealed data key (hex).
pub const DATA_KEY_META: &str = "pii_data_key_v1";
const DATA_KEY_AAD: &[u8] = b"ecert/pii/data-key/v1";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A personal field: part of the additional data of its ciphertext and of its blind index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// HKID number (normal form, see [`crate::hkid::Hkid`]).
    Hkid,
    /// Date of birth (ISO 8601).
    DateOfBirth,
    /// Telephone number.
    Phone,
    /// Correspondence address.
    Address,
    /// A staff member's TOTP secret.
    TotpSecret,
    /// The mailbox of a Certificate Problem Report's reporter.
    Reporter,
    /// A Certificate Problem Report's description.
    ReportText,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Hkid => "hkid",
            Field::DateOfBirth => "dob",
            Field::Phone => "phone",
            Field::Address => "address",
            Field::TotpSecret => "totp",
            Field::Reporter => "reporter",
            Field::ReportText => "report",
        }
    }
}

/// The data key in memory plus the HSM's index key.
pub struct Vault {
    key: LessSafeKey,
    index: Arc<dyn hsm::Mac>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    /// Makes a new random data key; returns the vault and the data key sealed by `sealer`, to
    /// be stored.
    pub fn create(sealer: &dyn hsm::Sealer, index: Arc<dyn hsm::Mac>) -> Result<(Vault, Vec<u8>)> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, raw.as_mut());
        let sealed = sealer.seal(DATA_KEY_AAD, raw.as_ref())?;
        Ok((Vault::from_raw(raw.as_ref(), index)?, sealed))
    }

    /// Opens a stored sealed data key.
    pub fn open(
        sealer: &dyn hsm::Sealer,
        sealed: &[u8],
        index: Arc<dyn hsm::Mac>,
    ) -> Result<Vault> {
        let raw = Zeroizing::new(sealer.open(DATA_KEY_AAD, sealed).map_err(|_| {
            Error::Config(
                "the personal-data key does not open with the HSM's key: wrong token or altered database".into(),
            )
        })?);
        Vault::from_raw(&raw, index)
    }

    fn from_raw(raw: &[u8], index: Arc<dyn hsm::Mac>) -> Result<Vault> {
        let key = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| Error::Config("the personal-data key is not 32 bytes".into()))?;
        Ok(Vault {
            key: LessSafeKey::new(key),
            index,
        })
    }

    fn aad(field: Field, owner: &str) -> Vec<u8> {
        format!("ecert/pii/v{VERSION}/{}/{owner}", field.name()).into_bytes()
    }

    /// Seals `plaintext` as `field` of the record `owner` (e.g. an application id):
    /// version ‖ nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, field: Field, owner: &str, plaintext: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(field, owner)),
                &mut buf,
            )
            .map_err(|_| Error::Encoding("sealing a personal field failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`Vault::seal`] made for the same field and owner.
    pub fn open_field(
        &self,
        field: Field,
        owner: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>> {
        let bad = || Error::Encoding(format!("a sealed {} field does not open", field.name()));
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(bad());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| bad())?;
        let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(field, owner)), buf.as_mut())
            .map_err(|_| bad())?;
        let text = std::str::from_utf8(plain).map_err(|_| bad())?;
        Ok(Zeroizing::new(text.to_string()))
    }

    /// The blind index of a normalised value (HMAC-SHA-256 in the HSM).
    pub fn blind_index(&self, field: Field, normalised: &str) -> Result<[u8; 32]> {
        let mut msg = Zeroizing::new(format!("ecert/bi/v1/{}/", field.name()).into_bytes());
        msg.extend_from_slice(normalised.as_bytes());
        Ok(self.index.mac(&msg)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm::software::{SoftwareMac, SoftwareSealer};

    fn vault() -> (Vault, Vec<u8>, SoftwareSealer, Arc<dyn hsm::Mac>) {
        let sealer = SoftwareSealer::generate();
        let mac: Arc<dyn hsm::Mac> = Arc::new(SoftwareMac::generate());
        let (v, sealed) = Vault::create(&sealer, mac.clone()).unwrap();
        (v, sealed, sealer, mac)
    }

    #[test]
    fn fields_round_trip_and_are_bound_to_field_and_owner() {
        let (v, sealed_key, sealer, mac) = vault();
        let ct = v.seal(Field::Hkid, "app-1", "A1234563").unwrap();
        assert!(!ct.windows(8).any(|w| w == b"A1234563"));
        assert_eq!(
            &*v.open_field(Field::Hkid, "app-1", &ct).unwrap(),
            "A1234563"
        );
        assert!(
            v.open_field(Field::Hkid, "app-2", &ct).is_err(),
            "moved to another row"
        );
        assert!(
            v.open_field(Field::Phone, "app-1", &ct).is_err(),
            "moved to another column"
        );
        let mut t = ct.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(v.open_field(Field::Hkid, "app-1", &t).is_err());
        assert!(v.open_field(Field::Hkid, "app-1", &ct[..10]).is_err());
        // The same data key opens again from its sealed form...
        let again = Vault::open(&sealer, &sealed_key, mac.clone()).unwrap();
        assert_eq!(
            &*again.open_field(Field::Hkid, "app-1", &ct).unwrap(),
            "A1234563"
        );
        // ... and not under another HSM key.
        let e = Vault::open(&SoftwareSealer::generate(), &sealed_key, mac).unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        // Errors never carry the value.
        let e = v
            .open_field(Field::Hkid, "app-2", &ct)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("A1234563"), "{e}");
    }

    #[test]
    fn blind_index_is_deterministic_and_separated_by_field() {
        let (v, ..) = vault();
        let a = v.blind_index(Field::Hkid, "A1234563").unwrap();
        assert_eq!(a, v.blind_index(Field::Hkid, "A1234563").unwrap());
        assert_ne!(a, v.blind_index(Field::Hkid, "A1234564").unwrap());
        assert_ne!(a, v.blind_index(Field::Phone, "A1234563").unwrap());
        let (other, ..) = vault();
        assert_ne!(
            a,
            other.blind_index(Field::Hkid, "A1234563").unwrap(),
            "keyed"
        );
    }
}
