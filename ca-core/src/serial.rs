//! Certificate serial numbers.

use rand::RngCore;

/// A certificate serial number: 128 bits straight from the OS CSPRNG.
///
/// BR §7.1.2.x requires "a non-sequential number greater than zero (0) and less than 2^159
/// containing at least 64 bits of output from a CSPRNG"; RFC 5280 §4.1.2.2 requires a positive
/// INTEGER of at most 20 octets. 128 random bits fit in 17 DER octets (a leading zero when the top
/// bit is set keeps it positive); no bit is forced.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialNumber([u8; 16]);

impl SerialNumber {
    /// Draws a fresh serial from the OS random generator. Zero (probability 2^-128) is redrawn.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        loop {
            rand::rngs::OsRng.fill_bytes(&mut b);
            if b.iter().any(|x| *x != 0) {
                return SerialNumber(b);
            }
        }
    }

    /// Parses the lowercase or uppercase hex form (as `openssl x509 -serial` prints it, with or
    /// without a leading zero octet and colons).
    pub fn from_hex(s: &str) -> Option<Self> {
        let cleaned: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(cleaned.trim()).ok()?;
        Self::from_be_bytes(&bytes)
    }

    /// From big-endian magnitude bytes (leading zeros allowed).
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Self> {
        let start = bytes.iter().position(|b| *b != 0)?;
        let mag = &bytes[start..];
        if mag.len() > 16 {
            return None;
        }
        let mut b = [0u8; 16];
        b[16 - mag.len()..].copy_from_slice(mag);
        Some(SerialNumber(b))
    }

    /// The 16 big-endian bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lowercase hex, 32 characters: the form stored and shown.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for SerialNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SerialNumber({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_openssl_forms() {
        let s = SerialNumber::random();
        assert_eq!(SerialNumber::from_hex(&s.to_hex()), Some(s));
        // openssl prints a leading 00 when the top bit is set, uppercase.
        let with_zero = format!("00{}", s.to_hex().to_uppercase());
        assert_eq!(SerialNumber::from_hex(&with_zero), Some(s));
        assert_eq!(SerialNumber::from_hex("00"), None);
        assert_eq!(SerialNumber::from_hex(&"ff".repeat(17)), None);
    }

    /// Reference checklist #7: no forced bits. Over 20,000 serials every bit position is set
    /// about half the time (a forced bit would be at 0 % or 100 %).
    #[test]
    fn every_bit_is_random() {
        let n = 20_000;
        let mut counts = [0u32; 128];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            let s = SerialNumber::random();
            assert!(seen.insert(s), "duplicate serial");
            for (i, c) in counts.iter_mut().enumerate() {
                if s.0[i / 8] >> (7 - i % 8) & 1 == 1 {
                    *c += 1;
                }
            }
        }
        for (i, c) in counts.iter().enumerate() {
            let f = f64::from(*c) / f64::from(n);
            assert!((0.46..0.54).contains(&f), "bit {i} set with frequency {f}");
        }
    }
}
