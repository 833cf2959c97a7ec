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
//! - **Custody** (issue 14; DESIGN.md "Custody and roles"). Two vaults of this kind exist, with
//!   separate data keys sealed by keys in separate tokens: the *personal-data* vault
//!   ([`Purpose::PersonalData`]: citizens' fields; its seal and index keys in the `pii` token,
//!   whose PIN the data owner holds) and the *staff-auth* vault ([`Purpose::StaffAuth`]: staff
//!   TOTP secrets and problem reports, sealed by `ecert-staff-auth` in the `ca` token, so
//!   sign-in, revocation and the 24×7 problem-report duty of TLS BR §4.9.3 never wait for the
//!   data owner). A field sealed by one vault is refused by the other by name.
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
/// HSM label of the AES key (in the `ca` token) that seals the staff-auth data key.
pub const STAFF_AUTH_KEY_LABEL: &str = "ecert-staff-auth";
/// `meta` key of the personal-data key sealed by the single token of data directories made
/// before the `pii` token existed (read only by the custody migration).
pub const LEGACY_DATA_KEY_META: &str = "pii_data_key_v1";
/// `meta` key holding the personal-data key sealed by the `pii` token's seal key (hex).
pub const DATA_KEY_META: &str = "pii_data_key_v2";
/// `meta` key holding the staff-auth data key sealed by [`STAFF_AUTH_KEY_LABEL`] (hex).
pub const STAFF_KEY_META: &str = "staff_auth_key_v1";
const DATA_KEY_AAD: &[u8] = b"ecert/pii/data-key/v1";
const STAFF_KEY_AAD: &[u8] = b"ecert/staff-auth/data-key/v1";
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

/// Which vault a field belongs to (see the module's "Custody").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Citizens' personal data: the `pii` token's keys, in the data owner's custody.
    PersonalData,
    /// What staff sign-in and the 24×7 duties need: the `ca` token's staff-auth key.
    StaffAuth,
}

impl Purpose {
    fn data_key_aad(self) -> &'static [u8] {
        match self {
            Purpose::PersonalData => DATA_KEY_AAD,
            Purpose::StaffAuth => STAFF_KEY_AAD,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Purpose::PersonalData => "pii",
            Purpose::StaffAuth => "staff",
        }
    }
}

impl Field {
    /// The vault that seals this field.
    pub fn purpose(self) -> Purpose {
        match self {
            Field::Hkid | Field::DateOfBirth | Field::Phone | Field::Address => {
                Purpose::PersonalData
            }
            Field::TotpSecret | Field::Reporter | Field::ReportText => Purpose::StaffAuth,
        }
    }

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

/// The data key in memory plus, for personal data, the HSM's index key.
pub struct Vault {
    purpose: Purpose,
    key: LessSafeKey,
    index: Option<Arc<dyn hsm::Mac>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    /// Makes a new random data key; returns the vault and the data key sealed by `sealer`, to
    /// be stored. `index` is the blind-index key (personal data only).
    pub fn create(
        purpose: Purpose,
        sealer: &dyn hsm::Sealer,
        index: Option<Arc<dyn hsm::Mac>>,
    ) -> Result<(Vault, Vec<u8>)> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, raw.as_mut());
        let sealed = sealer.seal(purpose.data_key_aad(), raw.as_ref())?;
        Ok((Vault::from_raw(purpose, raw.as_ref(), index)?, sealed))
    }

    /// Opens a stored sealed data key.
    pub fn open(
        purpose: Purpose,
        sealer: &dyn hsm::Sealer,
        sealed: &[u8],
        index: Option<Arc<dyn hsm::Mac>>,
    ) -> Result<Vault> {
        let raw = Zeroizing::new(Self::unseal_raw(purpose, sealer, sealed)?);
        Vault::from_raw(purpose, &raw, index)
    }

    /// The raw data key of a sealed one (the custody migration reads the old key with it).
    pub(crate) fn unseal_raw(
        purpose: Purpose,
        sealer: &dyn hsm::Sealer,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        sealer.open(purpose.data_key_aad(), sealed).map_err(|_| {
            Error::Config(format!(
                "the {} data key does not open with the HSM's key: wrong token or altered database",
                purpose.prefix()
            ))
        })
    }

    pub(crate) fn from_raw(
        purpose: Purpose,
        raw: &[u8],
        index: Option<Arc<dyn hsm::Mac>>,
    ) -> Result<Vault> {
        let key = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| Error::Config("the data key is not 32 bytes".into()))?;
        Ok(Vault {
            purpose,
            key: LessSafeKey::new(key),
            index,
        })
    }

    /// What this vault seals.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Refuses a field of the other vault (a programming error, named; never a value).
    fn check(&self, field: Field) -> Result<()> {
        if field.purpose() == self.purpose {
            Ok(())
        } else {
            Err(Error::Encoding(format!(
                "the {} field belongs to the {:?} keys, not the {:?} keys",
                field.name(),
                field.purpose(),
                self.purpose
            )))
        }
    }

    fn aad(&self, field: Field, owner: &str) -> Vec<u8> {
        // Data sealed before the staff-auth vault existed used the "pii" prefix for every
        // field; [`Vault::open_legacy_field`] reads it for the migration.
        format!(
            "ecert/{}/v{VERSION}/{}/{owner}",
            self.purpose.prefix(),
            field.name()
        )
        .into_bytes()
    }

    /// Seals `plaintext` as `field` of the record `owner` (e.g. an application id):
    /// version ‖ nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, field: Field, owner: &str, plaintext: &str) -> Result<Vec<u8>> {
        self.check(field)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(field, owner)),
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
        self.check(field)?;
        self.open_with_aad(field, self.aad(field, owner), sealed)
    }

    /// Opens a field of any kind sealed by the one personal-data key of a data directory made
    /// before custody was separated (the custody migration reads TOTP secrets and problem
    /// reports this way, to seal them again under the staff-auth key).
    pub(crate) fn open_legacy_field(
        &self,
        field: Field,
        owner: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>> {
        let aad = format!("ecert/pii/v{VERSION}/{}/{owner}", field.name()).into_bytes();
        self.open_with_aad(field, aad, sealed)
    }

    fn open_with_aad(
        &self,
        field: Field,
        aad: Vec<u8>,
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
            .open_in_place(nonce, Aad::from(aad), buf.as_mut())
            .map_err(|_| bad())?;
        let text = std::str::from_utf8(plain).map_err(|_| bad())?;
        Ok(Zeroizing::new(text.to_string()))
    }

    /// The blind index of a normalised value (HMAC-SHA-256 in the HSM).
    pub fn blind_index(&self, field: Field, normalised: &str) -> Result<[u8; 32]> {
        self.check(field)?;
        let index = self.index.as_ref().ok_or_else(|| {
            Error::Encoding(format!("no blind-index key for the {} field", field.name()))
        })?;
        let mut msg = Zeroizing::new(format!("ecert/bi/v1/{}/", field.name()).into_bytes());
        msg.extend_from_slice(normalised.as_bytes());
        Ok(index.mac(&msg)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm::software::{SoftwareMac, SoftwareSealer};

    fn vault() -> (Vault, Vec<u8>, SoftwareSealer, Arc<dyn hsm::Mac>) {
        let sealer = SoftwareSealer::generate();
        let mac: Arc<dyn hsm::Mac> = Arc::new(SoftwareMac::generate());
        let (v, sealed) = Vault::create(Purpose::PersonalData, &sealer, Some(mac.clone())).unwrap();
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
        let again = Vault::open(
            Purpose::PersonalData,
            &sealer,
            &sealed_key,
            Some(mac.clone()),
        )
        .unwrap();
        assert_eq!(
            &*again.open_field(Field::Hkid, "app-1", &ct).unwrap(),
            "A1234563"
        );
        // ... and not under another HSM key.
        let e = Vault::open(
            Purpose::PersonalData,
            &SoftwareSealer::generate(),
            &sealed_key,
            Some(mac),
        )
        .unwrap_err();
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

    /// Issue 14 (custody): the personal-data vault and the staff-auth vault refuse each
    /// other's fields, their data keys do not open as each other's, and a legacy field (sealed
    /// by the one personal-data key before custody was separated) is readable only by the
    /// migration's path.
    #[test]
    fn the_two_vaults_keep_to_their_fields() {
        let (pii, ..) = vault();
        let sealer = SoftwareSealer::generate();
        let (staff, sealed) = Vault::create(Purpose::StaffAuth, &sealer, None).unwrap();
        let e = staff
            .seal(Field::Hkid, "a", "A1234563")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hkid") && !e.contains("A1234563"), "{e}");
        assert!(pii.seal(Field::TotpSecret, "s", "JBSWY3DP").is_err());
        assert!(staff.blind_index(Field::Hkid, "A1234563").is_err());
        assert!(
            staff.blind_index(Field::TotpSecret, "x").is_err(),
            "no index key"
        );
        // The staff data key does not open as a personal-data key under the same HSM key.
        assert!(Vault::open(Purpose::PersonalData, &sealer, &sealed, None).is_err());
        let t = staff.seal(Field::TotpSecret, "s", "JBSWY3DP").unwrap();
        assert_eq!(
            &*staff.open_field(Field::TotpSecret, "s", &t).unwrap(),
            "JBSWY3DP"
        );
        // A legacy TOTP secret: sealed with the personal-data key and the "pii" prefix.
        let raw = [7u8; 32];
        let legacy = Vault::from_raw(Purpose::StaffAuth, &raw, None).unwrap();
        let mut old = legacy.seal(Field::TotpSecret, "s", "JBSWY3DP").unwrap();
        assert!(legacy
            .open_legacy_field(Field::TotpSecret, "s", &old)
            .is_err());
        let pii_raw = Vault::from_raw(Purpose::PersonalData, &raw, None).unwrap();
        old = {
            // What the code before custody wrote: the pii prefix for every field.
            let mut nonce = [0u8; NONCE_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            let mut buf = b"JBSWY3DP".to_vec();
            pii_raw
                .key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(b"ecert/pii/v1/totp/s".to_vec()),
                    &mut buf,
                )
                .unwrap();
            [vec![VERSION], nonce.to_vec(), buf].concat()
        };
        assert_eq!(
            &*pii_raw
                .open_legacy_field(Field::TotpSecret, "s", &old)
                .unwrap(),
            "JBSWY3DP"
        );
        assert!(pii_raw.open_field(Field::TotpSecret, "s", &old).is_err());
    }
}
