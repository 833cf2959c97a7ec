//! Time-based one-time passwords for staff sign-in (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1,
//! 30-second steps, 6 digits, one step of clock drift either way, and no code accepted twice.
//! The shared secret is 160 random bits (RFC 4226 §4 R6), shown once as base32 (RFC 4648) for
//! the authenticator app and stored sealed ([`crate::pii::Field::TotpSecret`]).

use ring::hmac;

/// Seconds per step (RFC 6238 §4.1 X).
pub const STEP: i64 = 30;
const DIGITS: u32 = 6;

/// A fresh random secret.
pub fn new_secret() -> [u8; 20] {
    let mut s = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s
}

/// The secret as an authenticator app takes it (base32, no padding).
pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI authenticator apps scan.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(account),
        secret_base32(secret),
        enc(issuer)
    )
}

/// HOTP value (RFC 4226 §5.3) with `digits` digits.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let h = mac.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let code = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    code % 10u32.pow(digits)
}

/// The code for the step containing `unix_time`, zero-padded.
pub fn code_at(secret: &[u8], unix_time: i64) -> String {
    format!("{:06}", hotp(secret, (unix_time / STEP) as u64, DIGITS))
}

/// Checks `code` at `now` against steps now−1, now and now+1, refusing any step at or before
/// `last_step` (the last accepted one: a code is good once). Returns the step it matched.
pub fn verify(secret: &[u8], code: &str, now: i64, last_step: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP;
    (current - 1..=current + 1)
        .filter(|step| *step > last_step && *step >= 0)
        .find(|step| {
            let expected = format!("{:06}", hotp(secret, *step as u64, DIGITS));
            bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                code.as_bytes(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits), and RFC 4226 Appendix D (6 digits).
    #[test]
    fn rfc_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(secret, (t / STEP) as u64, 8), want, "T={t}");
        }
        let hotp6 = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (i, want) in hotp6.iter().enumerate() {
            assert_eq!(hotp(secret, i as u64, 6), *want, "counter {i}");
        }
        assert_eq!(code_at(secret, 59), "287082");
    }

    #[test]
    fn window_and_replay() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let c = code_at(&secret, now);
        let step = verify(&secret, &c, now, 0).unwrap();
        assert_eq!(step, now / STEP);
        assert_eq!(verify(&secret, &c, now, step), None, "replayed");
        assert!(verify(&secret, &code_at(&secret, now - STEP), now, 0).is_some());
        assert!(verify(&secret, &code_at(&secret, now + STEP), now, 0).is_some());
        assert_eq!(
            verify(&secret, &code_at(&secret, now - 3 * STEP), now, 0),
            None
        );
        assert_eq!(verify(&secret, "12345", now, 0), None);
        assert_eq!(verify(&secret, "abcdef", now, 0), None);
        assert!(otpauth_uri("ecert HK", "clerk@outlet", &secret)
            .starts_with("otpauth://totp/ecert%20HK:clerk%40outlet?secret="));
    }
}
