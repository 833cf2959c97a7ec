//! Hong Kong identity card numbers (HKID): parsed, check digit verified, never shown.
//!
//! Format after normalisation (upper case; spaces and parentheses removed):
//! `[A-Z]{1,2}[0-9]{6}[0-9A]`. The check character is computed as the independent
//! implementations agree (../shared/reference/README.md §4): the body (prefix letters plus six
//! digits) is left-padded with a space to 8 characters; space = 36, `A`..`Z` = 10..35,
//! digits = 0..9; weights 9..2; `r = S mod 11`; check = `(11 − r) mod 11`, 10 written `A`.
//!
//! The check digit only catches typing mistakes. It does not show that a card exists or belongs
//! to the applicant: the counter clerk compares the number with the original card (PDPO Code of
//! Practice on the Identity Card Number para 2.4.3).
//!
//! An [`Hkid`] never prints its number: `Debug` and `Display` show a mask, and parse errors name
//! what is wrong without echoing the input, so the number cannot leak into logs or error pages.

use std::fmt;

use zeroize::Zeroize;

/// Why a typed HKID was refused. No variant carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HkidError {
    /// Not one or two letters, six digits and a check character.
    #[error("an HKID number is one or two letters, six digits and a check digit in brackets, as printed on the card")]
    Format,
    /// The check digit does not match the rest: most likely a typing mistake.
    #[error("the check digit does not match the HKID number: please check it against the card")]
    CheckDigit,
}

/// A syntactically valid HKID number in normal form (`A1234563`, `AB1234569`).
#[derive(Clone, PartialEq, Eq)]
pub struct Hkid(String);

impl Hkid {
    /// Parses a typed HKID: case, spaces and the parentheses around the check character are
    /// forgiven; anything else is a [`HkidError::Format`]; a wrong check character is a
    /// [`HkidError::CheckDigit`].
    pub fn parse(input: &str) -> Result<Hkid, HkidError> {
        if input.len() > 32 {
            return Err(HkidError::Format);
        }
        let mut s: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        // One optional pair of parentheses, around the last character only.
        if s.ends_with(')') {
            let n = s.len();
            if n < 3 || s.as_bytes()[n - 3] != b'(' {
                s.zeroize();
                return Err(HkidError::Format);
            }
            let check = s.as_bytes()[n - 2] as char;
            s.truncate(n - 3);
            s.push(check);
        }
        let b = s.as_bytes();
        let letters = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
        let well_formed = (1..=2).contains(&letters)
            && b.len() == letters + 7
            && b[letters..letters + 6].iter().all(u8::is_ascii_digit)
            && (b[letters + 6].is_ascii_digit() || b[letters + 6] == b'A');
        if !well_formed {
            s.zeroize();
            return Err(HkidError::Format);
        }
        if check_char(&b[..letters + 6]) != b[letters + 6] {
            s.zeroize();
            return Err(HkidError::CheckDigit);
        }
        Ok(Hkid(s))
    }

    /// The normal form, for encryption and the blind index only. Never log or display it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown on screens: the first letter(s) and the check character only, e.g.
    /// `A******(3)`.
    pub fn masked(&self) -> String {
        let b = self.0.as_bytes();
        let letters = b.len() - 7;
        format!(
            "{}{}({})",
            &self.0[..letters],
            "*".repeat(6),
            b[b.len() - 1] as char
        )
    }
}

impl Drop for Hkid {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Hkid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hkid({})", self.masked())
    }
}

impl fmt::Display for Hkid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The check character of a body of 1–2 upper-case letters and six digits.
fn check_char(body: &[u8]) -> u8 {
    let value = |c: u8| -> u32 {
        match c {
            b' ' => 36,
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => u32::from(c - b'0'),
        }
    };
    let padded = std::iter::repeat_n(b' ', 8 - body.len()).chain(body.iter().copied());
    let sum: u32 = padded.zip((2..=9).rev()).map(|(c, w)| value(c) * w).sum();
    match (11 - sum % 11) % 11 {
        10 => b'A',
        d => b'0' + d as u8,
    }
}

/// Makes a synthetic HKID with a valid check digit from a prefix and six digits (test fixtures
/// and demo data; never a real person's number on purpose, but syntactically a real one could
/// coincide, so fixtures are never logged as real).
pub fn synthetic(prefix: &str, digits: u32) -> Hkid {
    let body = format!("{prefix}{:06}", digits % 1_000_000);
    let check = check_char(body.as_bytes()) as char;
    Hkid(format!("{body}{check}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of ../shared/reference/README.md §4.
    #[test]
    fn worked_examples() {
        for (typed, normal) in [
            ("A123456(3)", "A1234563"),
            ("AB123456(9)", "AB1234569"),
            ("G123456(A)", "G123456A"),
            ("g123456(a)", "G123456A"),
            ("K000000(0)", "K0000000"),
            ("CA182361(1)", "CA1823611"),
            ("C123456(9)", "C1234569"),
            (" a 123 456 (3) ", "A1234563"),
            ("A1234563", "A1234563"),
        ] {
            assert_eq!(
                Hkid::parse(typed).map(|h| h.expose().to_string()),
                Ok(normal.into()),
                "{typed}"
            );
        }
    }

    #[test]
    fn refusals_name_the_problem_without_the_number() {
        for (typed, want) in [
            ("A123456(4)", HkidError::CheckDigit),
            ("K000000(B)", HkidError::Format),
            ("A12345(3)", HkidError::Format),
            ("ABC123456(0)", HkidError::Format),
            ("123456(3)", HkidError::Format),
            ("A123456((3)", HkidError::Format),
            ("A123456(3", HkidError::Format),
            ("A123456)3(", HkidError::Format),
            ("A1234567(3)", HkidError::Format),
            ("", HkidError::Format),
            ("Ａ123456(3)", HkidError::Format),
            (
                "A123456(3)A123456(3)A123456(3)A123456(3)",
                HkidError::Format,
            ),
        ] {
            let e = Hkid::parse(typed).unwrap_err();
            assert_eq!(e, want, "{typed}");
            let text = e.to_string();
            assert!(!text.contains("123456"), "{text}");
        }
    }

    #[test]
    fn never_printed() {
        let h = Hkid::parse("AB123456(9)").unwrap();
        assert_eq!(h.masked(), "AB******(9)");
        assert_eq!(format!("{h}"), "AB******(9)");
        assert!(!format!("{h:?}").contains("123456"));
    }

    #[test]
    fn synthetic_numbers_parse() {
        for i in 0..2000 {
            let h = synthetic(if i % 2 == 0 { "Z" } else { "XA" }, i * 7919);
            assert_eq!(Hkid::parse(h.expose()).as_ref(), Ok(&h));
        }
    }

    /// Every one-character change of a valid number is caught (the point of a check digit).
    #[test]
    fn single_typos_are_caught() {
        let h = synthetic("P", 271_828);
        let s = h.expose().to_string();
        for i in 1..s.len() - 1 {
            for d in b'0'..=b'9' {
                if s.as_bytes()[i] == d {
                    continue;
                }
                let mut t = s.clone().into_bytes();
                t[i] = d;
                let t = String::from_utf8(t).unwrap();
                assert_eq!(Hkid::parse(&t), Err(HkidError::CheckDigit), "{i}");
            }
        }
    }

    /// A stand-in for fuzzing on stable Rust: 50,000 seeded strings from the characters an
    /// HKID is typed with (and some others, multi-byte included) — never a panic, and anything
    /// accepted has a correct check digit and prints back masked without its digits.
    #[test]
    fn random_input_never_panics_and_accepts_only_valid_numbers() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcz0123456789() -_\u{3000}（）陳"
            .chars()
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x686b_6964);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let s: String = if rng.gen_bool(0.5) {
                let len = rng.gen_range(0..14);
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            } else {
                // Well-shaped: one or two letters, six digits, a check character that is right
                // about one time in eleven, as typed (with or without brackets and spaces).
                let letters: String = (0..rng.gen_range(1..=2))
                    .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
                    .collect();
                let digits: String = (0..6)
                    .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                    .collect();
                let check = "0123456789A".chars().nth(rng.gen_range(0..11)).unwrap();
                match rng.gen_range(0..3) {
                    0 => format!("{letters}{digits}({check})"),
                    1 => format!("{} {digits} {check}", letters.to_lowercase()),
                    _ => format!("{letters}{digits}{check}"),
                }
            };
            if let Ok(h) = Hkid::parse(&s) {
                accepted += 1;
                let n = h.expose();
                let (body, check) = n.split_at(n.len() - 1);
                assert_eq!(
                    check_char(body.as_bytes()) as char,
                    check.chars().next().unwrap(),
                    "{s:?}"
                );
                assert!(!h.masked().contains(&body[body.len() - 6..]), "{s:?}");
            }
        }
        // About one in eleven of the well-shaped ones is a valid number.
        assert!((1_000..4_000).contains(&accepted), "{accepted}");
    }
}
